"""Measuring one scored encoder: fit thresholds, F-CLIPScore and the calibration on val, and
turn the test scores into report rows (pair AUC, word metrics, localisation, ECE)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipelines.evaluate.report import MetricRow
from pipelines.evaluate.tokens import token_metrics
from pipelines.scorer import evaluate as ev
from pipelines.scorer.config import HARDNEG, SHARED
from pipelines.scorer.data import KINDS


@dataclass
class Measured:
    """One encoder's results: thresholds and calibration fitted on val, the test scores."""

    label: str
    threshold: float  # CLIP4DM epsilon fitted on val (attribution < -threshold flags a word)
    f_threshold: float  # F-CLIPScore's own epsilon (which words lower the score), fitted on val
    penalty: float  # F-CLIPScore's weight on the flagged attributions, fitted on val
    sim_cut: float  # baseline: flag words with best-patch similarity < sim_cut
    calibration: dict[str, object]
    val_auc: float  # calibrated P(aligned) AUC on val (chooses the packaged encoder)
    test: ev.Scored
    test_scores: dict[str, np.ndarray]
    rows: list[MetricRow] = field(default_factory=list)


def measure(label: str, val: ev.Scored, test: ev.Scored, weight: float) -> Measured:
    # -- fit on val: word thresholds (best word F1), then F-CLIPScore and the calibration
    cut = ev.fit_word_threshold(list(val.labels), ev.word_scores(val, "clip4dm"))
    threshold = max(cut, 0.0)  # scores are -attribution: flag a < -threshold
    sim_cut = -ev.fit_word_threshold(list(val.labels), ev.word_scores(val, "similarity"))
    f_threshold, penalty, _ = ev.fit_f_clip(val, weight, (threshold,))
    val_scores = ev.pair_scores(val, f_threshold, weight, penalty)
    calibration = ev.fit_calibration(val_scores, val.aligned)
    val_auc = ev.pair_auc(val, ev.probabilities(val_scores, calibration))
    scores = ev.pair_scores(test, f_threshold, weight, penalty)
    m = Measured(
        label, threshold, f_threshold, penalty, sim_cut, calibration, val_auc, test, scores
    )
    enc = f"[{label}]"
    rows = m.rows
    prob = ev.probabilities(scores, calibration)
    # -- pair level
    for kind in (None, *KINDS):
        split = "test" if kind is None else f"test {kind}"
        if kind is not None and not (test.kinds == kind).any():
            continue
        base = f"CLIPScore {enc}"
        rows.append(
            MetricRow("pair AUC", split, base, ev.pair_auc(test, scores["clip_score"], kind))
        )
        for name, key in (("fine-grained", "fine_grained_score"), ("F-CLIPScore", "f_clip_score")):
            rows.append(
                MetricRow(
                    "pair AUC", split, f"{name} {enc}", ev.pair_auc(test, scores[key], kind), base
                )
            )
        rows.append(
            MetricRow(
                "pair AUC",
                split,
                f"calibrated P(aligned) {enc}",
                ev.pair_auc(test, prob, kind),
                base,
            )
        )
    # -- word level
    clip4dm = ev.word_scores(test, "clip4dm")
    clamped = ev.word_scores(test, "clamped")
    low_sim = ev.word_scores(test, "similarity")
    for kind in (None, *KINDS):
        split = "test" if kind is None else f"test {kind}"
        if kind is not None and not (test.kinds == kind).any():
            continue
        mask = ev.type_mask(test, kind)
        labels = [lab for lab, k in zip(test.labels, mask, strict=True) if k]
        ours = token_metrics(labels, _pick(clip4dm, mask), threshold=threshold)
        theirs = token_metrics(labels, _pick(low_sim, mask), threshold=-sim_cut)
        clamp = token_metrics(labels, _pick(clamped, mask), threshold=0.0)
        b = f"low similarity {enc}"
        for metric, a_val, b_val in (
            ("word precision", ours.precision, theirs.precision),
            ("word recall", ours.recall, theirs.recall),
            ("word F1", ours.f1, theirs.f1),
            ("word AP", ours.ap, theirs.ap),
        ):
            rows.append(MetricRow(metric, split, b, b_val))
            rows.append(MetricRow(metric, split, f"CLIP4DM {enc}", a_val, b))
        rows.append(
            MetricRow(
                "word AP", split, f"CLIP4DM clamped (ablation) {enc}", clamp.ap, f"CLIP4DM {enc}"
            )
        )
        chance = ev.localisation_chance(test, kind)
        rows.append(MetricRow("localisation accuracy", split, f"chance {enc}", chance))
        rows.append(
            MetricRow(
                "localisation accuracy",
                split,
                f"low similarity {enc}",
                ev.localisation(test, low_sim, kind),
                f"chance {enc}",
            )
        )
        rows.append(
            MetricRow(
                "localisation accuracy",
                split,
                f"CLIP4DM {enc}",
                ev.localisation(test, clip4dm, kind),
                f"chance {enc}",
            )
        )
        rows.append(
            MetricRow(
                "localisation accuracy",
                split,
                f"CLIP4DM clamped (ablation) {enc}",
                ev.localisation(test, clamped, kind),
                f"CLIP4DM {enc}",
            )
        )
    # -- calibration
    naive = ev.naive_probability(scores, weight)
    y = test.aligned
    rows.append(MetricRow("ECE", "test", f"CLIPScore as probability {enc}", ev.ece(y, naive)))
    rows.append(
        MetricRow(
            "ECE", "test", f"calibrated {enc}", ev.ece(y, prob), f"CLIPScore as probability {enc}"
        )
    )
    return m


def _pick(values: list[np.ndarray], mask: np.ndarray) -> list[np.ndarray]:
    return [v for v, keep in zip(values, mask, strict=True) if keep]


def template_rows(
    label: str, plain: ev.Scored, templated: ev.Scored, weight: float
) -> list[MetricRow]:
    enc = f"[{label}]"
    out = []
    for name, sc in (("CLIP4DM", plain), ("CLIP4DM + template", templated)):
        method = f"{name} {enc}"
        base = None if name == "CLIP4DM" else f"CLIP4DM {enc}"
        loc = ev.localisation(sc, ev.word_scores(sc, "clip4dm"))
        ap = token_metrics(list(sc.labels), ev.word_scores(sc, "clip4dm")).ap
        out.append(MetricRow("localisation accuracy", "val", method, loc, base))
        out.append(MetricRow("word AP", "val", method, ap, base))
    return out


def cross_encoder_rows(measured: list[Measured]) -> list[MetricRow]:
    """The hard-negative encoder's CLIPScore against the shared one's, on the same test pairs."""
    labels = [m.label for m in measured]
    if SHARED not in labels or HARDNEG not in labels:
        return []
    out = []
    for kind in (None, *KINDS):
        split = "test" if kind is None else f"test {kind}"
        hn = next(m for m in measured if m.label == HARDNEG)
        if kind is not None and not (hn.test.kinds == kind).any():
            continue
        out.append(
            MetricRow(
                "pair AUC",
                split,
                f"CLIPScore [{HARDNEG}] vs shared",
                ev.pair_auc(hn.test, hn.test_scores["clip_score"], kind),
                f"CLIPScore [{SHARED}]",
            )
        )
    return out
