"""Cross-modal retrieval metrics from a similarity matrix: R@K and median rank, both directions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RetrievalResult:
    r1: float  # fraction of queries whose first relevant item is ranked 1st
    r5: float
    r10: float
    median_rank: float  # 1-based
    mean_rank: float


def first_relevant_rank(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """1-based rank of the best-scored relevant candidate for each query.

    Ties count against the query (rank = 1 + candidates not relevant scoring >= the best
    relevant one), so a constant scorer cannot look good.
    Args:
        scores: (Q, C) similarity, higher is better.
        relevant: (Q, C) bool; every row needs at least one True.
    Returns:
        (Q,) int ranks.
    """
    scores, relevant = np.asarray(scores, dtype=np.float64), np.asarray(relevant, dtype=bool)
    if scores.shape != relevant.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and relevant {relevant.shape} must be the same 2-D shape")
    if not relevant.any(axis=1).all():
        raise ValueError("every query needs at least one relevant candidate")
    best = np.where(relevant, scores, -np.inf).max(axis=1, keepdims=True)
    return 1 + ((scores >= best) & ~relevant).sum(axis=1)


def summarize(ranks: np.ndarray) -> RetrievalResult:
    ranks = np.asarray(ranks)
    return RetrievalResult(float((ranks <= 1).mean()), float((ranks <= 5).mean()),
                           float((ranks <= 10).mean()), float(np.median(ranks)), float(ranks.mean()))


def retrieval_metrics(sim: np.ndarray, text_to_image: np.ndarray) -> dict[str, RetrievalResult]:
    """Text->image and image->text retrieval.

    Args:
        sim: (T, I) text-image similarity.
        text_to_image: (T,) index of each text's image (an image may have several texts).
    Returns:
        {"text_to_image": ..., "image_to_text": ...}; an image's relevant texts are all its captions.
    """
    sim = np.asarray(sim)
    t2i = np.asarray(text_to_image)
    if t2i.shape != (sim.shape[0],):
        raise ValueError(f"text_to_image must have shape ({sim.shape[0]},), got {t2i.shape}")
    rel = np.zeros(sim.shape, dtype=bool)
    rel[np.arange(sim.shape[0]), t2i] = True
    has_text = rel.any(axis=0)
    return {"text_to_image": summarize(first_relevant_rank(sim, rel)),
            "image_to_text": summarize(first_relevant_rank(sim.T[has_text], rel.T[has_text]))}
