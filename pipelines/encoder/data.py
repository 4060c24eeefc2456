"""Encoder training/eval data: Concord Scenes directories -> pixel tensors and captions, the
binding pairs, the objects of each scene, and text-only grammar captions for XBT."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipelines.data.store import Manifest, read_jsonl
from pipelines.data.vocab import NOVEL_SHAPE


@dataclass(frozen=True)
class ImageTextSet:
    """Images with one or more captions each; caption k of image i is `captions[i][k]`."""

    ids: tuple[str, ...]
    pixels: torch.Tensor  # (N, 3, S, S) float32 in [0, 1]
    captions: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return len(self.ids)

    def flat_captions(self) -> tuple[list[str], np.ndarray]:
        """Every caption once, with the index of its image. Returns: (texts, (T,) image index)."""
        texts = [c for caps in self.captions for c in caps]
        owner = np.repeat(np.arange(len(self.captions)), [len(c) for c in self.captions])
        return texts, owner

    def subset(self, n: int) -> ImageTextSet:
        """The first `n` items (all of them when n <= 0)."""
        if n <= 0 or n >= len(self):
            return self
        return ImageTextSet(self.ids[:n], self.pixels[:n], self.captions[:n])


@dataclass(frozen=True)
class BindingPairs:
    """Pairs of images whose two objects swap an attribute; caption_a describes image a."""

    ids: tuple[str, ...]
    pixels_a: torch.Tensor  # (P, 3, S, S)
    pixels_b: torch.Tensor
    caption_a: tuple[str, ...]
    caption_b: tuple[str, ...]
    swap: tuple[str, ...]  # colour | texture | size

    def __len__(self) -> int:
        return len(self.ids)

    def as_retrieval(self) -> ImageTextSet:
        """All 2P images as one gallery (a then b per pair), each with its one caption."""
        pixels = torch.stack([self.pixels_a, self.pixels_b], dim=1).flatten(0, 1)
        ids = tuple(f"{i}_{s}" for i in self.ids for s in "ab")
        caps = tuple(
            (c,) for pair in zip(self.caption_a, self.caption_b, strict=True) for c in pair
        )
        return ImageTextSet(ids, pixels, caps)


@dataclass(frozen=True)
class SceneObjects:
    """Every object of a split's scenes: which image it is in, its colour and shape, and the
    colour-shape pairs its scene holds (a query must not name another object of the scene)."""

    image: np.ndarray  # (Q,) index into the split's images
    colour: tuple[str, ...]
    shape: tuple[str, ...]
    present: tuple[frozenset[tuple[str, str]], ...]

    def __len__(self) -> int:
        return len(self.image)


def _check(root: Path, name: str) -> Path:
    root = Path(root)
    m = Manifest.load(root)
    if m.name != name:
        raise ValueError(f"{root} holds dataset {m.name!r}, expected {name!r}")
    return root


def load_pixels(root: Path, rels: Sequence[str], image_size: int) -> torch.Tensor:
    """Decode PNGs (relative to `root`) into a (N, 3, S, S) float tensor in [0, 1].

    Uses `concord.models.preprocess.images_to_tensor`, the same preprocessing the service runs.
    """
    from concord.models.preprocess import images_to_tensor

    images = []
    for rel in rels:
        with Image.open(Path(root) / rel) as im:
            images.append(im.convert("RGB"))
    if not images:
        return torch.zeros(0, 3, image_size, image_size)
    return images_to_tensor(images, image_size)


def load_retrieval(root: Path, split: str, image_size: int, limit: int = 0) -> ImageTextSet:
    """One split of a `retrieval` dataset directory.

    Args:
        root: made by `python -m pipelines.data make retrieval`.
        split: train | val | test | test_compositional.
        image_size: side the model expects.
        limit: keep only the first `limit` items (0: all).
    """
    root = _check(root, "retrieval")
    recs = read_jsonl(root / f"{split}.jsonl")
    if limit > 0:
        recs = recs[:limit]
    return ImageTextSet(
        tuple(r["id"] for r in recs),
        load_pixels(root, [r["image"] for r in recs], image_size),
        tuple(tuple(r["captions"]) for r in recs),
    )


def load_objects(root: Path, split: str, limit: int = 0) -> SceneObjects:
    """The objects of a `retrieval` split's scenes, in the order `load_retrieval` gives images
    (procedural one-off "blob" shapes left out: no word names them)."""
    recs = read_jsonl(_check(root, "retrieval") / f"{split}.jsonl")
    recs = recs[:limit] if limit > 0 else recs
    image, colour, shape, present = [], [], [], []
    for i, r in enumerate(recs):
        objs = [(o["colour"], o["shape"]) for o in r["scene"]["objects"]]
        for c, s in objs:
            if s != NOVEL_SHAPE:
                image.append(i)
                colour.append(c)
                shape.append(s)
                present.append(frozenset(objs))
    return SceneObjects(
        np.array(image, dtype=np.int64), tuple(colour), tuple(shape), tuple(present)
    )


def load_binding(root: Path, split: str, image_size: int, limit: int = 0) -> BindingPairs:
    """One split of a `binding` dataset directory (train | test)."""
    root = _check(root, "binding")
    recs = read_jsonl(root / f"{split}.jsonl")
    if limit > 0:
        recs = recs[:limit]
    return BindingPairs(
        tuple(r["id"] for r in recs),
        load_pixels(root, [r["image_a"] for r in recs], image_size),
        load_pixels(root, [r["image_b"] for r in recs], image_size),
        tuple(r["caption_a"] for r in recs),
        tuple(r["caption_b"] for r in recs),
        tuple(r["swap"] for r in recs),
    )


def grammar_captions(n: int, seed: int) -> list[str]:
    """`n` captions of freshly sampled scenes, no rendering: XBT's text-only corpus."""
    from pipelines.data.captions import caption_scene
    from pipelines.data.scene import held_out_combos, sample_scene

    held = held_out_combos(seed)
    out: list[str] = []
    k = 0
    while len(out) < n:
        rng = np.random.default_rng([seed, 7919, k])
        out.extend(c.text for c in caption_scene(sample_scene(rng, exclude=held), rng))
        k += 1
    return out[:n]


def ensure_dataset(name: str, out: Path, size: str, seed: int, image_size: int = 64) -> Path:
    """`out` if it already holds dataset `name`, else build it there (preset `size`, `seed`)."""
    from pipelines.data.sets import BuildArgs, registry

    out = Path(out)
    if (out / "manifest.json").is_file():
        m = Manifest.load(out)
        if m.name != name or m.seed != seed:
            raise ValueError(f"{out} holds {m.name} seed {m.seed}, wanted {name} seed {seed}")
        return out
    spec = registry()[name]
    if size not in spec.presets:
        raise ValueError(f"unknown size {size!r} for {name}; known: {', '.join(spec.presets)}")
    spec.build(BuildArgs(out, seed, dict(spec.presets[size]), image_size, 1))
    return out
