"""The named datasets `concord data make NAME` builds, each one module behind `DatasetSpec`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.data.sheet import SheetRow
from pipelines.data.store import Manifest


@dataclass(frozen=True)
class BuildArgs:
    out: Path
    seed: int
    counts: dict[str, int]  # items per split (or per unit: concepts, entities, ...)
    image_size: int = 64
    workers: int = 1
    options: dict[str, float] | None = None  # set-specific knobs, e.g. missing_rate
    overwrite: bool = False

    def option(self, key: str, default: float) -> float:
        return float((self.options or {}).get(key, default))


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    version: str
    description: str
    presets: dict[str, dict[str, int]]  # tiny | small | default | large -> counts
    build: Callable[[BuildArgs], Manifest]
    sheet: Callable[[Path, int], list[SheetRow]]
    options: dict[str, Any] | None = None  # accepted option keys -> default


def registry() -> dict[str, DatasetSpec]:
    """Every dataset by name (imported lazily so the CLI starts fast)."""
    from pipelines.data.sets import (
        bias,
        binding,
        customization,
        entities,
        kgs,
        misalignment,
        real,
        retrieval,
    )

    specs = [retrieval.SPEC, misalignment.SPEC, binding.SPEC, customization.SPEC, entities.SPEC,
             kgs.SPEC, bias.SPEC, real.DIGITS, real.SKIMAGE]
    return {s.name: s for s in specs}
