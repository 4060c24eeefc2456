"""Entity KB and mentions (for M3EL): named entities with a description and 0-3 images,
names shared by several entities, and mentions in a sentence with an image and a gold entity.

Half the mentions carry a text cue (region / category) and half rely on the image alone,
so a text-only linker is measurably worse on ambiguous names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipelines.data.names import pseudo_words
from pipelines.data.render import render
from pipelines.data.scene import compose, make_object, sample_scene
from pipelines.data.sets import BuildArgs, DatasetSpec
from pipelines.data.sheet import SheetRow
from pipelines.data.store import DatasetWriter, Manifest, decode_png, item_rng, read_jsonl
from pipelines.data.vocab import COLOURS, SHAPES, TEXTURES

NAME = "entities"
SPLITS = ("train", "val", "test")
CATEGORIES = ("mascot", "emblem", "crest", "badge", "beacon", "totem")
REGIONS = ("northern", "southern", "eastern", "western", "coastal", "highland")
TEXT_CUE = ("Everyone cheered for {name}, the {region} {category}, at the parade.",
            "{name}, our {region} {category}, is back on the banner.",
            "The {category} of the {region} league, {name}, appeared again.")
NO_CUE = ("{name} showed up in this picture.", "Look who is here: {name}!",
          "We finally found {name} in the photo.", "Is that {name} on the poster?")


def make_kb(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    """`n` entities; about a third share a name with another entity.

    Entities sharing a name differ in region and category, and every entity has its own
    colour-shape-texture look, so both text and image can disambiguate.
    """
    looks = [(c, s, t) for c in COLOURS for s in SHAPES for t in TEXTURES]
    picks = rng.permutation(len(looks))[:n]
    names = pseudo_words(rng, max(1, int(n * 0.7)))
    ctx = [(r, c) for r in REGIONS for c in CATEGORIES]
    kb, used_ctx = [], {}
    for k in range(n):
        name = names[k] if k < len(names) else names[int(rng.integers(len(names)))]
        taken = used_ctx.setdefault(name, set())
        free = [x for x in ctx if x[0] not in {t[0] for t in taken} and x[1] not in {t[1] for t in taken}]
        free = free or [x for x in ctx if x not in taken]  # only when a name is shared 7+ times
        region, category = free[int(rng.integers(len(free)))]
        taken.add((region, category))
        colour, shape, texture = looks[int(picks[k])]
        kb.append({"id": f"E{k:04d}", "name": name.capitalize(), "region": region, "category": category,
                   "colour": colour, "shape": shape, "texture": texture,
                   "description": f"{name.capitalize()} is the {region} {category}, "
                                  f"drawn as a {texture} {colour} {shape}."})
    return kb


def _entity_scene(rng: np.random.Generator, e: dict[str, Any], distractors: int):
    objs = [make_object(rng, e["colour"], e["shape"], str(rng.choice(["medium", "large"])), e["texture"])]
    others = sample_scene(rng, n_objects=distractors + 1).objects[:distractors]
    objs += [make_object(rng, o.colour, o.shape, "small", o.texture) for o in others
             if (o.colour, o.shape, o.texture) != (e["colour"], e["shape"], e["texture"])]
    order = rng.permutation(len(objs))
    return compose(rng, [objs[int(i)] for i in order])


def build(args: BuildArgs) -> Manifest:
    n = args.counts["entities"]
    w = DatasetWriter(args.out, NAME, SPEC.version, args.seed,
                      {"image_size": args.image_size, "counts": args.counts}, args.overwrite)
    kb = make_kb(item_rng(args.seed, NAME, "kb", 0), n)
    for k, e in enumerate(kb):
        rng = item_rng(args.seed, NAME, "kb-images", k)
        e["images"] = [w.put_png(f"kb_images/{e['id']}_{j}.png",
                                 render(_entity_scene(rng, e, 0), args.image_size).image)
                       for j in range(int(rng.integers(0, 4)))]
    w.put_jsonl("kb.jsonl", kb)
    by_name: dict[str, list[str]] = {}
    for e in kb:
        by_name.setdefault(e["name"], []).append(e["id"])
    ambiguous = [e for e in kb if len(by_name[e["name"]]) > 1] or kb
    counts = {"entities": n, "ambiguous_entities": sum(len(v) for v in by_name.values() if len(v) > 1)}
    for split in SPLITS:
        records = []
        for i in range(args.counts.get(split, 0)):
            rng = item_rng(args.seed, NAME, split, i)
            pool = ambiguous if rng.uniform() < 0.6 else kb
            e = pool[int(rng.integers(len(pool)))]
            cue = str(rng.choice(["text", "image", "both"]))
            templates = NO_CUE if cue == "image" else TEXT_CUE
            text = templates[int(rng.integers(len(templates)))].format(**e)
            start = text.index(e["name"])
            # A text-cue-only mention's image shows unrelated shapes: the words must decide.
            scene = sample_scene(rng) if cue == "text" else _entity_scene(rng, e, int(rng.integers(0, 3)))
            image = w.put_png(f"images/{split}/{i:06d}.png", render(scene, args.image_size).image)
            others = [x["id"] for x in kb if x["name"] != e["name"]]
            extra = [others[int(j)] for j in rng.permutation(len(others))[:3]]
            records.append({"id": f"{split}/{i:06d}", "text": text, "span": [start, start + len(e["name"])],
                            "image": image, "gold": e["id"], "cue": cue,
                            "candidates": sorted(by_name[e["name"]] + extra)})
        counts[split] = w.put_jsonl(f"mentions/{split}.jsonl", records)
    return w.finish(counts)


def sheet(root: Path, n: int) -> list[SheetRow]:
    kb = {e["id"]: e for e in read_jsonl(Path(root) / "kb.jsonl")}
    rows = []
    for m in read_jsonl(Path(root) / "mentions/test.jsonl")[:n]:
        e = kb[m["gold"]]
        panels = [("mention image", decode_png(Path(root) / m["image"]))]
        panels += [("gold KB image", decode_png(Path(root) / p)) for p in e["images"][:1]]
        same = [x for x in kb.values() if x["name"] == e["name"]]
        rows.append(SheetRow(panels, f"mention: {m['text']}  (cue: {m['cue']})\n"
                                     f"gold {e['id']}: {e['description']}\n"
                                     f"entities named {e['name']}: {len(same)}"))
    return rows


SPEC = DatasetSpec(
    name=NAME, version="1.0",
    description="Entity KB with ambiguous names and image+text mentions with gold entities.",
    presets={"tiny": {"entities": 12, "train": 6, "val": 3, "test": 4},
             "small": {"entities": 60, "train": 300, "val": 50, "test": 100},
             "default": {"entities": 200, "train": 1500, "val": 200, "test": 500},
             "large": {"entities": 300, "train": 10000, "val": 1000, "test": 2000}},
    build=build, sheet=sheet,
)
