"""ShapeNews (ViLBias, method card 5): headline-image pairs, neutral or biased, with the cue
that makes each biased one so, a simulated hybrid annotation, and a gold-checked test split.

- Text-cued items: loaded or framing wording (loaded adjectives, verbs, prefixes, suffixes)
  about the scene the image shows; `cue_spans` are the gold loaded words.
- Image-cued items: a headline drawn from exactly the neutral items' distribution, with an
  image that contradicts or sensationalises it: another shape (object), another number of
  objects (count), the two objects swapped (relation), another colour, or the object blown up
  from small to large (or shrunk); `inconsistent_spans` are the words the image contradicts.
  Text alone cannot tell these from neutral items; only comparing text and image can.
- Simulated hybrid annotation: three rule-based annotators vote: a careful one, a "text
  reader" who misses most image-cued bias, and a hasty one; `label` is the majority vote (what
  a model trains on), `true_label` the simulation's truth (only for measuring what the vote
  costs), `gold_checked` is True on the test split, whose gold is `true_label`.
- `counterfactuals`: other texts for the same image (the faithful description of what the image
  shows, the loaded and the neutral wording of the claim), for the text-reliance probe.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.data.render import render
from pipelines.data.scene import Scene, SceneObject, compose, jitter_rgb, make_object
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
from pipelines.data.vocab import COLOURS, COUNT_WORDS, PLURALS, SHAPES, SIZES, article

NAME = "bias"
SPLITS = ("train", "val", "test")
GOLD_SPLITS = ("test",)
CLASSES = {"neutral": 0.47, "loaded": 0.25, "inconsistent": 0.23, "loaded_inconsistent": 0.05}
IMAGE_CUES = ("object", "count", "relation", "colour", "size")
# (name, error rate on text-cued / neutral items, error rate on image-cued items)
ANNOTATORS = (("careful", 0.05, 0.08), ("text-reader", 0.08, 0.6), ("hasty", 0.25, 0.25))

LOADED_ADJ = ("sinister", "menacing", "pathetic", "helpless", "shady", "vile", "dangerous",
              "worthless", "cowardly", "heroic", "glorious", "noble")
NEUTRAL_ADJ = ("bright", "solid", "simple", "clear", "neat")  # evaluative-sounding, factual here
VERBS = {  # number -> (neutral, loaded); "alone" follows them in single-object headlines
    "singular": (("sits", "is", "appears", "stands"), ("lurks", "looms", "cowers", "skulks")),
    "plural": (("sit", "appear", "stand", "are"), ("lurk", "swarm", "loom", "skulk")),
}
PREFIXES = (("Photo: ", "Report: ", "Today: ", "Update: "),
            ("Outrage: ", "Shocking: ", "Scandal: ", "Disgrace: "))
SUFFIXES = ((", witnesses say", ", officials report", " today", " again"),
            (", a total disgrace", ", sparking fury", ", clearly a failure", " in a shameful display"))
RELATION_WORDS = {"left": "to the left of", "right": "to the right of", "above": "above",
                  "below": "below"}
INVERSE = {"left": "right", "right": "left", "above": "below", "below": "above"}


@dataclass(frozen=True)
class Claim:
    """What a headline says happened."""

    template: str  # relation | count | single
    colour: str
    shape: str
    size: str | None  # "small" | "large" when the headline names it
    count: int  # subject copies (1 unless template == "count")
    relation: str | None  # left | right | above | below (template == "relation")
    other: tuple[str, str] | None  # (colour, shape) of the second object


@dataclass(frozen=True)
class Wording:
    """Every word choice of a headline, neutral and loaded, so the same claim can be re-worded
    and a changed claim worded the same way."""

    prefix: int  # index into PREFIXES (-1: none)
    suffix: int  # index into SUFFIXES (-1: none)
    verb: int
    subject_adj: str | None  # neutral adjective or None
    loaded_adj: tuple[str, str]
    devices: frozenset[str]  # loaded devices used: subject_adj | other_adj | verb | prefix | suffix


def _claim(rng: np.random.Generator) -> Claim:
    template = str(rng.choice(["relation", "count", "single"], p=[0.45, 0.35, 0.2]))
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    colour, shape = combos[int(rng.integers(len(combos)))]
    size = str(rng.choice(["small", "large"])) if rng.uniform() < 0.5 else None
    other = None
    if template != "single":
        rest = [x for x in combos if x != (colour, shape)]
        other = rest[int(rng.integers(len(rest)))]
    count = int(rng.integers(2, 4)) if template == "count" else 1
    if template == "count" and size == "large":
        size = "small"  # room for up to four copies
    relation = str(rng.choice(list(RELATION_WORDS))) if template == "relation" else None
    return Claim(template, colour, shape, size, count, relation, other)


def _wording(rng: np.random.Generator, claim: Claim, loaded: bool) -> Wording:
    devices: frozenset[str] = frozenset()
    if loaded:
        options = ["subject_adj", "verb", "prefix", "suffix"] + (["other_adj"] if claim.other else [])
        k = int(rng.choice([1, 2], p=[0.6, 0.4]))
        devices = frozenset(str(d) for d in rng.choice(options, size=k, replace=False))
    return Wording(
        prefix=int(rng.integers(4)) if rng.uniform() < 0.3 or "prefix" in devices else -1,
        suffix=int(rng.integers(4)) if rng.uniform() < 0.25 or "suffix" in devices else -1,
        verb=int(rng.integers(len(VERBS["singular"][0]))),
        subject_adj=str(rng.choice(NEUTRAL_ADJ)) if rng.uniform() < 0.2 else None,
        loaded_adj=(str(rng.choice(LOADED_ADJ)), str(rng.choice(LOADED_ADJ))),
        devices=devices,
    )


Spans = list[list[int]]


def headline(claim: Claim, wording: Wording, loaded: bool) -> tuple[str, Spans, dict[str, list[int]]]:
    """Render a claim. Returns: (text, loaded-word spans, span of each content slot by name:
    count, size, colour, shape, relation, other_colour, other_shape)."""
    on = wording.devices if loaded else frozenset()
    segments: list[tuple[str, str]] = []  # (text, tag): "" | "loaded" | a slot name

    def add(text: str, tag: str = "") -> None:
        segments.append((text, tag))

    if wording.prefix >= 0:
        word = PREFIXES["prefix" in on][wording.prefix]
        add(word[:-2], "loaded" if "prefix" in on else "")
        add(word[-2:])
    adj = wording.loaded_adj[0] if "subject_adj" in on else wording.subject_adj
    words = [(adj, "loaded" if "subject_adj" in on else "")] if adj else []
    if claim.size:
        words.append((claim.size, "size"))
    words += [(claim.colour, "colour")]
    if claim.count > 1:
        add(COUNT_WORDS[claim.count], "count")
        add(" ")
    else:
        add(article(words[0][0]), "count")
        add(" ")
    for text, tag in words:
        add(text, tag)
        add(" ")
    add(PLURALS[claim.shape] if claim.count > 1 else claim.shape, "shape")
    verbs = VERBS["plural" if claim.count > 1 else "singular"]["verb" in on]
    add(" ")
    add(verbs[wording.verb % len(verbs)], "loaded" if "verb" in on else "")
    if claim.template == "single":
        add(" alone")
    else:
        assert claim.other is not None
        add(" ")
        if claim.template == "relation":
            assert claim.relation is not None
            add(RELATION_WORDS[claim.relation], "relation")
        else:
            add("next to")
        add(" ")
        other_adj = wording.loaded_adj[1] if "other_adj" in on else None
        add(article(other_adj or claim.other[0]))
        add(" ")
        if other_adj:
            add(other_adj, "loaded")
            add(" ")
        add(claim.other[0], "other_colour")
        add(" ")
        add(claim.other[1], "other_shape")
    if wording.suffix >= 0:
        word = SUFFIXES["suffix" in on][wording.suffix]
        lead = 2 if word.startswith(", ") else 1
        add(word[:lead])
        add(word[lead:], "loaded" if "suffix" in on else "")
    text, pos, spans, slots = "", 0, [], {}
    for seg, tag in segments:
        if tag == "loaded":
            spans.append([pos, pos + len(seg)])
        elif tag:
            slots[tag] = [pos, pos + len(seg)]
        text += seg
        pos += len(seg)
    return text[:1].upper() + text[1:], spans, slots


def _objects(rng: np.random.Generator, claim: Claim) -> list[SceneObject]:
    """The claimed scene's objects, subject copies first (object 0 is the subject)."""
    size = claim.size or str(rng.choice(["small", "medium"] if claim.count > 1 else list(SIZES)))
    objs = [make_object(rng, claim.colour, claim.shape, size) for _ in range(claim.count)]
    if claim.other:
        other_size = "small" if claim.count > 1 else str(rng.choice(["small", "medium"]))
        objs.append(make_object(rng, claim.other[0], claim.other[1], other_size))
    return objs


def _arrange(rng: np.random.Generator, objs: list[SceneObject], claim: Claim) -> Scene:
    """A scene of these objects where the claimed relation (subject vs other) holds."""
    for _ in range(40):
        scene = compose(rng, list(objs))
        if claim.relation is None or _holds(scene, claim.relation):
            return scene
    raise RuntimeError("could not arrange the claimed relation")


def _holds(scene: Scene, relation: str) -> bool:
    a, b = scene.objects[0], scene.objects[-1]
    return {
        "left": a.x + a.r <= b.x - b.r,
        "right": b.x + b.r <= a.x - a.r,
        "above": a.y + a.r <= b.y - b.r,
        "below": b.y + b.r <= a.y - a.r,
    }[relation]


def _contradict(rng: np.random.Generator, scene: Scene, claim: Claim, cue: str) -> tuple[Scene, Claim]:
    """The shown scene for an image cue, and the claim that would describe it faithfully."""
    n = claim.count
    subject, rest = list(scene.objects[:n]), list(scene.objects[n:])
    if cue == "relation":
        a, b = scene.objects[0], scene.objects[-1]
        objs = [replace(a, x=b.x, y=b.y), replace(b, x=a.x, y=a.y)]
        assert claim.relation is not None
        shown = Scene(tuple(objs), scene.relations, scene.background, scene.noise_seed)
        return _rescene(shown), replace(claim, relation=INVERSE[claim.relation])
    if cue == "object":
        shape = str(rng.choice([s for s in SHAPES if s != claim.shape and (claim.colour, s) != claim.other]))
        objs = [replace(o, shape=shape) for o in subject] + rest
        return _rescene(replace(scene, objects=tuple(objs))), replace(claim, shape=shape)
    if cue == "colour":
        colour = str(rng.choice([c for c in COLOURS
                                 if c != claim.colour and (c, claim.shape) != claim.other]))
        objs = [replace(o, colour=colour, rgb=jitter_rgb(rng, COLOURS[colour])) for o in subject] + rest
        return _rescene(replace(scene, objects=tuple(objs))), replace(claim, colour=colour)
    if cue == "size":
        assert claim.size is not None
        size = "large" if claim.size == "small" else "small"
        objs = [make_object(rng, o.colour, o.shape, size) for o in subject]
        objs = [replace(o, texture=s.texture, rgb=s.rgb) for o, s in zip(objs, subject, strict=True)]
        shown_claim = replace(claim, size=size)
        return _arrange(rng, objs + [make_object(rng, *o_c_s(o)) for o in rest], shown_claim), shown_claim
    # count: sensationalised (more copies) or contradicted (fewer) numbers
    m = n + 2 if n + 2 <= 4 else n - 2
    size = "small" if m > 2 else subject[0].size
    objs = [make_object(rng, claim.colour, claim.shape, size) for _ in range(m)]
    shown_claim = replace(
        claim, count=m, relation=None, template="count" if claim.other else "single",
        size=None if claim.size is None else size if size in ("small", "large") else claim.size,
    )
    others = [make_object(rng, *o_c_s(o)) for o in rest]
    return _arrange(rng, objs + others, shown_claim), shown_claim


def o_c_s(o: SceneObject) -> tuple[str, str, str]:
    return o.colour, o.shape, o.size


def _rescene(scene: Scene) -> Scene:
    from pipelines.data.scene import compute_relations

    return replace(scene, relations=compute_relations(scene.objects))


def _cue_for(rng: np.random.Generator, claim: Claim) -> str:
    usable = [c for c in IMAGE_CUES
              if (c != "relation" or claim.relation) and (c != "size" or claim.size)]
    return str(rng.choice(usable))


def _vote(rng: np.random.Generator, truth: int, image_cued: bool) -> list[int]:
    votes = []
    for _, text_error, image_error in ANNOTATORS:
        error = image_error if image_cued and truth else text_error
        votes.append(int(truth if rng.uniform() >= error else 1 - truth))
    return votes


def make_item(seed: int, split: str, size: int, index: int) -> dict[str, Any]:
    rng = item_rng(seed, NAME, split, index)
    kind = str(rng.choice(list(CLASSES), p=list(CLASSES.values())))
    loaded, inconsistent = "loaded" in kind, "inconsistent" in kind
    for _ in range(20):
        claim = _claim(rng)
        try:
            scene = _arrange(rng, _objects(rng, claim), claim)
            cue = _cue_for(rng, claim) if inconsistent else None
            shown, faithful = _contradict(rng, scene, claim, cue) if cue else (scene, claim)
            break
        except RuntimeError:
            continue
    else:
        raise RuntimeError(f"could not build bias item {split}/{index}")
    wording = _wording(rng, claim, loaded)
    text, cue_spans, slots = headline(claim, wording, loaded)
    contradicted = {"object": ["shape"], "colour": ["colour"], "count": ["count"],
                    "relation": ["relation"], "size": ["size"]}.get(cue or "", [])
    inconsistent_spans = [slots[s] for s in contradicted if s in slots]
    truth = int(loaded or inconsistent)
    votes = _vote(rng, truth, inconsistent and not loaded)
    reasons = []
    if loaded:
        reasons.append("loaded or framing words: " + ", ".join(repr(text[s:e]) for s, e in cue_spans))
    if cue:
        words = ", ".join(repr(text[s:e]) for s, e in inconsistent_spans)
        reasons.append(f"the image contradicts the text ({cue}: {words})")
    neutral_text = headline(claim, wording, False)[0]
    counterfactuals = [
        {"kind": "faithful", "text": headline(faithful, wording, False)[0]},
        {"kind": "loaded", "text": headline(claim, replace(wording, devices=wording.devices or
                                                          frozenset({"subject_adj"})), True)[0]},
        {"kind": "neutral", "text": neutral_text},
    ]
    stem = f"{split}/{index:06d}"
    record = {
        "id": stem, "image": f"images/{stem}.png", "caption": text,
        "label": int(sum(votes) >= 2), "true_label": truth, "votes": votes,
        "gold_checked": split in GOLD_SPLITS,
        "kind": kind, "cue": "both" if loaded and cue else "text" if loaded else "image" if cue else "none",
        "image_cue": cue, "loaded": loaded, "inconsistent": inconsistent,
        "cue_spans": cue_spans, "inconsistent_spans": inconsistent_spans,
        "rationale": "; ".join(reasons) or "neutral wording that matches the image",
        "counterfactuals": counterfactuals, "scene": shown.to_dict(),
    }
    return {"files": {record["image"]: encode_png(render(shown, size).image)}, "record": record}


def build(args: BuildArgs) -> Manifest:
    params = {"image_size": args.image_size, "counts": args.counts, "class_mix": CLASSES,
              "annotators": [list(a) for a in ANNOTATORS], "gold_splits": list(GOLD_SPLITS)}
    w = DatasetWriter(args.out, NAME, SPEC.version, args.seed, params, args.overwrite)
    counts: dict[str, int] = {}
    for split in SPLITS:
        records = w.put_items(partial(make_item, args.seed, split, args.image_size),
                              args.counts.get(split, 0), args.workers)
        counts[split] = w.put_jsonl(f"{split}.jsonl", records)
        counts[f"{split}_biased"] = sum(r["true_label"] for r in records)
        counts[f"{split}_vote_errors"] = sum(r["label"] != r["true_label"] for r in records)
    return w.finish(counts)


def sheet(root: Path, n: int) -> list[SheetRow]:
    return [SheetRow([("image", decode_png(Path(root) / r["image"]))],
                     f"{r['caption']}\nlabel: {'biased' if r['true_label'] else 'neutral'} "
                     f"({r['kind']}{', ' + r['image_cue'] if r['image_cue'] else ''}; votes {r['votes']})\n"
                     f"rationale: {r['rationale']}")
            for r in read_jsonl(Path(root) / "test.jsonl")[:n]]


SPEC = DatasetSpec(
    name=NAME, version="2.0",
    description="ShapeNews: neutral vs text-cued (loaded wording) / image-cued (contradicting image) "
                "headline-image pairs, gold spans, 3 simulated annotators, gold-checked test split.",
    presets={"tiny": {"train": 6, "val": 3, "test": 4}, "small": {"train": 600, "val": 100, "test": 200},
             "default": {"train": 3000, "val": 300, "test": 1000},
             "large": {"train": 30000, "val": 2000, "test": 5000}},
    build=build, sheet=sheet,
)
