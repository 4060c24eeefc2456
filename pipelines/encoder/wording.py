"""Captions worded unlike anything the training grammar writes, for measuring whether retrieval
holds when users do not talk like the training data: synonyms the grammar never uses ("crimson",
"rhombus", "plus sign"), relative clauses ("a circle that is red"), attribute-after-noun lists
("circle: red") and free sentences ("In this picture you can see ..."). Every caption stays true
of its scene. The training grammar is `pipelines.data.captions`; none of these frames occur in it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipelines.data.scene import Scene, SceneObject
from pipelines.data.store import read_jsonl
from pipelines.data.vocab import article
from pipelines.encoder.data import ImageTextSet, load_retrieval

COLOUR_SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("crimson", "scarlet"),
    "orange": ("tangerine", "amber"),
    "yellow": ("golden", "lemon-coloured"),
    "green": ("emerald", "grass-green"),
    "cyan": ("turquoise", "aqua"),
    "blue": ("azure", "cobalt"),
    "purple": ("violet", "lilac"),
    "pink": ("rose", "salmon-pink"),
    "brown": ("chocolate", "rust-brown"),
}
SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("disc", "round shape"),
    "square": ("box", "four-sided square shape"),
    "triangle": ("three-sided shape", "triangular shape"),
    "diamond": ("rhombus", "lozenge"),
    "hexagon": ("six-sided shape", "hexagonal tile"),
    "star": ("five-pointed star", "starburst"),
    "cross": ("plus sign", "plus-shaped mark"),
    "heart": ("love heart", "heart symbol"),
    "crescent": ("moon shape", "sickle moon"),
}
FRAMES = ("synonyms", "relative clause", "noun first", "free sentence")


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _objects(scene: Scene) -> list[SceneObject]:
    return [o for o in scene.objects if o.shape in SHAPE_SYNONYMS]


def _synonyms(scene: Scene, rng: np.random.Generator) -> str:
    parts = []
    for o in _objects(scene):
        noun = _pick(rng, SHAPE_SYNONYMS[o.shape])
        colour = _pick(rng, COLOUR_SYNONYMS[o.colour])
        parts.append(f"{article(colour)} {colour} {noun}")
    return "Depicted: " + "; ".join(parts)


def _relative_clause(scene: Scene, rng: np.random.Generator) -> str:
    parts = [f"{article(o.shape)} {o.shape} which is coloured {o.colour}" for o in _objects(scene)]
    return "We see " + ", plus ".join(parts)


def _noun_first(scene: Scene, rng: np.random.Generator) -> str:
    return " / ".join(f"{o.shape}: {o.colour}" for o in _objects(scene))


def _free_sentence(scene: Scene, rng: np.random.Generator) -> str:
    named = " together with ".join(f"one {o.colour}-coloured {o.shape}" for o in _objects(scene))
    return f"In this picture you can spot {named}"


WRITERS: dict[str, Callable[[Scene, np.random.Generator], str]] = {
    "synonyms": _synonyms,
    "relative clause": _relative_clause,
    "noun first": _noun_first,
    "free sentence": _free_sentence,
}


def unseen_captions(scene: Scene, rng: np.random.Generator) -> list[str]:
    """One caption per frame in `FRAMES`, each naming every object's colour and shape.

    Returns: [] for a scene whose objects are all procedural blobs (nothing to name).
    """
    if not _objects(scene):
        return []
    return [WRITERS[f](scene, rng) for f in FRAMES]


def unseen_wording_set(root: Path, split: str, image_size: int, seed: int = 0) -> ImageTextSet:
    """A retrieval split's images, each with its `unseen_captions` instead of the dataset's
    (images with nothing nameable are left out)."""
    data = load_retrieval(root, split, image_size)
    recs = read_jsonl(Path(root) / f"{split}.jsonl")
    keep, captions = [], []
    for k, r in enumerate(recs):
        caps = unseen_captions(Scene.from_dict(r["scene"]), np.random.default_rng([seed, 31, k]))
        if caps:
            keep.append(k)
            captions.append(tuple(caps))
    return ImageTextSet(tuple(data.ids[k] for k in keep), data.pixels[keep], tuple(captions))
