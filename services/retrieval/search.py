"""Search on a retrieval collection: dense top-k (HNSW or exact), an optional token MAX_SIM
rerank of dense candidates, payload filters and a target-modality filter. Sync store calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from concord.errors import FailedPrecondition, InvalidArgument
from concord.vectors import Filter, Match, ScoredPoint, VectorStore
from services.retrieval.collections import DENSE, TOKENS, Entry

DEFAULT_TOP_K = 10
MAX_TOP_K = 1000
MIN_PREFETCH = 100  # dense candidates a rerank considers (at least 4 x top_k)
MAX_SEARCHES_PER_BATCH = 128  # searches in one SearchBatch


@dataclass(frozen=True)
class SearchSpec:
    """Everything about a search except the query vectors."""

    top_k: int = DEFAULT_TOP_K
    target: Literal["image", "text", ""] = ""  # "" = both
    filter: Filter | None = None
    rerank: bool = False
    exact: bool = False
    with_payload: bool = True


def check_top_k(top_k: int, field: str = "top_k") -> int:
    """Returns: top_k (0 means the default). Raises: InvalidArgument outside 0..MAX_TOP_K."""
    if top_k == 0:
        return DEFAULT_TOP_K
    if not 1 <= top_k <= MAX_TOP_K:
        raise InvalidArgument(field, f"must be between 1 and {MAX_TOP_K}, got {top_k}")
    return top_k


def check_vector(values: np.ndarray, dim: int, field: str = "vector.values") -> np.ndarray:
    """Raises: InvalidArgument when a raw query vector is empty, the wrong size or not finite."""
    if values.size != dim:
        raise InvalidArgument(field, f"has {values.size} values; the collection holds {dim}-d")
    if not np.isfinite(values).all():
        raise InvalidArgument(field, "contains NaN or infinity")
    return values


def run(
    store: VectorStore,
    entry: Entry,
    spec: SearchSpec,
    vector: np.ndarray,
    tokens: np.ndarray | None,
) -> list[ScoredPoint]:
    """Search one collection.

    Args:
        store: the vector store.
        entry: the collection's catalog entry.
        spec: top-k, filters, rerank and exactness.
        vector: the dense query (dim,).
        tokens: the query's token vectors (n, dim), needed for a rerank.
    Returns:
        Hits best first: cosine scores, or MAX_SIM sums when reranked (only points indexed
        with tokens take part in a rerank).
    """
    conditions: list[Filter | Match] = []
    if spec.filter is not None and not spec.filter.empty:
        conditions.append(spec.filter)
    if spec.target:
        conditions.append(Match("modality", spec.target))
    where = Filter(must=conditions) if conditions else None
    if not spec.rerank:
        return store.search(
            entry.name,
            vector,
            using=DENSE,
            limit=spec.top_k,
            filter=where,
            exact=spec.exact,
            with_payload=spec.with_payload,
        )
    if not entry.has_tokens:
        raise FailedPrecondition(
            f"collection {entry.name!r} holds no token vectors; index with store_tokens to rerank"
        )
    if tokens is None or not len(tokens):
        raise InvalidArgument(
            "rerank_late_interaction", "needs a text or image query (a raw vector has no tokens)"
        )
    return store.search_rerank(
        entry.name,
        vector,
        tokens,
        using=DENSE,
        rerank_using=TOKENS,
        prefetch_limit=max(MIN_PREFETCH, 4 * spec.top_k),
        limit=spec.top_k,
        filter=where,
        exact=spec.exact,
        with_payload=spec.with_payload,
    )
