"""Relation probes: short sentences that state how two objects of a scene stand to each other,
each with foils that use the same words and are false. Training asks the pooled image to pick the
probe (`--relations`); the encoder suite measures how often it does on held-out scenes, per kind
of relation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.data.captions import (
    REL_WORDS,
    Slot,
    relational_draft,
    replace_slot,
    swap_noun_phrases,
)
from pipelines.data.misalign import FLIPS
from pipelines.data.scene import Scene
from pipelines.data.store import read_jsonl
from pipelines.data.vocab import article

# How a probe is worded: "subject" puts the subject first ("The red circle is above the blue
# square"); "fronted" puts the relation first ("Above the blue square there is a red circle"),
# as the caption grammar does for spatial words, so only left_of and above are fronted.
PROBE_FRAMES = ("subject", "fronted")
FRONTED = ("left_of", "above")
# caption_probes' frame: the caption grammar's own relational sentences.
CAPTION_FRAME = "caption"
# The scene relation each caption relation word states ("smaller" -> bigger_than).
PREDICATE_OF = {word: pred for pred, words in REL_WORDS.items() for word, _ in words}


@dataclass(frozen=True)
class Probe:
    text: str
    foils: tuple[str, ...]  # the converse word; the two objects swapped
    predicate: str  # the scene relation it states: left_of | above | bigger_than
    frame: str = "subject"  # one of PROBE_FRAMES, or CAPTION_FRAME (training only)


# Relations a probe may state, each as (word when the stored subject comes first, its converse)
# with the words around it: "the red circle is to the left of the blue square".
PROBE_WORDS: dict[str, tuple[tuple[str, str], str, str]] = {
    "left_of": (("left", "right"), "to the ", " of "),
    "above": (("above", "below"), "", " "),
    "bigger_than": (("bigger", "smaller"), "", " than "),
}


def relation_probes(
    scene: Scene, held: frozenset, frames: tuple[str, ...] = ("subject",)
) -> tuple[Probe, ...]:
    """Every spatial or size relation between two objects the scene names by colour and shape
    alone, stated both ways ("The red circle is above the blue square", "The blue square is below
    the red circle"), each with its two foils: the converse word ("... is below ...") and the
    objects swapped ("The blue square is above the red circle"). A foil has the caption's words,
    one changed or two reordered, so only where the objects are tells them apart: what the
    relation term (`--relations`) asks of the pooled image. Blobs, held-out colour-shape pairs and
    objects sharing their colour and shape with another are never named. Each frame of `frames`
    (PROBE_FRAMES) words every relation it can; the probes come frame by frame."""
    unknown = set(frames) - set(PROBE_FRAMES)
    if unknown:
        raise ValueError(f"unknown probe frame(s) {sorted(unknown)}; known: {PROBE_FRAMES}")
    names = [f"{o.colour} {o.shape}" for o in scene.objects]
    nameable = [
        o.shape != "blob" and (o.colour, o.shape) not in held and names.count(names[i]) == 1
        for i, o in enumerate(scene.objects)
    ]
    stated = [
        rel
        for rel in scene.relations
        if rel.predicate in PROBE_WORDS and nameable[rel.subject] and nameable[rel.object]
    ]
    probes = []
    for frame in frames:
        for rel in stated:
            if frame == "fronted" and rel.predicate not in FRONTED:
                continue
            (word, converse), before, after = PROBE_WORDS[rel.predicate]
            s, o = rel.subject, rel.object
            for a, w, b, other in ((s, word, o, converse), (o, converse, s, word)):
                say = [_say(frame, names[x], f"{before}{v}{after}", names[y])
                       for x, v, y in ((a, w, b), (a, other, b), (b, w, a))]  # fmt: skip
                probes.append(Probe(say[0], (say[1], say[2]), rel.predicate, frame))
    return tuple(probes)


def _say(frame: str, subject: str, relation: str, obj: str) -> str:
    if frame == "subject":
        return f"The {subject} is {relation}the {obj}"
    fronted = f"{relation}the {obj} there is {article(subject)} {subject}"
    return fronted[0].upper() + fronted[1:]


def caption_probes(
    scene: Scene, rng: np.random.Generator, count: int, swaps: bool = False
) -> tuple[Probe, ...]:
    """Up to `count` relational captions of `scene` in the caption grammar, each with its
    relation words flipped as foils ("a large red circle is to the left of the striped square" vs
    "... to the right of ..."), one foil per relation the caption states (so one or two).

    `relation_probes` name two objects by colour and shape in one clause; the captions, and so
    the scorer's relation foils, name them by size, texture or colour, front spatial words and
    join two clauses. These probes carry the relation term to that wording. Relations with no
    converse word (overlapping) are not flipped; a caption left with no foil is dropped, and so
    are repeats. Drawn from `rng` alone.

    With `swaps`, the foils are instead one clause's word flipped and the same clause with its two
    objects trading places ("the striped square is to the left of a large red circle"), as
    `relation_probes`' two foils: a word flip alone can be told apart without knowing which object
    stands where."""
    probes: dict[str, Probe] = {}
    for _ in range(count):
        draft = relational_draft(scene, rng)
        if draft is None:  # no relation of the scene is nameable: no draft ever will be
            break
        # the c-th relation slot belongs to clause c, whose noun phrases are 2c and 2c + 1
        slots = [(k, p) for k, p in enumerate(draft.pieces) if isinstance(p, Slot)]
        relations = [(k, p.value) for k, p in slots if p.kind == "relation"]
        clauses = [(k, c, word) for c, (k, word) in enumerate(relations) if word in FLIPS]
        if swaps and clauses:
            clauses = [clauses[int(rng.integers(len(clauses)))]]
        foils, predicate = [], ""
        for k, c, word in clauses:
            flip = FLIPS[word][int(rng.integers(len(FLIPS[word])))]
            foils.append(replace_slot(draft, k, Slot("relation", flip)).render().text)
            if swaps:
                foils.append(swap_noun_phrases(draft, 2 * c, 2 * c + 1).render().text)
            predicate = predicate or PREDICATE_OF[word]
        text = draft.render().text
        if foils and text not in probes:
            probes[text] = Probe(text, tuple(foils), predicate, CAPTION_FRAME)
    return tuple(probes.values())


@dataclass(frozen=True)
class RelationProbes:
    """Every probe of a split's scenes, with the image it is true of."""

    image: np.ndarray  # (P,) index into the split's images (load_retrieval's order)
    probes: tuple[Probe, ...]

    def __len__(self) -> int:
        return len(self.probes)


def load_relation_probes(
    root: Path, split: str, limit: int = 0, frames: tuple[str, ...] = PROBE_FRAMES
) -> RelationProbes:
    """The probes of a `retrieval` split's scenes in every frame of `frames` (no colour-shape pair
    is held out: these scenes are measured, not trained on)."""
    recs = read_jsonl(Path(root) / f"{split}.jsonl")
    recs = recs[:limit] if limit > 0 else recs
    image, probes = [], []
    for i, r in enumerate(recs):
        for probe in relation_probes(Scene.from_dict(r["scene"]), frozenset(), frames):
            image.append(i)
            probes.append(probe)
    return RelationProbes(np.array(image, dtype=np.int64), tuple(probes))
