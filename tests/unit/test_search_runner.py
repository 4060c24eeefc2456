"""The search fast path: `VectorStore.search_batch` (one engine call for several searches, each
search's error in its own slot), the retrieval `SearchRunner` (inline while searches come one
at a time, batched across concurrent callers, same hits as `store.search`), the in-place
wire conversion of hits and the cached catalog lookup."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from google.protobuf import struct_pb2

from concord.proto.v1 import common_pb2, retrieval_pb2
from concord.vectors import (
    CollectionNotFound,
    CollectionSpec,
    DimensionMismatch,
    EdgeVectorStore,
    Filter,
    Match,
    Point,
    QdrantServerStore,
    ScoredPoint,
    SearchQuery,
    VectorStore,
    point_id,
)
from concord.wire import MODALITY_ENUMS, payload_from_dict
from services.retrieval import convert, search, thumbnails
from services.retrieval.collections import Collections

DIM, N = 8, 60
NAME = "runner-v1"


def _points() -> list[Point]:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((N, DIM)).astype(np.float32)
    return [
        Point(
            point_id(str(i).encode()),
            {"dense": vectors[i]},
            {"modality": "image" if i % 2 else "text", "i": i, "tag": f"t{i % 3}"},
        )
        for i in range(N)
    ]


def _queries(n: int, seed: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


S = TypeVar("S", bound=VectorStore)


def _fill(store: S) -> S:
    store.create_collection(
        CollectionSpec(NAME, dense={"dense": DIM}, payload_indexes={"modality": "keyword"})
    )
    store.upsert(NAME, _points())
    return store


@pytest.fixture(params=["edge", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    opened: VectorStore = (
        EdgeVectorStore(tmp_path / "edge")
        if request.param == "edge"
        else QdrantServerStore(path=tmp_path / "local")
    )
    with _fill(opened) as s:
        yield s


def _key(hits: Sequence[ScoredPoint]) -> list[tuple[object, float, object]]:
    return [(h.id, round(h.score, 5), h.payload) for h in hits]


def test_search_batch_gives_each_search_its_own_hits_or_error(store: VectorStore) -> None:
    vectors = _queries(5)
    only_images = Filter(must=[Match("modality", "image")])
    queries = [
        SearchQuery(vectors[0], using="dense", limit=5, exact=True),
        SearchQuery(vectors[1], limit=3, filter=only_images, exact=True),
        SearchQuery(np.ones(DIM + 1, dtype=np.float32), limit=3),  # wrong size
        SearchQuery(vectors[2], limit=4, exact=True, with_payload=False),
        SearchQuery(vectors[3], limit=4, exact=True, score_threshold=0.2),
    ]
    out = store.search_batch(NAME, queries)
    assert len(out) == len(queries)
    assert isinstance(out[2], DimensionMismatch)
    for query, got in zip(queries, out, strict=True):
        if query is queries[2]:
            continue
        assert isinstance(got, list)
        want = store.search(
            NAME,
            query.vector,
            using=query.using,
            limit=query.limit,
            filter=query.filter,
            exact=query.exact,
            with_payload=query.with_payload,
            score_threshold=query.score_threshold,
        )
        assert _key(got) == _key(want) and got  # the same hits, best first
    assert all(h.payload is None for h in out[3])  # type: ignore[union-attr]
    assert all(h.payload["modality"] == "image" for h in out[1])  # type: ignore[union-attr,index]
    missing = store.search_batch("no-such-collection", queries[:2])
    assert all(isinstance(x, CollectionNotFound) for x in missing)


def test_collection_spec_is_the_spec_without_a_count(store: VectorStore) -> None:
    assert store.collection_spec(NAME) == store.collection_info(NAME).spec
    with pytest.raises(CollectionNotFound):
        store.collection_spec("no-such-collection")


def test_edge_search_threads_setting_keeps_results(tmp_path: Path) -> None:
    vectors = _queries(3)
    results = []
    for threads in (None, 2, 1):  # create with the engine default, reopen with a setting
        with EdgeVectorStore(tmp_path, search_threads=threads) as s:
            if threads is None:
                _fill(s)
            results.append([_key(s.search(NAME, v, limit=5, exact=True)) for v in vectors])
    assert results[0] == results[1] == results[2]


class SpyStore(EdgeVectorStore):
    """Records each search_batch call (size, thread) and holds it a little so that searches
    submitted meanwhile have to wait and form the next batch."""

    def __init__(self, root: Path, hold: float = 0.0) -> None:
        super().__init__(root)
        self.calls: list[tuple[int, int]] = []
        self.hold = hold

    def search_batch(
        self, collection: str, queries: Sequence[SearchQuery]
    ) -> list[list[ScoredPoint] | Exception]:
        self.calls.append((len(queries), threading.get_ident()))
        time.sleep(self.hold)
        return super().search_batch(collection, queries)


def test_runner_batches_concurrent_searches_with_the_same_hits(tmp_path: Path) -> None:
    store = _fill(SpyStore(tmp_path, hold=0.01))
    vectors = _queries(40)
    runner = search.SearchRunner(store, workers=2)

    async def go() -> list[list[ScoredPoint] | BaseException]:
        queries = [SearchQuery(v, using="dense", limit=5, exact=True) for v in vectors]
        queries[7] = SearchQuery(np.ones(3, dtype=np.float32), using="dense", limit=5)
        return await asyncio.gather(
            *(runner.search(NAME, q) for q in queries), return_exceptions=True
        )

    try:
        out = asyncio.run(go())
    finally:
        runner.close()
    assert isinstance(out[7], DimensionMismatch)  # its error, and only its own
    for i, got in enumerate(out):
        if i != 7:
            assert isinstance(got, list)
            assert _key(got) == _key(store.search(NAME, vectors[i], limit=5, exact=True))
    sizes = [n for n, _ in store.calls]
    assert sum(sizes) == len(vectors)
    assert max(sizes) > 1  # callers that arrived while the engine was busy shared a call
    main = threading.get_ident()
    assert all(thread != main for _, thread in store.calls)  # never on the loop when busy


def test_runner_searches_inline_when_they_come_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A search slower than this never blocks the loop; a loaded test machine can make tiny
    # searches look slow, which is not what this test is about.
    monkeypatch.setattr(search, "INLINE_MAX_SECONDS", 10.0)
    store = _fill(SpyStore(tmp_path))
    vectors = _queries(60)
    runner = search.SearchRunner(store, workers=2)

    async def go(exact: bool) -> list[list[ScoredPoint]]:
        return [
            await runner.search(NAME, SearchQuery(v, using="dense", limit=5, exact=exact))
            for v in vectors
        ]

    try:
        loop = asyncio.new_event_loop()
        hnsw = loop.run_until_complete(go(False))
        inline_hnsw = sum(thread == threading.get_ident() for _, thread in store.calls)
        store.calls.clear()
        exact = loop.run_until_complete(go(True))
        loop.close()
    finally:
        runner.close()
    main = threading.get_ident()
    assert all(thread != main for _, thread in store.calls)  # exact searches never inline
    for v, a, b in zip(vectors, hnsw, exact, strict=True):
        want = _key(store.search(NAME, v, limit=5, exact=True))
        assert _key(b) == want and len(a) == 5
    assert inline_hnsw > len(vectors) // 2  # most HNSW searches ran on the loop itself


def test_runner_inline_errors_are_raised(tmp_path: Path) -> None:
    store = _fill(EdgeVectorStore(tmp_path))
    runner = search.SearchRunner(store)

    async def go() -> None:
        for _ in range(40):  # past the quiet threshold, so the last ones run inline
            with pytest.raises(DimensionMismatch):
                await runner.search(NAME, SearchQuery(np.ones(3, dtype=np.float32), limit=2))

    try:
        asyncio.run(go())
    finally:
        runner.close()
        store.close()


# ----------------------------------------------------------------------------- wire


def _reference_hit(p: ScoredPoint, with_payload: bool = True) -> retrieval_pb2.Hit:
    """The conversion before the in-place one: strip, pop modality, Struct.update, CopyFrom."""
    payload = thumbnails.strip(p.payload or {})
    modality = str(payload.pop("modality", ""))
    enum = MODALITY_ENUMS.get(modality, 0)
    hit = retrieval_pb2.Hit(id=str(p.id), score=p.score, modality=enum)  # type: ignore[arg-type]
    if p.payload is not None and with_payload:
        hit.payload.CopyFrom(payload_from_dict(payload))
    return hit


PAYLOADS: list[dict[str, object] | None] = [
    {"modality": "image", "i": 3, "uri": "/a.png"},
    {"modality": "text", "flag": True, "off": False, "none": None, "x": 1.5, "big": 2**40},
    {"nested": {"a": [1, "b", {"c": None}], "d": {}}, "list": [], "modality": "image"},
    {"thumbnail": "aGk=", "modality": "image"},  # nothing left to send: an empty payload
    {},
    None,
    {"modality": "video", "k": "v"},  # an unknown modality is 0, as before
]


@pytest.mark.parametrize("with_payload", [True, False])
def test_add_hits_writes_what_the_generic_conversion_wrote(with_payload: bool) -> None:
    points = [
        ScoredPoint(point_id(str(i).encode()) if i % 2 else i, 0.5 - i / 10, p)
        for i, p in enumerate(PAYLOADS)
    ]
    response = retrieval_pb2.SearchResponse(collection="c")
    convert.add_hits(response.hits, points, with_payload=with_payload)
    want = retrieval_pb2.SearchResponse(collection="c")
    want.hits.extend(_reference_hit(p, with_payload) for p in points)
    assert response == want
    assert response.SerializeToString(deterministic=True) == want.SerializeToString(
        deterministic=True
    )
    assert response.hits[3].HasField("payload") == with_payload
    assert not response.hits[5].HasField("payload")


def test_add_hits_refuses_what_struct_refuses() -> None:
    point = ScoredPoint(1, 0.1, {"bad": object()})
    with pytest.raises(ValueError):
        convert.add_hits(retrieval_pb2.SearchResponse().hits, [point])
    assert isinstance(common_pb2.Payload().fields, struct_pb2.Struct)


# ----------------------------------------------------------------------------- catalog


def test_cached_catalog_entry_is_served_without_a_store_read(tmp_path: Path) -> None:
    with EdgeVectorStore(tmp_path) as store:
        _fill(store)
        collections = Collections(store)
        assert collections.cached(NAME) is None  # never read yet
        entry = collections.entry(NAME)  # made outside retrieval: described from its spec
        assert entry.dim == DIM and not entry.has_tokens
        assert collections.cached(NAME) == entry
        assert collections.cached("concord-catalog") is None
