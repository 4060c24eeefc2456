"""Biased / neutral image-caption pairs (for ViLBias): neutral descriptions, loaded or
framing language (cue words labelled), and captions the image contradicts, with labels
and a templated rationale."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.data.render import render
from pipelines.data.scene import SceneObject, sample_scene
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
from pipelines.data.vocab import COLOURS, article

NAME = "bias"
SPLITS = ("train", "val", "test")
LOADED_ADJ = ("sinister", "menacing", "pathetic", "helpless", "shady", "glorious", "vile", "heroic",
              "dangerous", "worthless")
LOADED_VERB = ("bullies", "menaces", "lords over", "cowers beside", "invades the space of", "humiliates")
NEUTRAL_VERB = ("is next to", "sits beside", "appears with", "is shown near")
# Adjectives that sound evaluative but are factual here, so "adjective present" is no shortcut.
NEUTRAL_ADJ = ("bright", "solid", "simple", "clear")
CLASSES = {"neutral": 0.45, "loaded": 0.25, "inconsistent": 0.15, "loaded_inconsistent": 0.15}

Segment = tuple[str, str]  # (text, tag): tag "" | "loaded" | "inconsistent"


def _np(rng: np.random.Generator, o: SceneObject, loaded: bool, wrong_colour: str | None) -> list[Segment]:
    adj: list[Segment] = []
    if loaded:
        adj = [(str(rng.choice(LOADED_ADJ)), "loaded"), (" ", "")]
    elif rng.uniform() < 0.3:
        adj = [(str(rng.choice(NEUTRAL_ADJ)), ""), (" ", "")]
    colour: Segment = (wrong_colour, "inconsistent") if wrong_colour else (o.colour, "")
    first = (adj[0][0] if adj else colour[0])
    return [(article(first) + " ", ""), *adj, colour, (" " + o.shape, "")]


def _caption(rng: np.random.Generator, objs: tuple[SceneObject, ...], loaded: bool,
             inconsistent: bool) -> list[Segment]:
    present = {(o.colour, o.shape) for o in objs}
    wrong = None
    if inconsistent:
        o = objs[0]
        wrong = str(rng.choice([c for c in COLOURS if (c, o.shape) not in present]))
    a = _np(rng, objs[0], loaded, wrong)
    if len(objs) == 1:
        tail = [(" stands alone, ", ""), ("clearly a failure", "loaded")] if loaded else [(" on its own", "")]
        return [*a, *tail]
    b = _np(rng, objs[1], loaded and rng.uniform() < 0.5, None)
    verb: Segment = ((str(rng.choice(LOADED_VERB)), "loaded") if loaded
                     else (str(rng.choice(NEUTRAL_VERB)), ""))
    return [*a, (" ", ""), verb, (" ", ""), *b]


def make_item(seed: int, split: str, size: int, index: int) -> dict[str, Any]:
    rng = item_rng(seed, NAME, split, index)
    scene = sample_scene(rng, n_objects=int(rng.integers(1, 4)), p_inside=0.0)
    kind = str(rng.choice(list(CLASSES), p=list(CLASSES.values())))
    loaded, inconsistent = "loaded" in kind, "inconsistent" in kind
    segments = _caption(rng, scene.objects, loaded, inconsistent)
    text, spans, pos = "", {"loaded": [], "inconsistent": []}, 0
    for seg, tag in segments:
        if tag:
            spans[tag].append([pos, pos + len(seg)])
        text += seg
        pos += len(seg)
    text = text[:1].upper() + text[1:]
    reasons = []
    if loaded:
        reasons.append("loaded words frame the shapes emotionally: "
                       + ", ".join(repr(text[s:e]) for s, e in spans["loaded"]))
    if inconsistent:
        s, e = spans["inconsistent"][0]
        reasons.append(f"the caption says {text[s:e]!r} but the image shows a {scene.objects[0].colour} "
                       f"{scene.objects[0].shape}")
    stem = f"{split}/{index:06d}"
    record = {"id": stem, "image": f"images/{stem}.png", "caption": text,
              "label": int(loaded or inconsistent), "kind": kind,
              "loaded": loaded, "inconsistent": inconsistent,
              "cue_spans": spans["loaded"], "inconsistent_spans": spans["inconsistent"],
              "rationale": "; ".join(reasons) or "neutral wording that matches the image",
              "scene": scene.to_dict()}
    return {"files": {record["image"]: encode_png(render(scene, size).image)}, "record": record}


def build(args: BuildArgs) -> Manifest:
    w = DatasetWriter(args.out, NAME, SPEC.version, args.seed,
                      {"image_size": args.image_size, "counts": args.counts, "class_mix": CLASSES},
                      args.overwrite)
    counts: dict[str, int] = {}
    for split in SPLITS:
        records = w.put_items(partial(make_item, args.seed, split, args.image_size),
                              args.counts.get(split, 0), args.workers)
        counts[split] = w.put_jsonl(f"{split}.jsonl", records)
        counts[f"{split}_biased"] = sum(r["label"] for r in records)
    return w.finish(counts)


def sheet(root: Path, n: int) -> list[SheetRow]:
    return [SheetRow([("image", decode_png(Path(root) / r["image"]))],
                     f"{r['caption']}\nlabel: {'biased' if r['label'] else 'neutral'} ({r['kind']})\n"
                     f"rationale: {r['rationale']}")
            for r in read_jsonl(Path(root) / "test.jsonl")[:n]]


SPEC = DatasetSpec(
    name=NAME, version="1.0",
    description="Neutral vs loaded / inconsistent image-caption pairs with cue spans and rationale.",
    presets={"tiny": {"train": 6, "val": 3, "test": 4}, "small": {"train": 600, "val": 100, "test": 200},
             "default": {"train": 3000, "val": 300, "test": 1000},
             "large": {"train": 30000, "val": 2000, "test": 5000}},
    build=build, sheet=sheet,
)
