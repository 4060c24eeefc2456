"""Attribute-binding pairs: two images with the same objects and layout whose attributes are
swapped ("a red circle and a blue square" vs "a blue circle and a red square")."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.data.captions import REL_FRAME, Draft, noun_phrase
from pipelines.data.render import render
from pipelines.data.scene import (
    Scene,
    SceneObject,
    compute_relations,
    make_object,
    place,
    sample_background,
)
from pipelines.data.sets import BuildArgs, DatasetSpec
from pipelines.data.sheet import SheetRow
from pipelines.data.store import (
    DatasetWriter,
    Manifest,
    decode_png,
    encode_png,
    item_rng,
    read_jsonl,
)
from pipelines.data.vocab import COLOURS, SHAPES, SIZE_ORDER, TEXTURES

NAME = "binding"
SPLITS = ("train", "test")
SWAPS = ("colour", "texture", "size")


def _pair(rng: np.random.Generator, swap: str) -> tuple[SceneObject, SceneObject]:
    s1, s2 = rng.choice(len(SHAPES), 2, replace=False)
    c1, c2 = rng.choice(list(COLOURS), 2, replace=False)
    t1, t2 = rng.choice(TEXTURES, 2, replace=swap != "texture")
    z1, z2 = ("small", "large") if rng.uniform() < 0.5 else ("large", "small")
    if swap != "size":
        z1 = z2 = str(rng.choice(SIZE_ORDER[:2]))
    a = make_object(rng, str(c1), SHAPES[s1], z1, str(t1))
    b = make_object(rng, str(c2), SHAPES[s2], z2, str(t2))
    return a, b


def _swapped(a: SceneObject, b: SceneObject, swap: str) -> tuple[SceneObject, SceneObject]:
    if swap == "colour":
        return replace(a, colour=b.colour, rgb=b.rgb), replace(b, colour=a.colour, rgb=a.rgb)
    if swap == "texture":
        return replace(a, texture=b.texture), replace(b, texture=a.texture)
    return replace(a, size=b.size, r=b.r), replace(b, size=a.size, r=a.r)


def _caption(scene: Scene, swap: str, relword: str | None) -> Draft:
    attrs = ("colour",) if swap == "colour" else (swap, "colour")
    a = noun_phrase([scene.objects[0]], attrs, "a" if relword is None else "the", "pre", 0)
    b = noun_phrase([scene.objects[1]], attrs, "a" if relword is None else "the", "pre", 1)
    if relword is None:
        return Draft((*a, " and ", *b), "binding")
    before, after = REL_FRAME.get(relword, ("", " "))
    return Draft((*a, " is ", before, relword, after, *b), "binding")


def make_item(seed: int, split: str, size: int, index: int) -> dict[str, Any]:
    rng = item_rng(seed, NAME, split, index)
    swap = str(rng.choice(SWAPS, p=[0.6, 0.2, 0.2]))
    while True:  # retry until both versions fit without touching
        a, b = _pair(rng, swap)
        placed = place(rng, [a, b], p_inside=0.0, p_overlap=0.0)
        if len(placed) < 2:
            continue
        a2, b2 = _swapped(placed[0], placed[1], swap)
        if abs(a2.x - b2.x) >= a2.r + b2.r + 0.02 or abs(a2.y - b2.y) >= a2.r + b2.r + 0.02:
            break
    bg, noise = sample_background(rng), int(rng.integers(2**31))
    scene_a = Scene((placed[0], placed[1]), compute_relations(placed), bg, noise)
    scene_b = Scene((a2, b2), compute_relations([a2, b2]), bg, noise)
    spatial = [r for r in scene_a.relations if r.predicate in ("left_of", "above") and r.subject == 0]
    relword = None
    if spatial and rng.uniform() < 0.5:
        relword = {"left_of": "left", "above": "above"}[spatial[0].predicate]
    stem = f"{split}/{index:06d}"
    files = {f"images/{stem}_a.png": encode_png(render(scene_a, size).image),
             f"images/{stem}_b.png": encode_png(render(scene_b, size).image)}
    record = {"id": stem, "image_a": f"images/{stem}_a.png", "image_b": f"images/{stem}_b.png",
              "caption_a": _caption(scene_a, swap, relword).render().text,
              "caption_b": _caption(scene_b, swap, relword).render().text, "swap": swap,
              "scene_a": scene_a.to_dict(), "scene_b": scene_b.to_dict()}
    return {"files": files, "record": record}


def build(args: BuildArgs) -> Manifest:
    w = DatasetWriter(args.out, NAME, SPEC.version, args.seed,
                      {"image_size": args.image_size, "counts": args.counts}, args.overwrite)
    for split in SPLITS:
        records = w.put_items(partial(make_item, args.seed, split, args.image_size),
                              args.counts.get(split, 0), args.workers)
        w.put_jsonl(f"{split}.jsonl", records)
    return w.finish({s: args.counts.get(s, 0) for s in SPLITS})


def sheet(root: Path, n: int) -> list[SheetRow]:
    return [SheetRow([("image a", decode_png(Path(root) / r["image_a"])),
                      ("image b", decode_png(Path(root) / r["image_b"]))],
                     f"swap: {r['swap']}\na: {r['caption_a']}\nb: {r['caption_b']}")
            for r in read_jsonl(Path(root) / "test.jsonl")[:n]]


SPEC = DatasetSpec(
    name=NAME, version="1.0",
    description="Image pairs with swapped attribute bindings and their two captions.",
    presets={"tiny": {"train": 6, "test": 4}, "small": {"train": 400, "test": 100},
             "default": {"train": 2000, "test": 500}, "large": {"train": 20000, "test": 2000}},
    build=build, sheet=sheet,
)
