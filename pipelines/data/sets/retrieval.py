"""Retrieval splits of Concord Scenes: train / val / test, plus a compositional test split
whose colour-shape combinations never occur in train, val or test."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from concord.media import colour_layout
from pipelines.data.captions import caption_scene
from pipelines.data.render import render
from pipelines.data.scene import Scene, held_out_combos, sample_scene
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

NAME = "retrieval"
SPLITS = ("train", "val", "test", "test_compositional")


def make_item(seed: int, split: str, size: int, index: int, dataset: str = NAME) -> dict[str, Any]:
    """One scene with its pixels, layouts and captions, as files (bytes) plus a record."""
    rng = item_rng(seed, dataset, split, index)
    held = held_out_combos(seed)
    if split == "test_compositional":
        combo = sorted(held)[int(rng.integers(len(held)))]
        scene = sample_scene(rng, require=combo)
    else:
        scene = sample_scene(rng, exclude=held)
    out = render(scene, size)
    caps = caption_scene(scene, rng)
    stem = f"{split}/{index:06d}"
    files = {f"images/{stem}.png": encode_png(out.image), f"layouts/{stem}.png": encode_png(out.layout),
             f"instances/{stem}.png": encode_png(out.instances)}
    record = {"id": stem, "image": f"images/{stem}.png", "layout": f"layouts/{stem}.png",
              "instances": f"instances/{stem}.png", "captions": [c.text for c in caps],
              "styles": [c.style for c in caps], "scene": scene.to_dict()}
    return {"files": files, "record": record}


def build(args: BuildArgs) -> Manifest:
    held = sorted(held_out_combos(args.seed))
    w = DatasetWriter(args.out, NAME, SPEC.version, args.seed,
                      {"image_size": args.image_size, "held_out_combos": [list(c) for c in held],
                       "counts": args.counts}, args.overwrite)
    for split in SPLITS:
        records = w.put_items(partial(make_item, args.seed, split, args.image_size),
                              args.counts.get(split, 0), args.workers)
        w.put_jsonl(f"{split}.jsonl", records)
    return w.finish({s: args.counts.get(s, 0) for s in SPLITS})


def sheet(root: Path, n: int) -> list[SheetRow]:
    rows = []
    splits = [s for s in SPLITS if (Path(root) / f"{s}.jsonl").is_file()]
    for k in range(n):
        split = splits[k % len(splits)]
        recs = read_jsonl(Path(root) / f"{split}.jsonl")
        if k // len(splits) >= len(recs):
            continue
        r = recs[k // len(splits)]
        scene = Scene.from_dict(r["scene"])
        rels = "; ".join(f"{x.subject} {x.predicate} {x.object}" for x in scene.relations[:4])
        text = f"[{r['id']}]\n" + "\n".join(f"- {c}" for c in r["captions"]) + f"\nrelations: {rels}"
        inst = decode_png(Path(root) / r["instances"])
        rows.append(SheetRow([("image", decode_png(Path(root) / r["image"])),
                              ("layout", colour_layout(decode_png(Path(root) / r["layout"]))),
                              ("instances", colour_layout(inst * 3))], text))
    return rows


SPEC = DatasetSpec(
    name=NAME, version="1.0",
    description="Scenes with 5 captions each; train/val/test and a compositional test split.",
    presets={
        "tiny": {"train": 8, "val": 4, "test": 4, "test_compositional": 4},
        "small": {"train": 1000, "val": 100, "test": 200, "test_compositional": 200},
        "default": {"train": 5000, "val": 500, "test": 1000, "test_compositional": 1000},
        "large": {"train": 50000, "val": 2000, "test": 5000, "test_compositional": 5000},
    },
    build=build, sheet=sheet,
)
