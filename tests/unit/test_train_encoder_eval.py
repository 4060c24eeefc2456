"""Encoder evaluation functions on hand-built similarity cases (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from concord.models.dual_encoder import Encoded
from pipelines.encoder.evaluate import (
    Scores,
    binding_pair_accuracy,
    filip_scores,
    global_scores,
    retrieval,
)
from pipelines.encoder.suite import _chance_r, frame_rows


def _enc(tokens: torch.Tensor, mask: torch.Tensor | None = None) -> Encoded:
    mask = torch.ones(tokens.shape[:2], dtype=torch.bool) if mask is None else mask
    tokens = F.normalize(tokens, dim=-1) * mask.unsqueeze(-1)
    pooled = F.normalize((tokens * mask.unsqueeze(-1)).sum(1), dim=-1)
    return Encoded(pooled, tokens, mask)


def test_global_scores_identity_gives_perfect_recall() -> None:
    e = torch.eye(4)
    enc = Encoded(e, e[:, None, :], torch.ones(4, 1, dtype=torch.bool))
    r = retrieval(global_scores(enc, enc), np.arange(4))
    assert r.text_to_image.r1 == r.image_to_text.r1 == 1.0


def test_retrieval_uses_each_direction_scores() -> None:
    good, bad = np.eye(3), np.ones((3, 3)) - np.eye(3)
    r = retrieval(Scores(good, bad), np.arange(3))
    assert r.text_to_image.r1 == 1.0
    assert r.image_to_text.r1 == 0.0


def test_filip_scores_match_hand_computation_and_ignore_padding() -> None:
    e = torch.eye(3)
    # image 0 has patches {e0, e1}; image 1 has patches {e2, e2}
    image = _enc(torch.stack([torch.stack([e[0], e[1]]), torch.stack([e[2], e[2]])]))
    # text 0 = tokens {e0, pad}; the padding token points at e2 and must not count
    text_tokens = torch.stack([torch.stack([e[0], e[2]])])
    text = _enc(text_tokens, torch.tensor([[True, False]]))
    s = filip_scores(text, image)
    # t2i: mean over the one real text token of its best patch
    np.testing.assert_allclose(s.text_to_image, [[1.0, 0.0]], atol=1e-6)
    # i2t: image 0 patches e0 -> 1, e1 -> 0 => 0.5; image 1 patches e2 -> 0 (padding ignored)
    np.testing.assert_allclose(s.image_to_text, [[0.5, 0.0]], atol=1e-6)


def test_binding_pair_accuracy_counts_within_pair_choice() -> None:
    # gallery a0 b0 a1 b1; pair 0 right both ways, pair 1 text a1 prefers b1
    sim = np.array(
        [[0.9, 0.1, 0.0, 0.0], [0.2, 0.8, 0.0, 0.0], [0.0, 0.0, 0.3, 0.6], [0.0, 0.0, 0.1, 0.7]]
    )
    t2i, i2t = binding_pair_accuracy(Scores(sim, sim))
    assert t2i == pytest.approx(0.75)
    # image a1: own caption 0.3 vs other 0.1 -> right; image b1: 0.7 vs 0.6 -> right
    assert i2t == pytest.approx(1.0)


def test_chance_recall_is_analytic() -> None:
    assert _chance_r(1, 10, 1) == pytest.approx(0.1)
    assert _chance_r(1, 10, 5) == pytest.approx(0.5)
    assert _chance_r(10, 10, 1) == pytest.approx(1.0)


def test_frame_rows_score_each_unseen_frame_alone() -> None:
    """The k-th caption of every image is frame k: a frame the model cannot read shows on its
    own row instead of being averaged in with the frames it reads."""
    from pipelines.encoder.data import ImageTextSet
    from pipelines.encoder.evaluate import Scores
    from pipelines.encoder.wording import FRAMES

    n, f = 3, len(FRAMES)
    data = ImageTextSet(
        ("a", "b", "c"), torch.zeros(n, 3, 4, 4), tuple(("x",) * f for _ in range(n))
    )
    owner = np.repeat(np.arange(n), f)
    t2i = np.eye(n)[owner]  # every caption finds its image ...
    t2i[f * np.arange(n)] = np.eye(n)[(np.arange(n) + 1) % n]  # ... except frame 0's
    rows = frame_rows(Scores(t2i, t2i), owner, data, "m")
    got = {r.split: r.value for r in rows}
    assert got == {
        f"test_unseen_wording[{frame}] t2i": (0.0 if k == 0 else 1.0)
        for k, frame in enumerate(FRAMES)
    }
    short = ImageTextSet(("a",), torch.zeros(1, 3, 4, 4), (("x",),))
    assert frame_rows(Scores(np.eye(1), np.eye(1)), np.zeros(1, int), short, "m") == []


def test_object_rows_score_each_object_against_its_scenes_other_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An object's own phrase must beat the same colour with other shapes (and the same shape
    with other colours); a phrase naming another object of its scene is not a rival."""
    from pipelines.data.vocab import COLOURS, SHAPES, article
    from pipelines.encoder import suite
    from pipelines.encoder.data import SceneObjects

    phrases = [f"{article(c)} {c} {s}" for c in COLOURS for s in SHAPES]

    def one_hot_texts(model, tokenizer, texts, cache=None):  # the text tower, as one-hot rows
        eye = torch.eye(len(phrases))
        pooled = torch.stack([eye[phrases.index(t)] for t in texts])
        return Encoded(pooled, pooled[:, None], torch.ones(len(texts), 1, dtype=torch.bool))

    monkeypatch.setattr(suite, "embed_texts", one_hot_texts)
    scene0 = frozenset({("red", "circle"), ("red", "square")})
    objects = SceneObjects(
        np.array([0, 0, 1]),
        ("red", "red", "blue"),
        ("circle", "square", "star"),
        (scene0, scene0, frozenset({("blue", "star")})),
    )

    def image_near(weights: dict[str, float]) -> torch.Tensor:
        v = torch.zeros(len(phrases))
        for p, w in weights.items():
            v[phrases.index(p)] = w
        return v

    # Image 0 looks most like "a red square" (its other object), then "a red circle"; image 1
    # like "a green star": its colour is wrong and it says nothing of a blue shape.
    pooled = torch.stack(
        [image_near({"a red square": 1.0, "a red circle": 0.5}), image_near({"a green star": 1.0})]
    )
    image = Encoded(pooled, pooled[:, None], torch.ones(2, 1, dtype=torch.bool))
    rows = {r.split: r for r in suite.object_rows(None, None, image, objects, "m")}  # type: ignore[arg-type]
    assert rows["test objects: shape told the colour"].value == pytest.approx(2 / 3)
    assert rows["test objects: colour told the shape"].value == pytest.approx(2 / 3)
    assert suite._object_candidates(objects, 0, "shape") == [
        ("red", s) for s in SHAPES if s != "square"
    ]


def test_relation_rows_count_a_probe_win_only_over_each_of_its_foils(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each probe is scored against its two foils; a tie is not a win; only kinds that have
    probes get a row."""
    from dataclasses import replace

    from pipelines.data.scene import Scene, compute_relations, make_object, sample_background
    from pipelines.encoder import suite
    from pipelines.encoder.relations import RelationProbes, relation_probes

    rng = np.random.default_rng(0)
    red = replace(make_object(rng, "red", "circle", "medium"), x=0.25, y=0.5, r=0.15)
    blue = replace(make_object(rng, "blue", "square", "medium"), x=0.75, y=0.5, r=0.15)
    scene = Scene((red, blue), compute_relations([red, blue]), sample_background(rng), 1)
    probes = relation_probes(scene, frozenset())
    texts = sorted({t for p in probes for t in (p.text, *p.foils)})
    assert len(probes) == 2 and len(texts) == 4  # left/right only: same size, same height

    def one_hot_texts(model, tokenizer, ts, cache=None):  # the text tower, as one-hot rows
        pooled = torch.stack([torch.eye(len(texts))[texts.index(t)] for t in ts])
        return Encoded(pooled, pooled[:, None], torch.ones(len(ts), 1, dtype=torch.bool))

    monkeypatch.setattr(suite, "embed_texts", one_hot_texts)
    likes = {
        "The red circle is to the left of the blue square": 1.0,  # beats both its foils
        "The blue square is to the left of the red circle": 0.5,  # a foil of both probes
        "The blue square is to the right of the red circle": 0.2,  # beats one foil, loses one
    }
    pooled = torch.tensor([[likes.get(t, 0.0) for t in texts]])
    image = Encoded(pooled, pooled[:, None], torch.ones(1, 1, dtype=torch.bool))
    rows = suite.relation_rows(None, None, image, RelationProbes(np.zeros(2, int), probes), "m")  # type: ignore[arg-type]
    assert [(r.split, r.value, r.baseline) for r in rows] == [
        ("test relations: left/right", pytest.approx(3 / 4), "chance")
    ]
    fronted = relation_probes(scene, frozenset(), ("fronted",))  # scored in rows of their own
    texts[:] = sorted({t for p in fronted for t in (p.text, *p.foils)})
    pooled = torch.tensor([[1.0 if t.startswith("To the left") else 0.0 for t in texts]])
    image = Encoded(pooled, pooled[:, None], torch.ones(1, 1, dtype=torch.bool))
    rows = suite.relation_rows(None, None, image, RelationProbes(np.zeros(2, int), fronted), "m")  # type: ignore[arg-type]
    # "To the left of the blue square there is a red circle" beats both foils (one starts "To the
    # right"; the other, "To the left of the red circle ...", ties: no win); the second probe,
    # "To the right ...", loses to its foil "To the left of the red circle ..." and ties the other.
    assert [(r.split, r.value) for r in rows] == [
        ("test relations, fronted: left/right", pytest.approx(1 / 4))
    ]
