"""Ranking metrics for linking and alignment: MRR and Hits@K over candidate scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.evaluate.retrieval import first_relevant_rank


@dataclass(frozen=True)
class RankingResult:
    mrr: float
    hits: dict[int, float]  # K -> fraction of queries with the gold candidate in the top K


def ranking_metrics(scores: np.ndarray, gold: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> RankingResult:
    """MRR and Hits@K when each query has one gold candidate.

    Args:
        scores: (Q, C) candidate scores, higher is better (ties count against the query).
        gold: (Q,) index of the gold candidate.
    Returns:
        The mean reciprocal rank and Hits@K for each K.
    """
    scores, gold = np.asarray(scores), np.asarray(gold)
    rel = np.zeros(scores.shape, dtype=bool)
    rel[np.arange(len(gold)), gold] = True
    ranks = first_relevant_rank(scores, rel)
    return RankingResult(float((1.0 / ranks).mean()), {k: float((ranks <= k).mean()) for k in ks})
