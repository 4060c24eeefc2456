"""Misaligned caption variants: exactly one attribute, object, relation or count made false.

Each variant names the changed words as character spans of the variant text; a candidate
is kept only if the scene really contradicts it and only the slot's words changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.data.captions import Draft, Slot, count_matching, replace_slot, words
from pipelines.data.scene import Scene
from pipelines.data.vocab import COLOURS, SHAPES, SIZE_ORDER, TEXTURE_NOUNS, TEXTURES

# Coarse kind of each slot kind, as the issue and the scorer talk about them.
KIND_OF = {"colour": "attribute", "size": "attribute", "texture": "attribute",
           "shape": "object", "relation": "relation", "count": "count", "total": "count"}
FLIPS = {"left": ["right"], "right": ["left"], "above": ["below"], "below": ["above"],
         "bigger": ["smaller"], "larger": ["smaller"], "smaller": ["bigger", "larger"],
         "inside": ["outside"]}


@dataclass(frozen=True)
class Variant:
    text: str
    kind: str  # attribute | object | relation | count
    slot: str  # the slot kind changed: colour, size, texture, shape, relation, count, total
    original: str  # the canonical value replaced
    replacement: str
    spans: tuple[tuple[int, int], ...]  # changed characters in `text`, [start, end)


def _candidates(slot: Slot) -> list[str]:
    if slot.kind == "colour":
        return [c for c in COLOURS if c != slot.value]
    if slot.kind == "shape":
        return [s for s in SHAPES if s != slot.value]
    if slot.kind == "size":
        return [s for s in SIZE_ORDER if s != slot.value]
    if slot.kind == "texture":
        pool = list(TEXTURE_NOUNS) if slot.form == "noun" else list(TEXTURES)
        return [t for t in pool if t != slot.value]
    if slot.kind == "relation":
        return FLIPS.get(slot.value, [])
    if slot.kind in ("count", "total"):
        return [str(n) for n in (2, 3, 4) if str(n) != slot.value] if int(slot.value) >= 2 else []
    return []


def contradicted(draft: Draft, index: int, new: Slot, scene: Scene) -> bool:
    """Whether the scene makes the changed noun phrase (or relation / total) false."""
    if new.kind == "relation":
        return True  # relations are stored strictly, so the flipped word is false
    if new.kind == "total":
        return int(new.value) != len(scene.objects)
    slots = [p for k, p in enumerate(draft.pieces) if isinstance(p, Slot) and p.np == new.np and k != index]
    desc = {s.kind: s.value for s in slots if s.kind in ("colour", "shape", "size", "texture")}
    count = next((int(s.value) for s in slots if s.kind == "count"), 1)
    if new.kind == "count":
        count = int(new.value)
    else:
        desc[new.kind] = new.value
    found = count_matching(scene, desc)
    # A singular phrase claims at least one such object; a counted one claims exactly n.
    return found == 0 if count == 1 and new.kind != "count" else found != count


def _only_slot_changed(before: str, after: str, span: tuple[int, int]) -> bool:
    wa, wb = words(before), words(after)
    if len(wa) != len(wb):
        return False
    changed = {k for k, (x, y) in enumerate(zip(wa, wb, strict=True)) if x[2] != y[2]}
    in_span = {k for k, (s, e, _) in enumerate(wb) if s >= span[0] and e <= span[1]}
    return bool(changed) and changed == in_span


def make_variants(draft: Draft, scene: Scene, rng: np.random.Generator) -> list[Variant]:
    """At most one variant per coarse kind (attribute, object, relation, count).

    Args:
        draft: a caption draft that is true of `scene`.
        rng: picks which slot and which replacement.
    Returns:
        Variants, each with exactly one slot changed and that slot's span labelled.
    """
    original = draft.render().text
    by_kind: dict[str, list[int]] = {}
    for k, p in enumerate(draft.pieces):
        if isinstance(p, Slot) and p.kind in KIND_OF:
            by_kind.setdefault(KIND_OF[p.kind], []).append(k)
    out = []
    for kind in ("attribute", "object", "relation", "count"):
        indices = by_kind.get(kind, [])
        found = None
        for k in rng.permutation(len(indices)) if indices else []:
            index = indices[int(k)]
            slot = draft.pieces[index]
            assert isinstance(slot, Slot)
            cands = _candidates(slot)
            for c in rng.permutation(len(cands)) if cands else []:
                new = Slot(slot.kind, cands[int(c)], slot.np, slot.form)
                if not contradicted(draft, index, new, scene):
                    continue
                cap = replace_slot(draft, index, new).render()
                span = next((s, e) for sl, s, e in cap.slots if sl is new)
                if _only_slot_changed(original, cap.text, span):
                    found = Variant(cap.text, kind, slot.kind, slot.value, new.value, (span,))
                    break
            if found:
                break
        if found:
            out.append(found)
    return out
