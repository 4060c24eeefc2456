"""Generator training data from Concord Scenes: simple scenes (1-2 plain objects on a flat
background) rendered at the model's size, their layouts (vocab.CLASS_NAMES ids) and short
captions ("a red circle above a blue square"), with one shape made rare on purpose. Prepared
tensors are cached in an .npz under a data dir; everything is a pure function of the seed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.data.captions import position_of
from pipelines.data.render import render
from pipelines.data.scene import Scene, compose, make_object, sample_background
from pipelines.data.vocab import CLASS_NAMES, COLOURS, PLURALS, SHAPES, SIZES

FORMAT_VERSION = 1  # bump when the cached arrays change meaning


@dataclass(frozen=True)
class DataConfig:
    size: int = 32  # pixels; the renderer supersamples 2x and box-filters (area downsampling)
    count: int = 6000  # scenes
    seed: int = 0
    shapes: tuple[str, ...] = ("circle", "square", "triangle", "cross")  # vocab.SHAPES subset
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple")  # vocab.COLOURS
    sizes: tuple[str, ...] = ("medium", "large")  # vocab.SIZES words
    rare_shape: str | None = "cross"  # drawn for `rare_frac` of objects; None: all uniform
    rare_frac: float = 0.03
    max_objects: int = 2  # 1..max_objects per scene, two-object scenes favoured
    background: str = "light"  # light (flat light tints) | any (the full Scenes backgrounds)
    captions_per_scene: int = 2

    def __post_init__(self) -> None:
        unknown = [s for s in self.shapes if s not in SHAPES]
        unknown += [c for c in self.colours if c not in COLOURS]
        unknown += [z for z in self.sizes if z not in SIZES]
        if unknown:
            raise ValueError(f"unknown shapes/colours/sizes: {unknown}")
        if self.rare_shape is not None and self.rare_shape not in self.shapes:
            raise ValueError(f"rare_shape {self.rare_shape!r} is not among shapes")
        if self.background not in ("light", "any"):
            raise ValueError(f"background must be light or any, got {self.background!r}")
        if not 1 <= self.max_objects <= 3 or self.count < 1 or self.captions_per_scene < 1:
            raise ValueError("need 1 <= max_objects <= 3, count >= 1, captions_per_scene >= 1")

    def key(self) -> str:
        """A short hash naming this configuration's cache file."""
        blob = json.dumps({"v": FORMAT_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataConfig:
        names = {f.name for f in fields(cls)}
        return cls(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
        )


@dataclass(frozen=True)
class GeneratorData:
    images: np.ndarray  # (N, S, S, 3) uint8
    layouts: np.ndarray  # (N, S, S) uint8 class ids of `class_names`
    captions: np.ndarray  # (N, C) str, C = captions_per_scene
    scenes: list[dict[str, Any]]  # Scene.to_dict() per image, JSON types (Scene.from_dict reads it)
    class_names: tuple[str, ...] = CLASS_NAMES

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def unique_captions(self) -> list[str]:
        return sorted(set(self.captions.ravel().tolist()))


def pick_shape(rng: np.random.Generator, cfg: DataConfig) -> str:
    """A shape: the rare one with probability rare_frac, else uniform over the others."""
    common = [s for s in cfg.shapes if s != cfg.rare_shape]
    if cfg.rare_shape is not None and (not common or rng.uniform() < cfg.rare_frac):
        return cfg.rare_shape
    return common[int(rng.integers(len(common)))]


def simple_scene(
    rng: np.random.Generator, cfg: DataConfig, objects: Sequence[tuple[str, str]] | None = None
) -> Scene:
    """A scene of 1..max_objects plain objects, boxes apart, on the configured background.

    Args:
        objects: (colour, shape) per object to draw; None samples them.
    """
    if objects is None:
        weights = np.arange(1, cfg.max_objects + 1, dtype=float)
        n = int(rng.choice(np.arange(1, cfg.max_objects + 1), p=weights / weights.sum()))
        objects = [
            (cfg.colours[int(rng.integers(len(cfg.colours)))], pick_shape(rng, cfg))
            for _ in range(n)
        ]
    for _ in range(10):
        sizes = [cfg.sizes[int(rng.integers(len(cfg.sizes)))] for _ in objects]
        objs = [
            make_object(rng, c, s, size=z, texture="plain")
            for (c, s), z in zip(objects, sizes, strict=True)
        ]
        try:
            scene = compose(rng, objs)
            break
        except RuntimeError:  # two large objects may not fit apart; draw other sizes
            continue
    else:
        raise RuntimeError(f"could not place {list(objects)} apart with sizes {cfg.sizes}")
    if cfg.background == "light":
        bg = sample_background(rng)
        while bg.tone != "light":
            bg = sample_background(rng)
        scene = replace(scene, background=replace(bg, kind="flat", rgb1=bg.rgb0))
    return scene


def _np(colour: str, shape: str) -> str:
    return f"a {colour} {shape}"


def relation_phrases(scene: Scene) -> list[str]:
    """Every 'X <relation> Y' sentence that holds between the first two objects."""
    a, b = scene.objects[0], scene.objects[1]
    na, nb = _np(a.colour, a.shape), _np(b.colour, b.shape)
    out = []
    for rel in scene.relations:
        if {rel.subject, rel.object} != {0, 1}:
            continue
        s, o = (na, nb) if rel.subject == 0 else (nb, na)
        if rel.predicate == "above":
            out += [f"{s} above {o}", f"{o} below {s}"]
        elif rel.predicate == "left_of":
            out += [f"{s} to the left of {o}", f"{o} to the right of {s}"]
    return out


def describe(scene: Scene, rng: np.random.Generator, count: int) -> list[str]:
    """`count` captions of a simple scene, the first one the most specific.

    One object: "a red circle" or "a red circle in the top left corner". Two: a spatial
    relation ("a red circle above a blue square", or its converse), or "X and Y". Identical
    objects: "two red circles".
    """
    objs = scene.objects
    if len(objs) == 1:
        o = objs[0]
        pool = [f"{_np(o.colour, o.shape)} {position_of(o)}", _np(o.colour, o.shape)]
    elif len(objs) == 2 and (objs[0].colour, objs[0].shape) == (objs[1].colour, objs[1].shape):
        pool = [f"two {objs[0].colour} {PLURALS[objs[0].shape]}"]
    elif len(objs) == 2:
        rels = relation_phrases(scene)
        pool = [rels[int(i)] for i in rng.permutation(len(rels))]
        nps = [_np(o.colour, o.shape) for o in objs]
        pool.append(" and ".join(nps if rng.uniform() < 0.5 else nps[::-1]))
    else:
        pool = [", ".join(_np(o.colour, o.shape) for o in objs)]
    return [pool[k % len(pool)] for k in range(count)]


def build(cfg: DataConfig) -> GeneratorData:
    """Sample, render and caption `cfg.count` scenes from `cfg.seed`."""
    rng = np.random.default_rng([cfg.seed, 4099])
    images = np.empty((cfg.count, cfg.size, cfg.size, 3), np.uint8)
    layouts = np.empty((cfg.count, cfg.size, cfg.size), np.uint8)
    captions, scenes = [], []
    for i in range(cfg.count):
        scene = simple_scene(rng, cfg)
        r = render(scene, cfg.size)
        images[i], layouts[i] = r.image, r.layout
        captions.append(describe(scene, rng, cfg.captions_per_scene))
        scenes.append(json.loads(json.dumps(scene.to_dict())))  # as the cache reads it back
    return GeneratorData(images, layouts, np.asarray(captions, dtype=str), scenes)


def load_or_build(cfg: DataConfig, data_dir: Path) -> GeneratorData:
    """The data for `cfg`, read from `<data_dir>/generator-<key>.npz` or built and cached there."""
    path = Path(data_dir) / f"generator-{cfg.key()}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            scenes = [json.loads(s) for s in z["scenes"].tolist()]
            return GeneratorData(z["images"], z["layouts"], z["captions"], scenes)
    data = build(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp,
        images=data.images,
        layouts=data.layouts,
        captions=data.captions,
        scenes=np.asarray([json.dumps(s) for s in data.scenes], dtype=str),
        config=np.asarray(json.dumps(asdict(cfg))),
    )
    tmp.replace(path)
    return data
