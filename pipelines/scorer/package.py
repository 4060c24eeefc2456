"""The scorer package the scorer service serves: a directory with `scorer.json` (the encoder it
scores with, CLIPScore weight, CLIP4DM layers and threshold, the calibration), registered in
MLflow as `concord-scorer` (alias `production`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from concord.models.alignment import (
    CLIP_WEIGHT,
    DEFAULT_LAYERS,
    DEFAULT_PENALTY,
    DEFAULT_THRESHOLD,
)
from concord.registry import Registry
from concord.registry.client import ModelVersionInfo

SCORER_FILE = "scorer.json"
MODEL_NAME = "concord-scorer"
EXPERIMENT = "concord-scorer"
CREATED_BY = "pipelines.scorer"


def write_scorer_package(
    directory: Path,
    encoder_uri: str,
    calibration: Mapping[str, Any],
    *,
    weight: float = CLIP_WEIGHT,
    layers: int = DEFAULT_LAYERS,
    threshold: float = DEFAULT_THRESHOLD,
    penalty: float = DEFAULT_PENALTY,
    f_threshold: float | None = None,
    data_seed: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write `<directory>/scorer.json`.

    Args:
        encoder_uri: `models:/concord-encoder/N` or an absolute local encoder directory.
        calibration: the dict `concord.models.alignment.aligned_probability` reads (required:
            the service refuses a package without one).
        extra: more keys (e.g. the template, measured numbers); never overrides the above.
    Returns:
        The path of scorer.json.
    """
    if not calibration:
        raise ValueError("a scorer package needs a calibration")
    if not encoder_uri.startswith("models:/") and not Path(encoder_uri).is_absolute():
        raise ValueError(f"encoder must be a models:/ URI or an absolute path, got {encoder_uri!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    body = {
        **dict(extra or {}),
        "encoder": encoder_uri,
        "weight": float(weight),
        "layers": int(layers),
        "threshold": float(threshold),
        "penalty": float(penalty),
        # F-CLIPScore's own epsilon; absent: the word threshold
        **({} if f_threshold is None else {"f_threshold": float(f_threshold)}),
        "calibration": dict(calibration),
        "data_seed": int(data_seed),
        "created_by": CREATED_BY,
    }
    path = directory / SCORER_FILE
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return path


def read_scorer_package(directory: Path) -> dict[str, Any]:
    """Returns: the parsed scorer.json of a package directory."""
    return json.loads((Path(directory) / SCORER_FILE).read_text())


def register_scorer_package(
    directory: Path,
    registry: Registry,
    *,
    alias: str | None = "production",
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    run_name: str = "scorer",
) -> ModelVersionInfo:
    """Log the package directory in a run of experiment `concord-scorer`, register it as a new
    version of `concord-scorer` and move `alias` to it.

    Returns:
        The registered version (with the alias when one was given).
    """
    if not (Path(directory) / SCORER_FILE).is_file():
        raise FileNotFoundError(f"{directory} has no {SCORER_FILE}")
    with registry.start_run(
        run_name, experiment=EXPERIMENT, params=params, tags={"concord.kind": "scorer"}
    ) as run:
        if metrics:
            run.log_metrics(metrics)
        path = run.log_model_dir(directory)
        run_id = run.run_id
    info = registry.register_model(MODEL_NAME, run_id, path)
    if alias:
        info = registry.set_alias(MODEL_NAME, alias, info.version)
    return info
