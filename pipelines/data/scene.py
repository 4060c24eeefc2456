"""Structured scene descriptions and how to sample them from a seed.

A `Scene` is the single source of truth: the renderer draws it, the caption writer
describes it, and relations are computed from its geometry, never guessed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from pipelines.data.shapes import mask_fn
from pipelines.data.vocab import COLOURS, SHAPES, SIZE_ORDER, SIZES, TEXTURES

Combo = tuple[str, str]  # (colour, shape)


@dataclass(frozen=True)
class SceneObject:
    shape: str  # a name in vocab.SHAPES, or "blob" with shape_params
    colour: str  # a name in vocab.COLOURS (the caption word)
    size: str  # small | medium | large
    texture: str  # a name in vocab.TEXTURES or vocab.NOVEL_TEXTURES
    x: float  # centre, fraction of image width from the left
    y: float  # centre, fraction of image height from the top
    r: float  # half-size of the bounding box, fraction of the image side
    rgb: tuple[int, int, int]  # the jittered colour actually painted
    shape_params: tuple[float, ...] = ()  # harmonics of a blob shape


@dataclass(frozen=True)
class Relation:
    subject: int  # index into Scene.objects
    predicate: str  # one of vocab.RELATIONS
    object: int


@dataclass(frozen=True)
class Background:
    tone: str  # light | dark (the caption word)
    kind: str  # flat | gradient | mottled
    rgb0: tuple[int, int, int]
    rgb1: tuple[int, int, int]  # second colour of a gradient / mottle
    angle: float  # gradient direction, radians


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]  # in drawing order (later ones on top)
    relations: tuple[Relation, ...]
    background: Background
    noise_seed: int  # seeds the pixel noise so rendering is a pure function

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Scene:
        objs = tuple(
            SceneObject(**{**o, "rgb": tuple(o["rgb"]), "shape_params": tuple(o["shape_params"])})
            for o in d["objects"]
        )
        rels = tuple(Relation(**r) for r in d["relations"])
        bg = d["background"]
        back = Background(**{**bg, "rgb0": tuple(bg["rgb0"]), "rgb1": tuple(bg["rgb1"])})
        return Scene(objs, rels, back, int(d["noise_seed"]))


def held_out_combos(seed: int) -> frozenset[Combo]:
    """Colour-shape pairs that never appear in training scenes (compositional split).

    Two shapes per colour, each shape held out for two colours, so every colour and
    every shape is still seen in training, only never together.
    """
    rng = np.random.default_rng([seed, 7919])
    perm = rng.permutation(len(SHAPES))
    colours = list(COLOURS)
    held = set()
    for k, colour in enumerate(colours):
        for offset in (0, 4):
            held.add((colour, SHAPES[perm[(k + offset) % len(SHAPES)]]))
    return frozenset(held)


def jitter_rgb(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int = 14) -> tuple[int, int, int]:
    """`rgb` with each channel moved by up to `amount`, clipped to 0..255."""
    out = np.clip(np.asarray(rgb) + rng.integers(-amount, amount + 1, size=3), 0, 255)
    return (int(out[0]), int(out[1]), int(out[2]))


def sample_background(rng: np.random.Generator) -> Background:
    """A light or dark, flat / gradient / mottled, slightly tinted background."""
    tone = str(rng.choice(["light", "dark"]))
    lo, hi = (180, 235) if tone == "light" else (20, 70)
    base = rng.integers(lo, hi)
    tint = rng.integers(-12, 13, size=3)
    rgb0 = tuple(int(c) for c in np.clip(base + tint, 0, 255))
    rgb1 = tuple(int(c) for c in np.clip(base + tint + rng.integers(-25, 26), 0, 255))
    kind = str(rng.choice(["flat", "gradient", "mottled"]))
    return Background(tone, kind, rgb0, rgb1, float(rng.uniform(0, 2 * np.pi)))  # type: ignore[arg-type]


def make_object(rng: np.random.Generator, colour: str, shape: str, size: str | None = None,
                texture: str | None = None, shape_params: tuple[float, ...] = ()) -> SceneObject:
    """An unplaced object (x = y = 0.5) with the given attributes; the rest sampled."""
    size = size or str(rng.choice(SIZE_ORDER))
    lo, hi = SIZES[size]
    return SceneObject(
        shape=shape, colour=colour, size=size, texture=texture or str(rng.choice(TEXTURES)),
        x=0.5, y=0.5, r=float(rng.uniform(lo, hi)), rgb=jitter_rgb(rng, COLOURS[colour]),
        shape_params=shape_params,
    )


def _boxes_apart(a: SceneObject, b: SceneObject, margin: float = 0.02) -> bool:
    gap = a.r + b.r + margin
    return abs(a.x - b.x) >= gap or abs(a.y - b.y) >= gap


def place(rng: np.random.Generator, objs: list[SceneObject], p_inside: float = 0.15,
          p_overlap: float = 0.1, max_tries: int = 60) -> list[SceneObject]:
    """Give objects positions: boxes apart, except one optional nested or overlapping pair.

    Objects that cannot be placed are dropped, so a scene may hold fewer than asked.
    Args:
        objs: unplaced objects in drawing order.
    Returns:
        The placed objects, drawing order kept.
    """
    placed: list[SceneObject] = []
    pair_mode = "none"
    if len(objs) >= 2:
        u = rng.uniform()
        pair_mode = "inside" if u < p_inside else "overlap" if u < p_inside + p_overlap else "none"
    if pair_mode == "inside":
        # The outer object is drawn first and large, the inner one small and on top.
        outer = replace(objs[0], size="large", r=float(rng.uniform(*SIZES["large"])))
        inner = replace(objs[1], size="small", r=float(rng.uniform(*SIZES["small"])))
        objs = [outer, inner, *objs[2:]]
    for k, obj in enumerate(objs):
        for _ in range(max_tries):
            if k == 1 and pair_mode == "inside":
                outer = placed[0]
                off = rng.uniform(-0.15, 0.15, size=2) * outer.r
                cand = replace(obj, x=float(outer.x + off[0]), y=float(outer.y + off[1]))
                others = placed[1:]
            elif k == 1 and pair_mode == "overlap" and placed:
                first = placed[0]
                ang = rng.uniform(0, 2 * np.pi)
                dist = rng.uniform(0.55, 0.8) * (first.r + obj.r)
                cand = replace(obj, x=float(first.x + dist * np.cos(ang)),
                               y=float(first.y + dist * np.sin(ang)))
                others = placed[1:]
            else:
                cand = replace(obj, x=float(rng.uniform(obj.r + 0.02, 0.98 - obj.r)),
                               y=float(rng.uniform(obj.r + 0.02, 0.98 - obj.r)))
                others = placed
            inside_image = obj.r <= cand.x <= 1 - obj.r and obj.r <= cand.y <= 1 - obj.r
            if inside_image and all(_boxes_apart(cand, o) for o in others):
                placed.append(cand)
                break
        else:
            if k == 0:
                raise RuntimeError("could not place the first object; sizes too large")
    return placed


def _grid_masks(a: SceneObject, b: SceneObject, n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Both objects' masks sampled on one grid over a's bounding box."""
    xs = np.linspace(a.x - a.r, a.x + a.r, n)
    gx, gy = np.meshgrid(xs, np.linspace(a.y - a.r, a.y + a.r, n))
    ma = mask_fn(a.shape, a.shape_params)((gx - a.x) / a.r, (gy - a.y) / a.r)
    mb = mask_fn(b.shape, b.shape_params)((gx - b.x) / b.r, (gy - b.y) / b.r)
    mb &= (np.abs(gx - b.x) <= b.r) & (np.abs(gy - b.y) <= b.r)
    return ma, mb


def compute_relations(objs: tuple[SceneObject, ...] | list[SceneObject]) -> tuple[Relation, ...]:
    """Every relation that strictly holds between ordered pairs of objects.

    left_of / above need the bounding boxes fully separated on that axis; bigger_than
    needs different size words; inside needs the later-drawn mask within the earlier one.
    """
    rels: list[Relation] = []
    for i, a in enumerate(objs):
        for j, b in enumerate(objs):
            if i == j:
                continue
            if a.x + a.r <= b.x - b.r:
                rels.append(Relation(i, "left_of", j))
            if a.y + a.r <= b.y - b.r:
                rels.append(Relation(i, "above", j))
            if SIZE_ORDER.index(a.size) > SIZE_ORDER.index(b.size):
                rels.append(Relation(i, "bigger_than", j))
            if i > j and not _boxes_apart(a, b, margin=0.0):
                ma, mb = _grid_masks(a, b)
                if ma.any() and (ma <= mb).all():
                    rels.append(Relation(i, "inside", j))
                elif (ma & mb).any():
                    rels.append(Relation(j, "overlapping", i))
    return tuple(rels)


def sample_scene(rng: np.random.Generator, n_objects: int | None = None,
                 exclude: frozenset[Combo] = frozenset(), require: Combo | None = None,
                 p_duplicate: float = 0.25, p_inside: float = 0.15,
                 p_overlap: float = 0.1) -> Scene:
    """Sample a scene of 1-4 objects.

    Args:
        n_objects: how many objects to ask for (1-4); random when None.
        exclude: colour-shape combos no object may have.
        require: a combo the first object must have (compositional test scenes).
        p_duplicate: chance an object repeats an earlier colour and shape (for counts).
    Returns:
        A placed scene with its relations.
    """
    n = int(n_objects or rng.choice([1, 2, 3, 4], p=[0.2, 0.3, 0.3, 0.2]))
    allowed = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in exclude]
    objs: list[SceneObject] = []
    for k in range(n):
        if k == 0 and require is not None:
            colour, shape = require
        elif k > 0 and rng.uniform() < p_duplicate:
            twin = objs[int(rng.integers(k))]
            colour, shape = twin.colour, twin.shape
        else:
            colour, shape = allowed[int(rng.integers(len(allowed)))]
        objs.append(make_object(rng, colour, shape))
    placed = place(rng, objs, p_inside=p_inside, p_overlap=p_overlap)
    return Scene(tuple(placed), compute_relations(placed), sample_background(rng),
                 int(rng.integers(2**31)))


def compose(rng: np.random.Generator, objs: list[SceneObject], p_inside: float = 0.0,
            p_overlap: float = 0.0) -> Scene:
    """A scene of exactly these objects (placed at random) on a random background.

    Raises:
        RuntimeError: when the objects cannot all be placed apart after retries.
    """
    for _ in range(20):
        placed = place(rng, objs, p_inside=p_inside, p_overlap=p_overlap)
        if len(placed) == len(objs):
            return Scene(tuple(placed), compute_relations(placed), sample_background(rng),
                         int(rng.integers(2**31)))
    raise RuntimeError(f"could not place {len(objs)} objects apart")


def random_blob_params(rng: np.random.Generator) -> tuple[float, ...]:
    """Harmonics of a novel star-convex shape, distinct from the base shapes."""
    amps = rng.uniform(0.06, 0.16, size=3)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    return tuple(float(x) for pair in zip(amps, phases, strict=True) for x in pair)
