"""Entity KB and mentions (for M3EL), hard in the paper's sense (method card 3, small
reproduction): neither the mention's text alone nor its image alone identifies the entity.

- Each entity has latent attributes (shape, colour, size, texture, position): its *look*.
  Looks are shared by about `look_share` entities (with different names), names by about
  `name_share` entities (with different looks); (name, look) is unique.
- The description names 2-3 of the five attributes; the KB image (0-2 per entity, none for
  `missing_entity_image` of them) is rendered from all five.
- A mention's text is the name plus ONE attribute that is NOT in the description (so only the
  entity's image can confirm it); its image is the entity re-rendered with jitter (colour,
  size, position inside its region, background) and, for `occlusion` of them, a grey block
  hiding part of the object; `missing_mention_image` of the mentions have no image.
- So the text narrows to ~name_share candidates, the image to ~look_share; both together (or
  the text's attribute against the entity images) resolve it.
Every entity gets mentions round-robin (the default preset: 2 train and 1 test per entity).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.data.names import pseudo_words
from pipelines.data.render import render
from pipelines.data.scene import Scene, make_object, sample_background
from pipelines.data.sets import BuildArgs, DatasetSpec
from pipelines.data.sheet import SheetRow
from pipelines.data.store import DatasetWriter, Manifest, decode_png, item_rng, read_jsonl
from pipelines.data.vocab import COLOURS, SHAPES, SIZE_ORDER, TEXTURES

NAME = "entities"
SPLITS = ("train", "val", "test")
ATTRIBUTES = ("shape", "colour", "size", "texture", "position")
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.3, 0.5), "right": (0.7, 0.5), "top": (0.5, 0.3), "bottom": (0.5, 0.7), "centre": (0.5, 0.5),
}
OPTIONS = {"look_share": 4.0, "name_share": 7.0, "missing_entity_image": 0.15,
           "missing_mention_image": 0.2, "occlusion": 0.5}

# How a description states an attribute, and how a mention does.
DESCRIBE = {
    "shape": "shaped like a {v}", "colour": "{v} in colour", "size": "{v} in size",
    "texture": "{v} in pattern", "position": "always drawn at the {v}",
}
MENTION = {
    "shape": "the one shaped like a {v}", "colour": "the {v} one", "size": "the {v} one",
    "texture": "the {v} one", "position": "the one at the {v}",
}
TEMPLATES = (
    "We spotted {name}, {phrase}, at the fair.",
    "{name}, {phrase}, is back on the banner today.",
    "Everyone cheered when {name} appeared, {phrase}.",
    "Look closely: {name} is here, {phrase}.",
)


def _looks(rng: np.random.Generator, n: int) -> list[dict[str, str]]:
    """`n` distinct attribute combinations."""
    seen: set[tuple[str, ...]] = set()
    out = []
    while len(out) < n:
        look = {"shape": str(rng.choice(SHAPES)), "colour": str(rng.choice(list(COLOURS))),
                "size": str(rng.choice(SIZE_ORDER)), "texture": str(rng.choice(TEXTURES)),
                "position": str(rng.choice(list(POSITIONS)))}
        key = tuple(look[a] for a in ATTRIBUTES)
        if key not in seen:
            seen.add(key)
            out.append(look)
    return out


def _pairs(rng: np.random.Generator, n: int, n_names: int, n_looks: int) -> list[tuple[int, int]]:
    """`n` distinct (name, look) index pairs, each name used ~n/n_names and each look ~n/n_looks
    times (balanced permutations; a clash is fixed by swapping names with another entity)."""
    names = rng.permutation(np.arange(n) % n_names)
    looks = rng.permutation(np.arange(n) % n_looks)
    for _ in range(100 * n):
        seen: dict[tuple[int, int], int] = {}
        clash = None
        for k in range(n):
            key = (int(names[k]), int(looks[k]))
            if key in seen:
                clash = k
                break
            seen[key] = k
        if clash is None:
            return [(int(a), int(b)) for a, b in zip(names, looks, strict=True)]
        other = int(rng.integers(n))
        names[clash], names[other] = names[other], names[clash]
    raise RuntimeError("could not make (name, look) pairs unique; lower name_share or look_share")


def make_kb(rng: np.random.Generator, n: int, name_share: float = 7.0,
            look_share: float = 4.0) -> list[dict[str, Any]]:
    """`n` entities: names shared by ~name_share, looks by ~look_share, (name, look) unique."""
    n_names = max(1, round(n / name_share))
    n_looks = max(1, round(n / look_share))
    if n_names * n_looks < n:
        n_looks = -(-n // n_names)
    names = [w.capitalize() for w in pseudo_words(rng, n_names)]
    looks = _looks(rng, n_looks)
    kb = []
    for k, (name_idx, look_idx) in enumerate(_pairs(rng, n, n_names, n_looks)):
        look = looks[look_idx]
        described = sorted(rng.choice(len(ATTRIBUTES), size=int(rng.integers(2, 4)), replace=False).tolist())
        said = [ATTRIBUTES[i] for i in described]
        phrases = [DESCRIBE[a].format(v=look[a]) for a in said]
        name = names[name_idx]
        description = f"{name} is {', '.join(phrases[:-1])} and {phrases[-1]}."
        kb.append({"id": f"E{k:04d}", "name": name, "description": description,
                   "attributes": {a: look[a] for a in said}, "latent": dict(look), "look": look_idx})
    return kb


def _scene(rng: np.random.Generator, look: dict[str, str], jitter: float) -> Scene:
    """The entity's object alone on a fresh background, its position jittered in its region."""
    obj = make_object(rng, look["colour"], look["shape"], look["size"], look["texture"])
    cx, cy = POSITIONS[look["position"]]
    lo = obj.r + 0.02
    x = float(np.clip(cx + rng.uniform(-jitter, jitter), lo, 1 - lo))
    y = float(np.clip(cy + rng.uniform(-jitter, jitter), lo, 1 - lo))
    return Scene((replace(obj, x=x, y=y),), (), sample_background(rng), int(rng.integers(2**31)))


def _occlude(rng: np.random.Generator, image: np.ndarray, scene: Scene) -> np.ndarray:
    """A flat grey block over 35-60% of the object's box (one side of it)."""
    obj, size = scene.objects[0], image.shape[0]
    x0, x1 = (obj.x - obj.r) * size, (obj.x + obj.r) * size
    y0, y1 = (obj.y - obj.r) * size, (obj.y + obj.r) * size
    frac = rng.uniform(0.35, 0.6)
    side = int(rng.integers(4))
    if side == 0:
        x1 = x0 + frac * (x1 - x0)
    elif side == 1:
        x0 = x1 - frac * (x1 - x0)
    elif side == 2:
        y1 = y0 + frac * (y1 - y0)
    else:
        y0 = y1 - frac * (y1 - y0)
    out = image.copy()
    grey = int(rng.integers(100, 160))
    out[max(int(y0), 0):int(np.ceil(y1)), max(int(x0), 0):int(np.ceil(x1))] = grey
    return out


def build(args: BuildArgs) -> Manifest:
    n = args.counts["entities"]
    opt = {k: args.option(k, v) for k, v in OPTIONS.items()}
    w = DatasetWriter(args.out, NAME, SPEC.version, args.seed,
                      {"image_size": args.image_size, "counts": args.counts, "options": opt}, args.overwrite)
    kb = make_kb(item_rng(args.seed, NAME, "kb", 0), n, opt["name_share"], opt["look_share"])
    for k, e in enumerate(kb):
        rng = item_rng(args.seed, NAME, "kb-images", k)
        count = 0 if rng.uniform() < opt["missing_entity_image"] else int(rng.integers(1, 3))
        e["images"] = [w.put_png(f"kb_images/{e['id']}_{j}.png",
                                 render(_scene(rng, e["latent"], 0.03), args.image_size).image)
                       for j in range(count)]
    w.put_jsonl("kb.jsonl", kb)
    by_name: dict[str, list[str]] = {}
    by_look: dict[int, list[str]] = {}
    for e in kb:
        by_name.setdefault(e["name"], []).append(e["id"])
        by_look.setdefault(e["look"], []).append(e["id"])
    counts = {"entities": n, "names": len(by_name), "looks": len(by_look),
              "entities_with_images": sum(bool(e["images"]) for e in kb)}
    order = item_rng(args.seed, NAME, "order", 0).permutation(n)
    offset = 0
    for split in SPLITS:
        records = []
        for i in range(args.counts.get(split, 0)):
            rng = item_rng(args.seed, NAME, split, i)
            e = kb[int(order[(offset + i) % n])]
            hidden = [a for a in ATTRIBUTES if a not in e["attributes"]]
            attribute = hidden[int(rng.integers(len(hidden)))]
            phrase = MENTION[attribute].format(v=e["latent"][attribute])
            text = TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(name=e["name"], phrase=phrase)
            start = text.index(e["name"])
            image, occluded = None, False
            if rng.uniform() >= opt["missing_mention_image"]:
                scene = _scene(rng, e["latent"], 0.08)
                pixels = render(scene, args.image_size).image
                occluded = bool(rng.uniform() < opt["occlusion"])
                if occluded:
                    pixels = _occlude(rng, pixels, scene)
                image = w.put_png(f"images/{split}/{i:06d}.png", pixels)
            others = [x["id"] for x in kb if x["name"] != e["name"]]
            extra = [others[int(j)] for j in rng.permutation(len(others))[:3]]
            records.append({"id": f"{split}/{i:06d}", "text": text, "span": [start, start + len(e["name"])],
                            "image": image, "gold": e["id"], "cue": attribute,
                            "attribute": {attribute: e["latent"][attribute]}, "occluded": occluded,
                            "candidates": sorted(by_name[e["name"]] + extra)})
        offset += len(records)
        counts[split] = w.put_jsonl(f"mentions/{split}.jsonl", records)
    return w.finish(counts)


def sheet(root: Path, n: int) -> list[SheetRow]:
    kb = {e["id"]: e for e in read_jsonl(Path(root) / "kb.jsonl")}
    rows = []
    for m in read_jsonl(Path(root) / "mentions/test.jsonl")[:n]:
        e = kb[m["gold"]]
        panels = [("mention image", decode_png(Path(root) / m["image"]))] if m["image"] else []
        panels += [("gold KB image", decode_png(Path(root) / p)) for p in e["images"][:1]]
        same_name = sum(x["name"] == e["name"] for x in kb.values())
        same_look = sum(x["look"] == e["look"] for x in kb.values())
        rows.append(SheetRow(panels, f"mention: {m['text']}  (text cue: {m['cue']}, "
                                     f"occluded: {m['occluded']})\n"
                                     f"gold {e['id']}: {e['description']}\n"
                                     f"entities named {e['name']}: {same_name}; with this look: {same_look}"))
    return rows


SPEC = DatasetSpec(
    name=NAME, version="2.0",
    description="Entity KB (shared names, shared looks) and mentions that need text and image together.",
    presets={"tiny": {"entities": 12, "train": 6, "val": 3, "test": 4},
             "small": {"entities": 120, "train": 240, "val": 60, "test": 120},
             "default": {"entities": 400, "train": 800, "val": 200, "test": 400},
             "large": {"entities": 2000, "train": 6000, "val": 1000, "test": 2000}},
    build=build, sheet=sheet, options=OPTIONS,
)
