"""The misalignment set as scorer pairs: every caption (aligned) and each of its one-word-false
variants (misaligned, with the changed characters), all pointing at their image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipelines.data.store import read_jsonl
from pipelines.encoder.data import _check, load_pixels

KINDS = ("attribute", "object", "relation", "count")


@dataclass(frozen=True)
class Pair:
    image: int  # row of `PairSet.pixels`
    text: str
    aligned: bool
    kind: str  # "aligned" or the variant's kind (attribute | object | relation | count)
    spans: tuple[tuple[int, int], ...]  # changed characters of `text` (empty when aligned)
    caption: int  # index of the source caption in the split (shared by it and its variants)


@dataclass(frozen=True)
class PairSet:
    pixels: torch.Tensor  # (N, 3, S, S) float in [0, 1]
    pairs: tuple[Pair, ...]
    image_ids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.pairs)

    def kinds_of(self) -> np.ndarray:
        return np.array([p.kind for p in self.pairs])


def load_pairs(root: Path, split: str, image_size: int, limit: int = 0) -> PairSet:
    """One split of a `misalignment` dataset directory.

    Args:
        root: made by `python -m pipelines.data make misalignment`.
        split: train | val | test.
        limit: keep only the first `limit` images (0: all).
    """
    root = _check(root, "misalignment")
    recs = read_jsonl(root / f"{split}.jsonl")
    if limit > 0:
        recs = recs[:limit]
    pairs: list[Pair] = []
    caption = 0
    for i, r in enumerate(recs):
        for cap in r["captions"]:
            pairs.append(Pair(i, cap["text"], True, "aligned", (), caption))
            for v in cap["variants"]:
                spans = tuple((int(s), int(e)) for s, e in v["spans"])
                pairs.append(Pair(i, v["text"], False, v["kind"], spans, caption))
            caption += 1
    pixels = load_pixels(root, [r["image"] for r in recs], image_size)
    return PairSet(pixels, tuple(pairs), tuple(r["id"] for r in recs))
