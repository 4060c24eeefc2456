"""Every evaluation metric agrees with a reference implementation (scikit-learn or a plain loop)
on seeded random inputs, ties included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from pipelines.evaluate.classification import (
    accuracy,
    average_precision,
    binary_metrics,
    macro_f1,
    precision_recall_f1,
    roc_auc,
)
from pipelines.evaluate.ranking import ranking_metrics
from pipelines.evaluate.retrieval import first_relevant_rank, retrieval_metrics
from pipelines.evaluate.segmentation import segmentation_metrics
from pipelines.evaluate.tokens import token_metrics, word_labels

TRIALS = 40


def _rngs(seed: int):
    return (np.random.default_rng([seed, k]) for k in range(TRIALS))


def _loop_rank(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    out = []
    for s, rel in zip(scores, relevant, strict=True):
        best = max(s[j] for j in range(len(s)) if rel[j])
        out.append(1 + sum(1 for j in range(len(s)) if not rel[j] and s[j] >= best))
    return np.asarray(out)


def test_ranks_match_a_loop_with_ties() -> None:
    for rng in _rngs(1):
        q, c = rng.integers(1, 12, size=2)
        scores = np.round(rng.normal(size=(q, c)), 1)  # rounding makes ties common
        rel = rng.uniform(size=(q, c)) < 0.3
        rel[np.arange(q), rng.integers(c, size=q)] = True
        assert np.array_equal(first_relevant_rank(scores, rel), _loop_rank(scores, rel))


def test_retrieval_metrics_match_loops_both_directions() -> None:
    for rng in _rngs(2):
        n_img = int(rng.integers(3, 20))
        t2i = np.repeat(np.arange(n_img), rng.integers(1, 4, size=n_img))
        sim = rng.normal(size=(len(t2i), n_img)) + 2.0 * np.eye(n_img)[t2i] * rng.uniform()
        res = retrieval_metrics(sim, t2i)
        ranks = [1 + int((sim[t] > sim[t, t2i[t]]).sum()) for t in range(len(t2i))]
        assert res["text_to_image"].r1 == pytest.approx(np.mean(np.asarray(ranks) <= 1))
        assert res["text_to_image"].r5 == pytest.approx(np.mean(np.asarray(ranks) <= 5))
        assert res["text_to_image"].median_rank == pytest.approx(np.median(ranks))
        i_ranks = []
        for i in range(n_img):
            order = list(np.argsort(-sim[:, i], kind="stable"))
            i_ranks.append(1 + min(order.index(t) for t in np.nonzero(t2i == i)[0]))
        assert res["image_to_text"].r1 == pytest.approx(np.mean(np.asarray(i_ranks) <= 1))
        assert res["image_to_text"].r10 == pytest.approx(np.mean(np.asarray(i_ranks) <= 10))
        assert res["image_to_text"].median_rank == pytest.approx(np.median(i_ranks))


def test_constant_scores_rank_last_not_first() -> None:
    res = retrieval_metrics(np.zeros((5, 5)), np.arange(5))
    assert res["text_to_image"].r1 == 0.0 and res["text_to_image"].median_rank == 5


def test_mrr_and_hits_match_scikit_learn() -> None:
    for rng in _rngs(3):
        q, c = int(rng.integers(2, 30)), int(rng.integers(4, 15))
        scores = rng.normal(size=(q, c))
        gold = rng.integers(c, size=q)
        gold[:c] = np.arange(min(q, c))  # every class present, as top_k_accuracy_score needs
        onehot = np.eye(c)[gold]
        res = ranking_metrics(scores, gold, ks=(1, 3))
        assert res.mrr == pytest.approx(skm.label_ranking_average_precision_score(onehot, scores))
        assert res.hits[1] == pytest.approx(skm.top_k_accuracy_score(gold, scores, k=1, labels=np.arange(c)))
        assert res.hits[3] == pytest.approx(skm.top_k_accuracy_score(gold, scores, k=3, labels=np.arange(c)))


def test_classification_metrics_match_scikit_learn() -> None:
    for rng in _rngs(4):
        n = int(rng.integers(5, 200))
        y = rng.integers(0, 2, size=n)
        y[:2] = [0, 1]
        score = np.round(rng.uniform(size=n) + 0.3 * y, 1)
        pred = score >= 0.5
        assert accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred))
        p, r, f = precision_recall_f1(y, pred)
        assert p == pytest.approx(skm.precision_score(y, pred, zero_division=0))
        assert r == pytest.approx(skm.recall_score(y, pred, zero_division=0))
        assert f == pytest.approx(skm.f1_score(y, pred, zero_division=0))
        assert roc_auc(y, score) == pytest.approx(skm.roc_auc_score(y, score))
        assert average_precision(y, score) == pytest.approx(skm.average_precision_score(y, score))
        res = binary_metrics(y, score)
        assert res.f1 == pytest.approx(f) and res.auc == pytest.approx(skm.roc_auc_score(y, score))
        yk, pk = rng.integers(0, 4, size=n), rng.integers(0, 4, size=n)
        assert macro_f1(yk, pk) == pytest.approx(skm.f1_score(yk, pk, average="macro", zero_division=0))


def test_auc_is_nan_with_one_class() -> None:
    assert np.isnan(roc_auc(np.ones(4), np.arange(4)))
    assert np.isnan(average_precision(np.zeros(4), np.arange(4)))


def test_token_metrics_match_scikit_learn_on_pooled_words() -> None:
    for rng in _rngs(5):
        lens = rng.integers(1, 12, size=int(rng.integers(1, 10)))
        labels = [(rng.uniform(size=k) < 0.2).astype(int) for k in lens]
        labels[0][0] = 1
        scores = [np.round(rng.uniform(size=k) + 0.4 * lab, 2) for k, lab in zip(lens, labels, strict=True)]
        res = token_metrics(labels, scores)
        y, s = np.concatenate(labels), np.concatenate(scores)
        assert res.precision == pytest.approx(skm.precision_score(y, s >= 0.5, zero_division=0))
        assert res.recall == pytest.approx(skm.recall_score(y, s >= 0.5, zero_division=0))
        assert res.f1 == pytest.approx(skm.f1_score(y, s >= 0.5, zero_division=0))
        assert res.ap == pytest.approx(skm.average_precision_score(y, s))
        assert res.n_words == len(y)


def test_word_labels_from_character_spans() -> None:
    text = "A red circle is to the left of the blue square"
    s = text.index("left")
    assert word_labels(text, [(s, s + 4)]).tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    with pytest.raises(ValueError):
        token_metrics([np.zeros(3)], [np.zeros(2)])


def test_miou_matches_scikit_learn_jaccard() -> None:
    for rng in _rngs(6):
        k = int(rng.integers(2, 8))
        t = rng.integers(0, k, size=(3, 8, 8))
        p = np.where(rng.uniform(size=t.shape) < 0.6, t, rng.integers(0, k, size=t.shape))
        res = segmentation_metrics(t, p, n_classes=k + 2)
        present = np.union1d(t, p)
        ref = skm.jaccard_score(t.ravel(), p.ravel(), labels=present, average=None)
        assert sorted(res.iou) == present.tolist()
        assert [res.iou[c] for c in present] == pytest.approx(ref.tolist())
        assert res.miou == pytest.approx(ref.mean())
        assert res.pixel_accuracy == pytest.approx(skm.accuracy_score(t.ravel(), p.ravel()))


def test_miou_ignores_the_ignore_label() -> None:
    t = np.array([[0, 1, 255]])
    p = np.array([[0, 1, 1]])
    assert segmentation_metrics(t, p, n_classes=2, ignore=255).miou == 1.0
