"""Caption writing: several templated paraphrases of a scene, with every content word tracked.

A caption is drafted as pieces (literal text, `Slot`s for content words, `ART` for a/an);
rendering gives the text and each slot's character span, which is what misalignment
variants and word-level labels are built from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from pipelines.data.scene import Scene, SceneObject
from pipelines.data.vocab import COUNT_WORDS, PLURALS, TEXTURE_NOUNS, article

ART = object()  # placeholder for "a"/"an", decided by the word that follows
Piece = object  # str | Slot | ART

POSITIONS = {
    (0, 0): "in the top left corner", (1, 0): "at the top", (2, 0): "in the top right corner",
    (0, 1): "on the left", (1, 1): "in the centre", (2, 1): "on the right",
    (0, 2): "in the bottom left corner", (1, 2): "at the bottom", (2, 2): "in the bottom right corner",
}
# (word, subject-is-first) ways to say each stored relation; converses swap the roles.
REL_WORDS: dict[str, list[tuple[str, bool]]] = {
    "left_of": [("left", True), ("right", False)],
    "above": [("above", True), ("below", False)],
    "bigger_than": [("bigger", True), ("larger", True), ("smaller", False)],
    "inside": [("inside", True)],
    "overlapping": [("overlapping", True), ("overlapping", False)],
}
REL_FRAME: dict[str, tuple[str, str]] = {
    "left": ("to the ", " of "), "right": ("to the ", " of "), "bigger": ("", " than "),
    "larger": ("", " than "), "smaller": ("", " than "),
}
WORD_RE = re.compile(r"[A-Za-z0-9']+")


@dataclass(frozen=True)
class Slot:
    kind: str  # colour | shape | size | texture | count | total | relation | tone | position
    value: str  # canonical value: "red", "circle", "2", "left", "top left corner", ...
    np: int = -1  # which noun phrase of the caption it belongs to (-1: none)
    form: str = ""  # shape: "sg" | "pl"; texture: "adj" | "noun"


@dataclass(frozen=True)
class Caption:
    text: str
    style: str  # short | detailed | relational | counting | positional
    slots: tuple[tuple[Slot, int, int], ...]  # each content slot with its [start, end) span


@dataclass(frozen=True)
class Draft:
    pieces: tuple[Piece, ...]
    style: str

    def render(self) -> Caption:
        return render_pieces(self.pieces, self.style)


def surface(slot: Slot) -> str:
    """The words a slot renders as."""
    if slot.kind == "shape":
        return PLURALS.get(slot.value, slot.value + "s") if slot.form == "pl" else slot.value
    if slot.kind == "texture" and slot.form == "noun":
        return TEXTURE_NOUNS[slot.value]
    if slot.kind in ("count", "total"):
        return COUNT_WORDS[int(slot.value)]
    return slot.value


def render_pieces(pieces: tuple[Piece, ...], style: str) -> Caption:
    """Concatenate pieces, resolve articles, capitalise, and record slot spans."""
    texts = [surface(p) if isinstance(p, Slot) else ("" if p is ART else str(p)) for p in pieces]
    for k, p in enumerate(pieces):
        if p is ART:
            nxt = next((t.strip() for t in texts[k + 1 :] if t.strip()), "x")
            texts[k] = article(nxt)
    out, spans, pos = [], [], 0
    for p, t in zip(pieces, texts, strict=True):
        if isinstance(p, Slot):
            spans.append((p, pos, pos + len(t)))
        out.append(t)
        pos += len(t)
    text = "".join(out)
    return Caption(text[:1].upper() + text[1:], style, tuple(spans))


def words(text: str) -> list[tuple[int, int, str]]:
    """Word tokens of `text` as (start, end, word)."""
    return [(m.start(), m.end(), m.group()) for m in WORD_RE.finditer(text)]


def position_of(obj: SceneObject) -> str:
    return POSITIONS[(min(int(obj.x * 3), 2), min(int(obj.y * 3), 2))]


def count_matching(scene: Scene, desc: dict[str, str]) -> int:
    """How many objects have every attribute in `desc` (keys: colour/shape/size/texture)."""
    return sum(all(getattr(o, k) == v for k, v in desc.items()) for o in scene.objects)


def noun_phrase(objs: list[SceneObject], attrs: tuple[str, ...], det: str, order: str,
                 np_id: int) -> list[Piece]:
    """Pieces naming a group of identically described objects.

    Args:
        attrs: which of size / texture / colour to say (shape is always said).
        det: "a" (indefinite; a count when the group has several) or "the".
        order: "pre" (adjectives first), "with" (texture as "with stripes") or "that".
    """
    o, n = objs[0], len(objs)
    plural = n > 1
    head: list[Piece] = []
    if plural:
        count = Slot("count", str(n), np_id)
        head = [count, " "] if det == "a" else ["the ", count, " "]
    else:
        head = [ART, " "] if det == "a" else ["the "]
    shape = Slot("shape", o.shape, np_id, "pl" if plural else "sg")
    a = {k: Slot(k, getattr(o, k), np_id, "adj") for k in attrs}
    if order == "with" and "texture" in a and o.texture in TEXTURE_NOUNS:
        pre = [x for k in ("size", "colour") if k in a for x in (a[k], " ")]
        return [*head, *pre, shape, " with ", Slot("texture", o.texture, np_id, "noun")]
    if order == "that" and "size" in a:
        pre = [a["colour"], " "] if "colour" in a else []
        tail: list[Piece] = [" that ", "are " if plural else "is ", a["size"]]
        if "texture" in a:
            tail += [" and ", a["texture"]]
        return [*head, *pre, shape, *tail]
    pre = [x for k in ("size", "texture", "colour") if k in a for x in (a[k], " ")]
    return [*head, *pre, shape]


def _groups(scene: Scene, attrs: tuple[str, ...]) -> list[list[SceneObject]]:
    groups: dict[tuple[str, ...], list[SceneObject]] = {}
    for o in scene.objects:
        groups.setdefault((*(getattr(o, k) for k in attrs), o.shape), []).append(o)
    return list(groups.values())


def _join(parts: list[list[Piece]], rng: np.random.Generator) -> list[Piece]:
    out: list[Piece] = []
    for k, part in enumerate(parts):
        if k:
            out.append(" and " if k == len(parts) - 1 else str(rng.choice([", ", ", ", " and "])))
        out.extend(part)
    return out


def _listing(scene: Scene, rng: np.random.Generator, attrs: tuple[str, ...], order: str) -> list[Piece]:
    groups = _groups(scene, attrs)
    return _join([noun_phrase(g, attrs, "a", order, k) for k, g in enumerate(groups)], rng)


def _short(scene: Scene, rng: np.random.Generator) -> list[Piece]:
    prefix = str(rng.choice(["", "", "an image of ", "a picture of ", "a render showing "]))
    return [prefix, *_listing(scene, rng, ("colour",), "pre")]


def _detailed(scene: Scene, rng: np.random.Generator) -> list[Piece]:
    attrs = ("size", "texture", "colour") if rng.uniform() < 0.6 else ("size", "colour")
    order = str(rng.choice(["pre", "pre", "with", "that"]))
    body = _listing(scene, rng, attrs, order)
    tone = Slot("tone", scene.background.tone)
    ending = [[" on ", ART, " ", tone, " background"], [" against ", ART, " ", tone, " backdrop"], []]
    return [*body, *ending[int(rng.integers(3))]]


def _unique_attrs(scene: Scene, i: int, rng: np.random.Generator) -> tuple[str, ...] | None:
    """The fewest attributes (beyond shape) that single out object i, or None if none do."""
    o = scene.objects[i]
    options = [("colour",), ("colour", "size"), ("size", "texture", "colour")]
    if rng.uniform() < 0.3:
        options = options[1:]
    for attrs in options:
        desc = {k: getattr(o, k) for k in (*attrs, "shape")}
        if count_matching(scene, desc) == 1:
            return attrs
    return None


def _relational(scene: Scene, rng: np.random.Generator) -> list[Piece] | None:
    usable = []
    for rel in scene.relations:
        sa, oa = _unique_attrs(scene, rel.subject, rng), _unique_attrs(scene, rel.object, rng)
        if sa is not None and oa is not None:
            usable.append((rel, sa, oa))
    if not usable:
        return None
    picks = rng.permutation(len(usable))[: int(rng.integers(1, 3))]
    clauses: list[list[Piece]] = []
    for c, k in enumerate(picks):
        rel, sa, oa = usable[int(k)]
        word, forward = REL_WORDS[rel.predicate][int(rng.integers(len(REL_WORDS[rel.predicate])))]
        (si, s_attrs), (oi, o_attrs) = ((rel.subject, sa), (rel.object, oa))
        if not forward:
            (si, s_attrs), (oi, o_attrs) = (oi, o_attrs), (si, s_attrs)
        order = str(rng.choice(["pre", "pre", "with"]))
        # Fronting ("above the X there is a Y") reads naturally only for spatial words.
        fronted = word in ("left", "right", "above", "below") and rng.uniform() < 0.5
        det = "a" if fronted else str(rng.choice(["a", "the"]))
        subj = noun_phrase([scene.objects[si]], s_attrs, det, order, 2 * c)
        obj = noun_phrase([scene.objects[oi]], o_attrs, "the", "pre", 2 * c + 1)
        before, after = REL_FRAME.get(word, ("", " "))
        rel_slot = Slot("relation", word)
        if fronted:
            clauses.append([before, rel_slot, after, *obj, " there is ", *subj])
        else:
            clauses.append([*subj, " is ", before, rel_slot, after, *obj])
    return _join(clauses, rng) if len(clauses) == 1 else [*clauses[0], "; ", *clauses[1]]


def relational_draft(scene: Scene, rng: np.random.Generator) -> Draft | None:
    """One relational caption of `scene` (one or two clauses, objects named by whatever tells
    them apart, spatial words fronted half the time), or None when no relation is nameable."""
    pieces = _relational(scene, rng)
    return Draft(tuple(pieces), "relational") if pieces else None


def _counting(scene: Scene, rng: np.random.Generator) -> list[Piece]:
    n = len(scene.objects)
    body = _listing(scene, rng, ("colour",) if rng.uniform() < 0.5 else ("size", "colour"), "pre")
    if n == 1:
        return [str(rng.choice(["a single shape: ", "just one object, "])), *body]
    total = Slot("total", str(n))
    frames = [["there are ", total, " shapes: "], [total, " objects: "],
              ["exactly ", total, " shapes, namely "]]
    return [*frames[int(rng.integers(len(frames)))], *body]


def _positional(scene: Scene, rng: np.random.Generator) -> list[Piece]:
    parts = []
    for k, o in enumerate(scene.objects):
        np_ = noun_phrase([o], ("colour",), "a", "pre", k)
        parts.append([*np_, " ", Slot("position", position_of(o))])
    return _join(parts, rng)


STYLES = ("short", "detailed", "relational", "counting", "positional")


def draft_captions(scene: Scene, rng: np.random.Generator) -> list[Draft]:
    """One draft per style (relational falls back to detailed when nothing is nameable)."""
    drafts = [Draft(tuple(_short(scene, rng)), "short"), Draft(tuple(_detailed(scene, rng)), "detailed")]
    rel = _relational(scene, rng)
    drafts.append(Draft(tuple(rel), "relational") if rel else Draft(tuple(_detailed(scene, rng)), "detailed"))
    drafts.append(Draft(tuple(_counting(scene, rng)), "counting"))
    drafts.append(Draft(tuple(_positional(scene, rng)), "positional"))
    return drafts


def caption_scene(scene: Scene, rng: np.random.Generator) -> list[Caption]:
    """Several paraphrases of `scene`, from a short list to relational sentences."""
    return [d.render() for d in draft_captions(scene, rng)]


def noun_phrase_span(pieces: tuple[Piece, ...], np_id: int) -> tuple[int, int]:
    """[start, end) of noun phrase `np_id` in `pieces`: its determiner through its last slot."""
    at = [k for k, p in enumerate(pieces) if isinstance(p, Slot) and p.np == np_id]
    if not at:
        raise ValueError(f"no noun phrase {np_id} in the draft")
    start = at[0]
    if start >= 2 and pieces[start - 2] is ART and pieces[start - 1] == " ":
        start -= 2
    elif start >= 1 and pieces[start - 1] == "the ":
        start -= 1
    return start, at[-1] + 1


def swap_noun_phrases(draft: Draft, a: int, b: int) -> Draft:
    """`draft` with noun phrases `a` and `b` trading places, determiners included ("a red circle
    is above the blue square" -> "the blue square is above a red circle")."""
    p = draft.pieces
    (s1, e1), (s2, e2) = sorted((noun_phrase_span(p, a), noun_phrase_span(p, b)))
    return replace(draft, pieces=p[:s1] + p[s2:e2] + p[e1:s2] + p[s1:e1] + p[e2:])


def replace_slot(draft: Draft, index: int, new: Slot) -> Draft:
    """`draft` with the piece at `index` (a Slot) replaced."""
    pieces = list(draft.pieces)
    pieces[index] = new
    return replace(draft, pieces=tuple(pieces))
