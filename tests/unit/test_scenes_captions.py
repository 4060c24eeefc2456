"""Captions and misalignment variants: spans point at the right words, variants change exactly one."""

from __future__ import annotations

import difflib

import numpy as np

from pipelines.data.captions import caption_scene, draft_captions, surface, words
from pipelines.data.misalign import make_variants
from pipelines.data.scene import sample_scene
from pipelines.evaluate.tokens import word_labels


def _scenes(n: int, seed: int = 0):
    for i in range(n):
        yield sample_scene(np.random.default_rng([seed, i])), np.random.default_rng([seed + 1, i])


def test_captions_are_paraphrases_that_name_every_object() -> None:
    styles = set()
    for scene, rng in _scenes(60):
        caps = caption_scene(scene, rng)
        assert len(caps) == 5 and len({c.text for c in caps}) == 5
        styles |= {c.style for c in caps}
        short = caps[0].text.lower()
        for o in scene.objects:
            assert o.colour in short and o.shape in short
        for c in caps:
            for slot, s, e in c.slots:
                assert c.text[s:e].lower() == surface(slot).lower()
    assert styles == {"short", "detailed", "relational", "counting", "positional"}


def test_captions_vary_in_length_and_word_order() -> None:
    lengths, openings = [], set()
    for scene, rng in _scenes(60, seed=4):
        for c in caption_scene(scene, rng):
            lengths.append(len(words(c.text)))
            openings.add(" ".join(w for _, _, w in words(c.text)[:2]).lower())
    assert min(lengths) <= 3 and max(lengths) >= 20
    assert len(openings) > 15


def test_variant_spans_cover_exactly_the_changed_words() -> None:
    kinds = set()
    n_variants = 0
    for scene, rng in _scenes(150, seed=7):
        for draft in draft_captions(scene, rng):
            original = draft.render().text
            for v in make_variants(draft, scene, rng):
                n_variants += 1
                kinds.add(v.kind)
                a = [w for _, _, w in words(original)]
                b = words(v.text)
                changed = set()
                sm = difflib.SequenceMatcher(a=a, b=[w for _, _, w in b], autojunk=False)
                for tag, _, _, j1, j2 in sm.get_opcodes():
                    if tag != "equal":
                        changed |= set(range(j1, j2))
                labelled = {k for k, lab in enumerate(word_labels(v.text, list(v.spans))) if lab}
                assert changed and changed == labelled, (original, v)
                assert v.replacement != v.original
    assert kinds == {"attribute", "object", "relation", "count"}
    assert n_variants > 1000


def test_variants_are_false_of_the_scene() -> None:
    """A colour/shape variant of a one-object scene names something that is not there."""
    for scene, rng in _scenes(80, seed=9):
        if len(scene.objects) != 1:
            continue
        o = scene.objects[0]
        for draft in draft_captions(scene, rng):
            for v in make_variants(draft, scene, rng):
                if v.slot == "colour":
                    assert v.replacement != o.colour
                if v.slot == "shape":
                    assert v.replacement != o.shape
                if v.slot == "total":
                    assert int(v.replacement) != 1
