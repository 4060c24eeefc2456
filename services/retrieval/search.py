"""Search on a retrieval collection: dense top-k (HNSW or exact), an optional token MAX_SIM
rerank of dense candidates, payload filters and a target-modality filter. `run` makes sync
store calls; `SearchRunner` runs the dense searches of the event loop (inline or batched)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np

from concord.errors import FailedPrecondition, InvalidArgument
from concord.serving import metrics
from concord.vectors import Filter, Match, ScoredPoint, SearchQuery, VectorStore
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
    where = where_of(spec)
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


def where_of(spec: SearchSpec) -> Filter | None:
    """Returns: the store filter of a search: its payload filter and target modality."""
    conditions: list[Filter | Match] = []
    if spec.filter is not None and not spec.filter.empty:
        conditions.append(spec.filter)
    if spec.target:
        conditions.append(Match("modality", spec.target))
    return Filter(must=conditions) if conditions else None


def dense_query(spec: SearchSpec, vector: np.ndarray) -> SearchQuery:
    """Returns: the store query of a search without rerank (what `run` asks the store)."""
    return SearchQuery(
        vector,
        using=DENSE,
        limit=spec.top_k,
        filter=where_of(spec),
        exact=spec.exact,
        with_payload=spec.with_payload,
    )


# ----------------------------------------------------------------------------- runner

# A search runs on the event loop itself (no hand-off to a thread and back: two thread
# switches, ~0.15 ms on a busy 2-core node) only while searches come one at a time and the
# loop has nothing else to do. Blocking the loop for a search while other calls wait would
# put the engine on the one thread every call needs (under 8 clients that halved QPS), so a
# search goes inline only after QUIET_BEFORE_INLINE searches in a row that found no other
# search in flight and no more tasks on the loop than its quietest moment of late (each call
# in progress is a task there), and even then every PROBE_EVERY-th one goes to a thread so
# that callers arriving beside it show up.
QUIET_BEFORE_INLINE = 8
PROBE_EVERY = 16
FLOOR_WINDOW = 64  # searches over which the loop's quietest task count is taken
INLINE_MAX_SECONDS = 0.004  # engine time per search beyond which the loop is never blocked
EWMA_WEIGHT = 0.1
MAX_WORKERS = 4


def default_workers() -> int:
    """Engine threads: the cores this process may use (the engine releases the GIL), at most
    MAX_WORKERS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_WORKERS, cores or 1))


@dataclass
class _Job:
    collection: str
    query: SearchQuery
    future: asyncio.Future[list[ScoredPoint]]
    loop: asyncio.AbstractEventLoop


Outcome = list[ScoredPoint] | BaseException


class SearchRunner:
    """Runs the dense searches of the event loop against the store.

    One search at a time runs inline (see QUIET_BEFORE_INLINE). Searches that overlap go to
    `workers` engine threads; a thread takes every search waiting when it starts (up to
    `max_batch`) and runs them as one `VectorStore.search_batch` call, then takes the next
    waiting ones itself, so concurrent callers cost one engine call and one hand-back to
    the loop per batch instead of per search. Results are those of `VectorStore.search`.

    Args:
        store: the vector store.
        workers: engine threads (default: `default_workers()`).
        max_batch: most searches in one engine call.
        inline: allow searches on the event loop when it is quiet.
    """

    def __init__(
        self,
        store: VectorStore,
        workers: int | None = None,
        max_batch: int = 64,
        inline: bool = True,
    ) -> None:
        self.store = store
        self.workers = workers or default_workers()
        self.max_batch = max_batch
        self.inline = inline
        self._lock = threading.Lock()
        self._pending: deque[_Job] = deque()
        self._busy = 0  # worker threads draining (under _lock)
        self._quiet = 0  # searches in a row that found the loop quiet (event loop only)
        self._floor = -1  # the loop's fewest tasks over the previous window (-1: none yet)
        self._window_min = 1 << 30
        self._searches = 0
        self._seconds = 0.0  # running estimate of engine seconds per search
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="search")
        self._inline_sizes = metrics.BATCH_SIZE.labels("search-inline")
        self._batch_sizes = metrics.BATCH_SIZE.labels("search")

    async def search(self, collection: str, query: SearchQuery) -> list[ScoredPoint]:
        """Returns: the hits of `store.search` for `query`. Raises: what it raises."""
        loop = asyncio.get_running_loop()
        if self.inline and self._quiet_loop(loop) and not query.exact:
            self._inline_sizes.observe(1)
            outcome = self._run(collection, [query])[0]
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        job = _Job(collection, query, loop.create_future(), loop)
        with self._lock:
            self._pending.append(job)
            start = self._busy < self.workers
            if start:
                self._busy += 1
        if start:
            self._pool.submit(self._drain)
        return await job.future

    def _quiet_loop(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether this search may run inline (see QUIET_BEFORE_INLINE)."""
        tasks = len(asyncio.all_tasks(loop))
        if self._floor < 0:
            self._floor = tasks
        self._window_min = min(self._window_min, tasks)
        self._searches += 1
        if self._searches % FLOOR_WINDOW == 0:
            self._floor, self._window_min = self._window_min, 1 << 30
        quiet = not self._busy and not self._pending and tasks <= self._floor
        self._quiet = self._quiet + 1 if quiet else 0
        return (
            self._quiet > QUIET_BEFORE_INLINE
            and self._quiet % PROBE_EVERY != 0
            and self._seconds < INLINE_MAX_SECONDS
        )

    def close(self) -> None:
        """Stop the engine threads (searches already taken finish first)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, collection: str, queries: list[SearchQuery]) -> list[Outcome]:
        started = time.perf_counter()
        try:
            outcomes: list[Outcome] = list(self.store.search_batch(collection, queries))
        except Exception as exc:  # e.g. the store closed: every search of the call fails
            outcomes = [exc for _ in queries]
        per_search = (time.perf_counter() - started) / len(queries)
        self._seconds += EWMA_WEIGHT * (per_search - self._seconds)
        return outcomes

    def _take(self) -> list[_Job]:
        """The searches waiting, up to max_batch (call with _lock held)."""
        n = min(len(self._pending), self.max_batch)
        return [self._pending.popleft() for _ in range(n)]

    def _drain(self) -> None:
        """Worker thread: run waiting searches batch after batch until none wait."""
        with self._lock:
            jobs = self._take()
            if not jobs:
                self._busy -= 1
                return
        while jobs:
            by_collection: dict[str, list[int]] = {}
            for i, job in enumerate(jobs):
                by_collection.setdefault(job.collection, []).append(i)
            outcomes: list[Outcome] = [[] for _ in jobs]
            for collection, slots in by_collection.items():
                done = self._run(collection, [jobs[i].query for i in slots])
                for i, outcome in zip(slots, done, strict=True):
                    outcomes[i] = outcome
            self._batch_sizes.observe(len(jobs))
            with self._lock:
                following = self._take()
                if not following:
                    # Counted idle before the answers go out: the caller's next search then
                    # finds the runner idle, as it is.
                    self._busy -= 1
            _hand_back(jobs, outcomes)
            jobs = following


def _hand_back(jobs: list[_Job], outcomes: list[Outcome]) -> None:
    """Settle the jobs' futures on their event loop (one wake-up per loop and batch)."""
    loops: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Outcome]]] = {}
    for job, outcome in zip(jobs, outcomes, strict=True):
        loops.setdefault(job.loop, []).append((job, outcome))
    for loop, settled in loops.items():
        # A closed loop raises RuntimeError: nobody waits for these answers any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[_Job, Outcome]]) -> None:
    for job, outcome in settled:
        if job.future.done():  # the caller went away (cancelled)
            continue
        if isinstance(outcome, BaseException):
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)
