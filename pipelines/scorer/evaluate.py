"""Scoring the misalignment set with an AlignmentScorer and measuring it: pair-level AUC
(CLIPScore vs fine-grained vs F-CLIPScore), word-level detection and localisation (CLIP4DM vs
low late-interaction similarity, and the positive-clamped ablation), thresholds and calibration
fitted on val, ECE and reliability on test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from concord.models.alignment import (
    CALIBRATION_FEATURES,
    AlignmentScorer,
    PairScores,
    RawPair,
    aligned_probability,
    f_clip_score,
)
from pipelines.evaluate.classification import roc_auc
from pipelines.evaluate.tokens import token_metrics
from pipelines.scorer.data import PairSet


@dataclass(frozen=True)
class Scored:
    """A split scored once: raw per-pair results and per-word labels (1 = changed word)."""

    data: PairSet
    raw: tuple[RawPair, ...]
    labels: tuple[np.ndarray, ...]

    @property
    def aligned(self) -> np.ndarray:
        return np.array([p.aligned for p in self.data.pairs])

    @property
    def kinds(self) -> np.ndarray:
        return self.data.kinds_of()


def score_split(
    scorer: AlignmentScorer, data: PairSet, batch_size: int = 64, progress: bool = False
) -> Scored:
    """Run the scorer over every pair of a split (each image encoded once)."""
    image = scorer.encode_images(data.pixels)
    order = sorted(range(len(data)), key=lambda k: len(data.pairs[k].text))  # less padding
    found: dict[int, RawPair] = {}
    steps = range(0, len(data), batch_size)
    for s in tqdm(steps, desc="scoring", disable=not progress, leave=False):
        idx = order[s : s + batch_size]
        chunk = [data.pairs[k] for k in idx]
        rows = torch.tensor([p.image for p in chunk])
        got = scorer.raw(None, [p.text for p in chunk], image=image[rows])
        found.update(zip(idx, got, strict=True))
    raws = [found[k] for k in range(len(data))]
    labels = tuple(
        np.array([int(any(a < e and s < b for a, b in p.spans)) for s, e in r.spans])
        for p, r in zip(data.pairs, raws, strict=True)
    )
    return Scored(data, tuple(raws), labels)


def clip_scores(scored: Scored, weight: float) -> np.ndarray:
    """Per pair: CLIPScore, weight * max(cos, 0)."""
    return np.array([weight * max(r.cosine, 0.0) for r in scored.raw])


def pair_scores(
    scored: Scored, threshold: float, weight: float, penalty: float
) -> dict[str, np.ndarray]:
    """Per pair: clip_score, fine_grained_score, f_clip_score (at `threshold` and `penalty`)."""
    clip = clip_scores(scored, weight)
    fine = np.array([r.fine_grained for r in scored.raw])
    f = np.array(
        [
            f_clip_score(c, r.cosine, r.attributions, threshold, penalty)
            for c, r in zip(clip, scored.raw, strict=True)
        ]
    )
    return {"clip_score": clip, "fine_grained_score": fine, "f_clip_score": f}


# F-CLIPScore's penalty, as multiples of std(CLIPScore) / std(attribution term) on val: the
# attribution's scale differs by orders of magnitude between encoders, their spread does not.
PENALTY_GRID = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
# F-CLIPScore's epsilon candidates, as quantiles of |negative attributions| on val (0: every
# negative word counts, as CLIP4DM's tiny 5e-5 does on CLIP's attribution scale).
F_THRESHOLD_QUANTILES = (0.0, 0.25, 0.5, 0.75)


def fit_f_clip(
    scored: Scored, weight: float, extra_thresholds: tuple[float, ...] = ()
) -> tuple[float, float, float]:
    """F-CLIPScore's epsilon and penalty with the best pair AUC on `scored` (a held-out split,
    never test). Zero penalty is not a candidate: F-CLIPScore always uses the attributions.

    Returns:
        (threshold, penalty, its AUC).
    """
    negative = np.concatenate([-r.attributions[r.attributions < 0] for r in scored.raw] or [[0]])
    thresholds = {float(np.quantile(negative, q)) if q else 0.0 for q in F_THRESHOLD_QUANTILES}
    thresholds |= {float(t) for t in extra_thresholds}
    clip = clip_scores(scored, weight)
    best = (0.0, 1.0, -1.0)
    for threshold in sorted(thresholds):
        term = np.array(
            [f_clip_score(0.0, r.cosine, r.attributions, threshold, 1.0) for r in scored.raw]
        )
        if term.std() == 0:
            continue
        # (without any CLIPScore spread, e.g. a handful of pairs, the attribution's own scale)
        unit = float((clip.std() or 1.0) / term.std())
        for k in PENALTY_GRID:
            auc = roc_auc(scored.aligned, clip + k * unit * term)
            if auc > best[2]:
                best = (threshold, k * unit, auc)
    return best


def as_pair_scores(scores: dict[str, np.ndarray], i: int) -> PairScores:
    return PairScores(
        float(scores["clip_score"][i]),
        None,
        float(scores["fine_grained_score"][i]),
        float(scores["f_clip_score"][i]),
    )


# -- pair level


def type_mask(scored: Scored, kind: str | None) -> np.ndarray:
    """Pairs of one misalignment kind plus the aligned captions that have such a variant
    (all pairs for kind None), so each kind is judged against its own originals."""
    kinds = scored.kinds
    if kind is None:
        return np.ones(len(kinds), dtype=bool)
    captions = {p.caption for p, k in zip(scored.data.pairs, kinds, strict=True) if k == kind}
    source = np.array([p.aligned and p.caption in captions for p in scored.data.pairs])
    return (kinds == kind) | source


def pair_auc(scored: Scored, score: np.ndarray, kind: str | None = None) -> float:
    """ROC AUC of `score` separating aligned (positive) from misaligned captions."""
    m = type_mask(scored, kind)
    return roc_auc(scored.aligned[m], score[m])


def auc_difference_ci(
    scored: Scored,
    a: np.ndarray,
    b: np.ndarray,
    kind: str | None = None,
    resamples: int = 500,
    seed: int = 0,
) -> tuple[float, float]:
    """95% bootstrap interval of AUC(a) - AUC(b) on the same pairs, resampling source captions
    (each with its own variants) because a caption's pairs are not independent."""
    m = type_mask(scored, kind)
    caption = np.array([p.caption for p in scored.data.pairs])[m]
    y, a, b = scored.aligned[m], a[m], b[m]
    groups = [np.flatnonzero(caption == c) for c in np.unique(caption)]
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        idx = np.concatenate([groups[i] for i in rng.integers(len(groups), size=len(groups))])
        if y[idx].all() or not y[idx].any():
            continue
        diffs.append(roc_auc(y[idx], a[idx]) - roc_auc(y[idx], b[idx]))
    if not diffs:
        return float("nan"), float("nan")
    low, high = np.quantile(diffs, [0.025, 0.975])
    return float(low), float(high)


# -- word level


def word_scores(scored: Scored, method: str) -> list[np.ndarray]:
    """Per pair, a misalignment score per word (higher = more likely wrong).

    clip4dm: -attribution; clamped: -(positive-clamped attribution); similarity: -(best patch
    similarity), the late-interaction baseline.
    """
    if method == "clip4dm":
        return [-r.attributions for r in scored.raw]
    if method == "clamped":
        return [-r.positive for r in scored.raw]
    if method == "similarity":
        return [-r.similarities for r in scored.raw]
    raise ValueError(f"unknown word method {method!r}")


def fit_word_threshold(labels: list[np.ndarray], scores: list[np.ndarray]) -> float:
    """The flagging threshold on val: the score cut with the best pooled word F1."""
    y = np.concatenate(labels)
    s = np.concatenate(scores)
    if not y.any():
        return float(np.max(s)) if s.size else 0.0
    cuts = np.unique(np.quantile(s, np.linspace(0.5, 0.999, 200)))
    best, best_f1 = float(cuts[-1]), -1.0
    for c in cuts:
        f1 = token_metrics([y], [s], threshold=float(c)).f1
        if f1 > best_f1:
            best, best_f1 = float(c), f1
    return best


def localisation(scored: Scored, scores: list[np.ndarray], kind: str | None = None) -> float:
    """Share of misaligned captions whose top-scored word is a changed word."""
    hits = [
        bool(lab[int(np.argmax(s))])
        for p, lab, s in zip(scored.data.pairs, scored.labels, scores, strict=True)
        if not p.aligned and (kind is None or p.kind == kind) and len(s) and lab.any()
    ]
    return float(np.mean(hits)) if hits else float("nan")


def localisation_chance(scored: Scored, kind: str | None = None) -> float:
    """Expected localisation accuracy of picking a word uniformly at random."""
    vals = [
        float(lab.mean())
        for p, lab in zip(scored.data.pairs, scored.labels, strict=True)
        if not p.aligned and (kind is None or p.kind == kind) and len(lab) and lab.any()
    ]
    return float(np.mean(vals)) if vals else float("nan")


# -- calibration


def fit_calibration(scores: dict[str, np.ndarray], aligned: np.ndarray) -> dict[str, object]:
    """Logistic regression of aligned on standardised [clip, fine-grained, F-CLIPScore] (val).

    Returns: the calibration dict `concord.models.alignment.aligned_probability` reads.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.stack([scores[f] for f in CALIBRATION_FEATURES], axis=1)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    lr = LogisticRegression(C=1.0, max_iter=1000).fit((x - mean) / scale, aligned.astype(int))
    return {
        "form": "logistic",
        "features": list(CALIBRATION_FEATURES),
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "coef": lr.coef_[0].tolist(),
        "intercept": float(lr.intercept_[0]),
        "fitted_on": "val",
        "n": len(aligned),
    }


def probabilities(scores: dict[str, np.ndarray], calibration: dict[str, object]) -> np.ndarray:
    n = len(scores["clip_score"])
    return np.array([aligned_probability(as_pair_scores(scores, i), calibration) for i in range(n)])


def naive_probability(scores: dict[str, np.ndarray], weight: float) -> np.ndarray:
    """The uncalibrated reading of CLIPScore as a probability: max(cos, 0)."""
    return np.clip(scores["clip_score"] / weight, 0.0, 1.0)


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error with equal-width bins."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.mean() * abs(p[m].mean() - y[m].mean())
    return float(total)


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(mean predicted, observed frequency) per non-empty equal-width bin."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    xs, ys = [], []
    for b in range(bins):
        m = which == b
        if m.any():
            xs.append(float(p[m].mean()))
            ys.append(float(np.mean(y[m])))
    return np.array(xs), np.array(ys)
