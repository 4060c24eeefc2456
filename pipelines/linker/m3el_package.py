"""The linker package the linker service serves (`concord.checkpoints.linker` layout), and the
encoder the pipeline trains when none is given (so the one-command report runs on a fresh
clone)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from concord.checkpoints.linker import write_linker_package
from concord.models.linking import M3EL, M3ELConfig
from concord.registry import Registry, is_registry_uri, resolve_model

MODEL_NAME = "concord-linker"  # registered by pipelines.tracking.TrainingRun
EXPERIMENT = "concord-linker"
CREATED_BY = "pipelines.linker"
DEFAULT_ENCODER = "models:/concord-encoder@production"


def pinned_encoder(uri: str, registry: Registry | None) -> tuple[str, Path]:
    """(what the package records, the local directory): a registry alias is pinned to its
    version (the package names exactly the encoder its features came from); a local directory
    becomes absolute."""
    if is_registry_uri(uri):
        if registry is None:
            raise ValueError(f"encoder {uri} is a registry URI: give --tracking-uri")
        model_id, directory = resolve_model(uri, lambda: registry, kind="encoder")
        return f"models:/{model_id.name}/{model_id.version}", Path(directory)
    directory = Path(uri).expanduser().resolve()
    return str(directory), directory


def train_small_encoder(
    work_dir: Path, seed: int, threads: int, tracking_uri: str | None, epochs: int = 10
) -> str:
    """A tiny-conv encoder trained on Concord Scenes retrieval (small) for `epochs` (a few
    minutes on 2 cores), reused when already in `work_dir`. Registered as `concord-encoder`
    (no alias) when tracking. Returns its URI (pinned version, or the directory)."""
    from pipelines.encoder.data import ensure_dataset
    from pipelines.train_encoder import TrainConfig, train

    out = (Path(work_dir) / f"encoder-tiny-conv-seed{seed}").resolve()
    if (out / "model.safetensors").is_file():
        return str(out)
    root = ensure_dataset(
        "retrieval", Path(".cache/encoder-data") / f"retrieval-small-seed{seed}", "small", seed
    )
    res = train(
        TrainConfig(
            preset="tiny-conv",
            data=root,
            seed=seed,
            loss="both",
            epochs=epochs,
            batch_size=64,
            lr=2e-3,
            out=out,
            tracking_uri=tracking_uri,
            register=tracking_uri is not None,
            run_name="linker-encoder",
            progress=False,
            threads=threads,
            device="cpu",
        )
    )
    return f"models:/concord-encoder/{res.version}" if res.version else str(out)


def write_package(
    directory: Path,
    model: M3EL,
    config: M3ELConfig,
    encoder: str,
    *,
    copy_encoder: Path | None = None,
    metrics: Mapping[str, float] | None = None,
    data_seed: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the package (linker.json + m3el.pt [+ encoder/]) with its provenance."""
    return write_linker_package(
        directory,
        model,
        config,
        encoder,
        copy_encoder=copy_encoder,
        extra={
            **dict(extra or {}),
            # NaN (an empty breakdown) is not JSON: recorded as null
            "metrics": {k: (v if math.isfinite(v) else None) for k, v in (metrics or {}).items()},
            "data_seed": int(data_seed),
            "created_by": CREATED_BY,
        },
    )
