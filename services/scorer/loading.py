"""Resolves the scorer package the service serves (settings `scorer.model`): a registered
package (`models:/NAME@ALIAS|/VERSION`) or a local directory, each holding `scorer.json`,
which names the encoder to score with and the calibration of P(aligned)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from concord.checkpoints import LoadedModel, load_model
from concord.errors import FailedPrecondition
from concord.models.alignment import (
    CLIP_WEIGHT,
    DEFAULT_LAYERS,
    DEFAULT_PENALTY,
    DEFAULT_THRESHOLD,
    AlignmentScorer,
    PairScores,
    aligned_probability,
)
from concord.registry import Registry, is_registry_uri, resolve_model
from concord.wire import ModelId

SCORER_FILE = "scorer.json"
REQUIRED_KEYS = ("encoder", "calibration")


@dataclass(frozen=True)
class LoadedScorer:
    """A scorer ready to serve and what to call it in responses."""

    scorer: AlignmentScorer
    encoder: LoadedModel
    calibration: Mapping[str, Any]
    id: ModelId  # the scorer package (concord-scorer / 2, or <dir> / local-<hash>)
    uri: str  # what the settings asked for
    threshold: float  # the package's CLIP4DM epsilon (the service default comes from settings)

    @property
    def image_size(self) -> int:
        return self.encoder.image_size


def read_package(directory: Path, uri: str) -> dict[str, Any]:
    """Returns: the package's scorer.json. Raises: FailedPrecondition naming what is missing."""
    path = directory / SCORER_FILE
    if not path.is_file():
        raise FailedPrecondition(
            f"scorer model {uri!r} is not a scorer package (needs {SCORER_FILE})"
        )
    try:
        package = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise FailedPrecondition(
            f"scorer model {uri!r}: {SCORER_FILE} is not JSON ({err})"
        ) from err
    if not isinstance(package, dict):
        raise FailedPrecondition(f"scorer model {uri!r}: {SCORER_FILE} is not a JSON object")
    missing = [k for k in REQUIRED_KEYS if not package.get(k)]
    if missing:
        raise FailedPrecondition(
            f"scorer model {uri!r}: {SCORER_FILE} has no {' or '.join(repr(k) for k in missing)}"
        )
    try:  # fail at load, not on the first request
        aligned_probability(PairScores(1.0, None, 0.5, 1.0), package["calibration"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise FailedPrecondition(
            f"scorer model {uri!r}: calibration in {SCORER_FILE} is unusable ({err!r})"
        ) from err
    return package


def encoder_uri(package: Mapping[str, Any], directory: Path) -> str:
    """The encoder the package names; a relative local path is relative to the package."""
    uri = str(package["encoder"])
    if is_registry_uri(uri) or Path(uri).expanduser().is_absolute():
        return uri
    return str(directory / uri)


def load_scorer(
    uri: str, registry: Callable[[], Registry], device: torch.device | None = None
) -> LoadedScorer:
    """Load the scorer package named by `uri` and the encoder it scores with.

    Args:
        uri: `models:/NAME@ALIAS`, `models:/NAME/VERSION`, or a local package directory.
        registry: returns the platform registry (called only for registry URIs).
        device: where the encoder runs (None: where it was loaded, the CPU).
    Returns:
        The scorer. A registered package is called by its registered name and version; a local
        directory by its name and `local-<8 hex of scorer.json's sha256>`.
    Raises:
        FailedPrecondition: the package or its encoder does not exist or is incomplete.
    """

    def package_file(directory: Path) -> tuple[Path]:  # a local package is named by its file
        if not directory.is_dir():
            raise FailedPrecondition(f"scorer model {uri!r} is not a directory")
        read_package(directory, uri)
        return (directory / SCORER_FILE,)

    model_id, directory = resolve_model(uri, registry, kind="scorer", files=package_file)
    package = read_package(directory, uri)
    encoder = load_model(encoder_uri(package, directory), registry)
    if device is not None:
        encoder.torch_model().to(device)  # in place, before the scorer hooks into it
    scorer = AlignmentScorer(
        encoder.torch_model(),
        encoder.tokenizer,
        weight=float(package.get("weight", CLIP_WEIGHT)),
        layers=int(package.get("layers", DEFAULT_LAYERS)),
        template=str(package.get("template", "")),
        penalty=float(package.get("penalty", DEFAULT_PENALTY)),
        f_threshold=(
            float(package["f_threshold"]) if package.get("f_threshold") is not None else None
        ),
    )
    threshold = float(package.get("threshold", DEFAULT_THRESHOLD))
    return LoadedScorer(scorer, encoder, package["calibration"], model_id, uri, threshold)
