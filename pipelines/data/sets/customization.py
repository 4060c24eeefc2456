"""Customization concepts (for DECOR): a novel object - a one-off shape and pattern named by a
pseudo-word token - with reference images, and prompts placing it in new contexts, each with
a rendered target image."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from concord.media import colour_layout
from pipelines.data.captions import position_of
from pipelines.data.names import pseudo_words
from pipelines.data.render import render
from pipelines.data.scene import (
    Scene,
    SceneObject,
    compose,
    jitter_rgb,
    make_object,
    random_blob_params,
    sample_background,
)
from pipelines.data.sets import BuildArgs, DatasetSpec
from pipelines.data.sheet import SheetRow
from pipelines.data.store import (
    DatasetWriter,
    Manifest,
    decode_png,
    item_rng,
    read_jsonl,
)
from pipelines.data.vocab import COLOURS, NOVEL_SHAPE, NOVEL_TEXTURES, SHAPES

NAME = "customization"


def _concept_object(rng: np.random.Generator, c: dict[str, Any], size: str | None = None) -> SceneObject:
    return make_object(rng, c["colour"], NOVEL_SHAPE, size or str(rng.choice(["medium", "large"])),
                       c["texture"], tuple(c["shape_params"]))


def _with_relation(rng: np.random.Generator, objs: list[SceneObject], predicate: str) -> Scene:
    """A scene where relation (0, predicate, 1) holds; retried until it does."""
    for _ in range(200):
        scene = compose(rng, objs)
        if any(r.subject == 0 and r.predicate == predicate and r.object == 1 for r in scene.relations):
            return scene
    raise RuntimeError(f"could not place a {predicate} pair")


def _prompts(rng: np.random.Generator, c: dict[str, Any]) -> list[tuple[str, str, Scene]]:
    """(kind, text, target scene) prompts putting concept `c` in new contexts."""
    tok = c["token"]
    other_c = str(rng.choice([k for k in COLOURS if k != c["colour"]]))
    other_s = str(rng.choice(SHAPES))
    other = make_object(rng, other_c, other_s, "medium")
    new_colour = str(rng.choice([k for k in COLOURS if k != c["colour"]]))
    solo = compose(rng, [_concept_object(rng, c)])
    bg = sample_background(rng)
    small = compose(rng, [_concept_object(rng, c, "small")])
    recoloured = compose(rng, [replace(_concept_object(rng, c), colour=new_colour,
                                       rgb=jitter_rgb(rng, COLOURS[new_colour]))])
    two = compose(rng, [_concept_object(rng, c, "medium"), _concept_object(rng, c, "small")])
    return [
        ("identity", f"a photo of a {tok}", solo),
        ("background", f"a {tok} on a {bg.tone} background", replace(solo, background=bg)),
        ("relation", f"a {tok} to the left of a {other_c} {other_s}",
         _with_relation(rng, [_concept_object(rng, c, "medium"), other], "left_of")),
        ("relation", f"a {other_c} {other_s} above a {tok}",
         _with_relation(rng, [other, _concept_object(rng, c, "medium")], "above")),
        ("position", f"a small {tok} {position_of(small.objects[0])}", small),
        ("attribute", f"a {new_colour} {tok}", recoloured),
        ("count", f"two {tok}{'es' if tok.endswith(('s', 'x', 'sh')) else 's'}", two),
    ]


def build(args: BuildArgs) -> Manifest:
    n, n_refs = args.counts["concepts"], int(args.option("references", 5))
    if not 3 <= n_refs <= 5:
        raise ValueError(f"references must be 3-5, got {n_refs}")
    w = DatasetWriter(args.out, NAME, SPEC.version, args.seed,
                      {"image_size": args.image_size, "counts": args.counts, "references": n_refs},
                      args.overwrite)
    tokens = pseudo_words(item_rng(args.seed, NAME, "tokens", 0), n)
    records, n_prompts = [], 0
    for k, tok in enumerate(tokens):
        rng = item_rng(args.seed, NAME, "concept", k)
        c = {"token": tok, "colour": str(rng.choice(list(COLOURS))),
             "texture": str(rng.choice(NOVEL_TEXTURES)), "shape_params": list(random_blob_params(rng))}
        refs = []
        for j in range(n_refs):
            rel = w.put_png(f"concepts/{tok}/reference_{j}.png",
                            render(compose(rng, [_concept_object(rng, c)]), args.image_size).image)
            refs.append(rel)
        prompts = []
        for j, (kind, text, scene) in enumerate(_prompts(rng, c)):
            out = render(scene, args.image_size)
            prompts.append({"kind": kind, "text": text, "scene": scene.to_dict(),
                            "image": w.put_png(f"concepts/{tok}/prompt_{j}.png", out.image),
                            "layout": w.put_png(f"concepts/{tok}/prompt_{j}_layout.png", out.layout)})
        n_prompts += len(prompts)
        records.append({**c, "references": refs, "prompts": prompts})
    w.put_jsonl("concepts.jsonl", records)
    return w.finish({"concepts": n, "references": n * n_refs, "prompts": n_prompts})


def sheet(root: Path, n: int) -> list[SheetRow]:
    rows = []
    for c in read_jsonl(Path(root) / "concepts.jsonl")[: max(1, n // 2)]:
        refs = [(f"ref {j}", decode_png(Path(root) / p)) for j, p in enumerate(c["references"][:3])]
        rows.append(SheetRow(refs, f"concept token: {c['token']} ({c['colour']}, {c['texture']})\n"
                                   "reference images, left"))
        for p in c["prompts"][1:6:2]:
            rows.append(SheetRow([("target", decode_png(Path(root) / p["image"])),
                                  ("layout", colour_layout(decode_png(Path(root) / p["layout"])))],
                                 f"{p['kind']}: {p['text']}"))
    return rows[:n]


SPEC = DatasetSpec(
    name=NAME, version="1.0",
    description="Novel concepts with 3-5 reference images and recontextualising prompts.",
    presets={"tiny": {"concepts": 2}, "small": {"concepts": 4}, "default": {"concepts": 8},
             "large": {"concepts": 32}},
    build=build, sheet=sheet, options={"references": 5},
)
