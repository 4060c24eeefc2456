"""Word-level misalignment sets: each caption with variants that make exactly one attribute,
object, relation or count false, the changed words labelled as character spans."""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from concord.media import colour_layout
from pipelines.data.captions import draft_captions
from pipelines.data.misalign import make_variants
from pipelines.data.render import render
from pipelines.data.scene import sample_scene
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

NAME = "misalignment"
SPLITS = ("train", "val", "test")


def make_item(seed: int, split: str, size: int, index: int) -> dict[str, Any]:
    rng = item_rng(seed, NAME, split, index)
    scene = sample_scene(rng)
    out = render(scene, size)
    captions = []
    for draft in draft_captions(scene, rng):
        cap = draft.render()
        variants = [{**asdict(v), "spans": [list(s) for s in v.spans]}
                    for v in make_variants(draft, scene, rng)]
        captions.append({"text": cap.text, "style": cap.style, "variants": variants})
    stem = f"{split}/{index:06d}"
    files = {f"images/{stem}.png": encode_png(out.image), f"layouts/{stem}.png": encode_png(out.layout)}
    record = {"id": stem, "image": f"images/{stem}.png", "layout": f"layouts/{stem}.png",
              "captions": captions, "scene": scene.to_dict()}
    return {"files": files, "record": record}


def build(args: BuildArgs) -> Manifest:
    w = DatasetWriter(args.out, NAME, SPEC.version, args.seed,
                      {"image_size": args.image_size, "counts": args.counts}, args.overwrite)
    n_variants: dict[str, int] = {}
    for split in SPLITS:
        records = w.put_items(partial(make_item, args.seed, split, args.image_size),
                              args.counts.get(split, 0), args.workers)
        n_variants[f"{split}_variants"] = sum(len(c["variants"]) for r in records for c in r["captions"])
        w.put_jsonl(f"{split}.jsonl", records)
    return w.finish({**{s: args.counts.get(s, 0) for s in SPLITS}, **n_variants})


def sheet(root: Path, n: int) -> list[SheetRow]:
    rows = []
    for r in read_jsonl(Path(root) / "test.jsonl")[:n]:
        lines = []
        for c in r["captions"][:4:2]:
            lines.append(f"+ {c['text']}")
            for v in c["variants"]:
                t, (s0, e0) = v["text"], v["spans"][0]
                lines.append(f"  - {v['kind']}: {t[:s0]}[{t[s0:e0]}]{t[e0:]}")
        rows.append(SheetRow([("image", decode_png(Path(root) / r["image"])),
                              ("layout", colour_layout(decode_png(Path(root) / r["layout"])))],
                             "\n".join(lines)))
    return rows


SPEC = DatasetSpec(
    name=NAME, version="1.0",
    description="Captions with one-word-false variants and character-span labels.",
    presets={
        "tiny": {"train": 6, "val": 3, "test": 4},
        "small": {"train": 800, "val": 100, "test": 200},
        "default": {"train": 4000, "val": 400, "test": 1000},
        "large": {"train": 40000, "val": 2000, "test": 5000},
    },
    build=build, sheet=sheet,
)
