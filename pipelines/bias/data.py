"""ShapeNews splits in memory: texts, pixels, vote and gold labels, cue annotations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from concord.models.preprocess import images_to_tensor
from pipelines.data.store import read_jsonl


@dataclass(frozen=True)
class BiasSplit:
    name: str
    records: list[dict[str, Any]]
    texts: list[str]
    pixels: Tensor  # (N, 3, S, S) float in [0, 1]
    labels: Tensor  # (N,) long: the annotators' majority vote (what training sees)
    gold: Tensor  # (N,) long: the simulation's truth (the gold of gold-checked items)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def cues(self) -> np.ndarray:
        """Per item: "none" | "text" | "image" | "both"."""
        return np.asarray([r["cue"] for r in self.records])

    def subset(self, index: np.ndarray | list[int]) -> BiasSplit:
        idx = list(map(int, index))
        return BiasSplit(
            self.name,
            [self.records[i] for i in idx],
            [self.texts[i] for i in idx],
            self.pixels[idx],
            self.labels[idx],
            self.gold[idx],
        )


def load_split(root: Path, split: str, image_size: int, limit: int = 0) -> BiasSplit:
    """Read `<root>/<split>.jsonl` and its images (resized to `image_size`)."""
    root = Path(root)
    records = read_jsonl(root / f"{split}.jsonl")
    if limit:
        records = records[:limit]
    images = []
    for r in records:
        with Image.open(root / r["image"]) as im:
            images.append(im.convert("RGB"))
    pixels = images_to_tensor(images, image_size) if images else torch.zeros(0, 3, image_size, image_size)
    return BiasSplit(
        split,
        records,
        [r["caption"] for r in records],
        pixels,
        torch.tensor([int(r["label"]) for r in records], dtype=torch.long),
        torch.tensor([int(r["true_label"]) for r in records], dtype=torch.long),
    )


def ensure_bias_data(out: Path, size: str, seed: int, image_size: int = 64) -> Path:
    """`out` if it holds ShapeNews of this seed, else build it (preset `size`)."""
    from pipelines.encoder.data import ensure_dataset

    return ensure_dataset("bias", out, size, seed, image_size)
