"""Tests of concord.vectors: the same behaviour on every backend, and edge/client parity.

Backends: qdrant-edge (embedded default), qdrant-client local mode (the client API the server
path uses), and a real Qdrant server when CONCORD_TEST_QDRANT_URL is set.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from concord.config import Settings
from concord.vectors import (
    CollectionConflict,
    CollectionNotFound,
    CollectionSpec,
    DimensionMismatch,
    EdgeVectorStore,
    Filter,
    InvalidArgument,
    Match,
    MatchAny,
    Point,
    QdrantServerStore,
    Range,
    StoreClosed,
    StoreLocked,
    UnknownVector,
    VectorStore,
    open_store,
    point_id,
)

QDRANT_URL = os.environ.get("CONCORD_TEST_QDRANT_URL")
BACKENDS = [
    "edge",
    "local",
    pytest.param(
        "server",
        marks=pytest.mark.skipif(
            not QDRANT_URL, reason="CONCORD_TEST_QDRANT_URL not set: no Qdrant server to test"
        ),
    ),
]
DIM, TOK = 8, 4  # dense dim, per-token dim
N = 40

Opener = Callable[[], VectorStore]


def _opener(kind: str, path: Path) -> Opener:
    if kind == "edge":
        return lambda: EdgeVectorStore(path / "edge")
    if kind == "local":
        return lambda: QdrantServerStore(path=path / "local")
    return lambda: QdrantServerStore(url=QDRANT_URL)


@pytest.fixture(params=BACKENDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    return _opener(request.param, tmp_path)


@pytest.fixture
def store(opener: Opener) -> Iterator[VectorStore]:
    s = opener()
    yield s
    s.close()


@pytest.fixture
def cname(store: VectorStore) -> Iterator[str]:
    """A unique collection name (a real server is shared), dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with contextlib.suppress(StoreClosed):  # some tests close the store themselves
        store.delete_collection(name)


def spec_for(name: str) -> CollectionSpec:
    return CollectionSpec(
        name=name,
        dense={"dense": DIM},
        multivector={"tokens": TOK},
        payload_indexes={"kind": "keyword", "n": "integer"},
    )


def make_points(seed: int = 0, n: int = N) -> list[Point]:
    rng = np.random.default_rng(seed)
    points = []
    for i in range(n):
        n_tokens = int(rng.integers(2, 6))
        points.append(
            Point(
                id=point_id(f"item-{i}".encode(), "test"),
                vectors={
                    "dense": rng.normal(size=DIM).astype(np.float32),
                    "tokens": rng.normal(size=(n_tokens, TOK)).astype(np.float32),
                },
                payload={"i": i, "n": i % 10, "kind": ["cat", "dog", "fox"][i % 3], "x": i / 4},
            )
        )
    return points


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def maxsim(query: np.ndarray, doc: np.ndarray) -> float:
    """Late interaction: sum over query rows of the best cosine against any doc row."""
    return float((_unit(query) @ _unit(doc).T).max(axis=1).sum())


def filled(store: VectorStore, name: str) -> list[Point]:
    points = make_points()
    assert store.create_collection(spec_for(name)) is True
    store.upsert(name, points)
    return points


# --------------------------------------------------------------------------- ids


def test_point_id_is_deterministic_uuid() -> None:
    a = point_id(b"an image", "image")
    assert a == point_id(b"an image", "image")
    assert str(uuid.UUID(a)) == a
    assert a != point_id(b"an image", "text")
    assert a != point_id(b"another image", "image")
    assert point_id(b"") != point_id(b"", "x")


def test_point_normalizes_ids_and_rejects_bad_ones() -> None:
    u = uuid.uuid4()
    assert Point(u, {"dense": [1.0]}).id == str(u)
    assert Point(str(u).upper(), {"dense": [1.0]}).id == str(u)
    assert Point(7, {"dense": [1.0]}).id == 7
    for bad in ("not-a-uuid", -1, True, 1.5):
        with pytest.raises(InvalidArgument) as info:
            Point(bad, {"dense": [1.0]})  # type: ignore[arg-type]
        assert info.value.field == "id"
    with pytest.raises(InvalidArgument, match=r"vectors\.dense"):
        Point(1, {"dense": [1.0, float("nan")]})


def test_spec_validation_and_shorthand() -> None:
    assert CollectionSpec("c", dense=16).dense_dims == {"dense": 16}
    assert CollectionSpec.from_dict(spec_for("c").to_dict()) == spec_for("c")
    with pytest.raises(InvalidArgument, match="name"):
        CollectionSpec("../escape", dense=4)
    with pytest.raises(InvalidArgument, match=r"dense\.v"):
        CollectionSpec("c", dense={"v": 0})
    with pytest.raises(InvalidArgument, match="at least one vector"):
        CollectionSpec("c")
    with pytest.raises(InvalidArgument, match="multivector"):
        CollectionSpec("c", dense={"v": 4}, multivector={"v": 4})


# --------------------------------------------------------------------------- collections


def test_create_is_idempotent_and_conflicts_on_other_spec(store: VectorStore, cname: str) -> None:
    spec = spec_for(cname)
    assert store.create_collection(spec) is True
    assert store.create_collection(spec) is False
    assert cname in store.list_collections()
    info = store.collection_info(cname)
    assert info.spec == spec
    assert info.count == 0
    other = CollectionSpec(name=cname, dense={"dense": DIM + 1}, multivector={"tokens": TOK})
    with pytest.raises(CollectionConflict, match=cname):
        store.create_collection(other)
    assert store.delete_collection(cname) is True
    assert store.delete_collection(cname) is False
    assert cname not in store.list_collections()


def test_unknown_collection_raises_typed_error(store: VectorStore) -> None:
    missing = f"missing_{uuid.uuid4().hex[:8]}"
    calls: list[Callable[[], object]] = [
        lambda: store.collection_info(missing),
        lambda: store.upsert(missing, make_points(n=1)),
        lambda: store.search(missing, np.ones(DIM)),
        lambda: store.count(missing),
        lambda: store.retrieve(missing, [1]),
    ]
    for call in calls:
        with pytest.raises(CollectionNotFound) as info:
            call()
        assert info.value.collection == missing
        assert missing in str(info.value)


# --------------------------------------------------------------------------- points


def test_upsert_retrieve_count_delete(store: VectorStore, cname: str) -> None:
    points = filled(store, cname)
    assert store.count(cname) == N
    # Same content -> same ids: a replay overwrites instead of duplicating.
    store.upsert(cname, make_points())
    assert store.count(cname) == N

    wanted = [points[5].id, points[2].id, str(uuid.uuid4())]
    got = store.retrieve(cname, wanted, with_vectors=True)
    assert [p.id for p in got] == [points[5].id, points[2].id]
    assert got[0].payload == points[5].payload
    np.testing.assert_allclose(
        _unit(np.array(got[0].vectors["dense"])),
        _unit(np.array(points[5].vectors["dense"])),
        atol=1e-5,
    )
    assert np.array(got[0].vectors["tokens"]).shape == np.array(points[5].vectors["tokens"]).shape
    assert store.retrieve(cname, [points[0].id])[0].vectors == {}

    store.delete(cname, [points[0].id, points[1].id])
    assert store.count(cname) == N - 2
    assert store.retrieve(cname, [points[0].id]) == []


def test_dimension_and_vector_name_errors_name_the_field(store: VectorStore, cname: str) -> None:
    store.create_collection(spec_for(cname))
    bad_dim = Point(1, {"dense": np.ones(DIM + 1)})
    with pytest.raises(DimensionMismatch) as info:
        store.upsert(cname, [make_points(n=1)[0], bad_dim])
    assert info.value.field == "points[1].vectors.dense"
    assert f"expected {DIM} values" in str(info.value)

    with pytest.raises(DimensionMismatch, match="tokens"):
        store.upsert(cname, [Point(1, {"tokens": np.ones((3, TOK + 2))})])
    with pytest.raises(UnknownVector) as uinfo:
        store.upsert(cname, [Point(1, {"image": np.ones(DIM)})])
    assert uinfo.value.field == "points[0].vectors.image"
    with pytest.raises(DimensionMismatch) as qinfo:
        store.search(cname, np.ones(DIM - 1))
    assert qinfo.value.field == "vector"
    with pytest.raises(UnknownVector, match="nope") as winfo:
        store.search(cname, np.ones(DIM), using="nope")
    assert winfo.value.field == "using"
    with pytest.raises(UnknownVector):  # a multivector is not a dense vector
        store.search(cname, np.ones(DIM), using="tokens")
    with pytest.raises(InvalidArgument, match="limit"):
        store.search(cname, np.ones(DIM), limit=0)
    assert store.count(cname) == 0  # nothing half-written


# --------------------------------------------------------------------------- search


def test_dense_exact_search_matches_numpy(store: VectorStore, cname: str) -> None:
    points = filled(store, cname)
    q = np.random.default_rng(7).normal(size=DIM)
    hits = store.search(cname, q, limit=5, exact=True)
    matrix = _unit(np.array([p.vectors["dense"] for p in points]))
    expected = np.argsort(-(matrix @ _unit(q)))[:5]
    assert [h.id for h in hits] == [points[i].id for i in expected]
    assert hits[0].score == pytest.approx(float(matrix[expected[0]] @ _unit(q)), abs=1e-4)
    assert hits[0].payload == points[expected[0]].payload
    assert all(h.payload is None for h in store.search(cname, q, limit=3, with_payload=False))
    between = (hits[1].score + hits[2].score) / 2  # keeps the first two hits only
    assert [h.id for h in store.search(cname, q, limit=5, exact=True, score_threshold=between)] == [
        hits[0].id,
        hits[1].id,
    ]


def test_filters(store: VectorStore, cname: str) -> None:
    points = filled(store, cname)
    by_i = {p.payload["i"]: p for p in points}

    def ids(f: Filter) -> set[int]:
        hits = store.search(cname, np.ones(DIM), limit=N, filter=f, exact=True)
        return {h.payload["i"] for h in hits}  # type: ignore[index]

    assert ids(Filter(must=[Match("kind", "cat")])) == {i for i in by_i if i % 3 == 0}
    assert ids(Filter(must=[MatchAny("n", [1, 2])])) == {i for i in by_i if i % 10 in (1, 2)}
    assert ids(Filter(must=[Range("x", gte=2.0, lt=3.0)])) == {8, 9, 10, 11}
    assert ids(Filter(must_not=[MatchAny("kind", ["cat", "dog"])])) == {
        i for i in by_i if i % 3 == 2
    }
    nested = Filter(
        must=[Match("kind", "fox")],
        should=[Range("i", lt=5), Filter(must=[Match("n", 9)])],
    )
    assert ids(nested) == {2, 29}
    assert store.count(cname, Filter(must=[Match("kind", "dog")])) == len(
        [i for i in by_i if i % 3 == 1]
    )
    store.delete_by_filter(cname, Filter(must=[Range("i", gte=30)]))
    assert store.count(cname) == 30
    with pytest.raises(InvalidArgument, match="filter"):
        store.delete_by_filter(cname, Filter())


def test_multivector_maxsim_matches_numpy(store: VectorStore, cname: str) -> None:
    points = filled(store, cname)
    q = np.random.default_rng(11).normal(size=(3, TOK))
    hits = store.search_multivector(cname, q, limit=5, exact=True)
    scores = np.array([maxsim(q, np.array(p.vectors["tokens"])) for p in points])
    expected = np.argsort(-scores)[:5]
    assert [h.id for h in hits] == [points[i].id for i in expected]
    assert [h.score for h in hits] == pytest.approx(list(scores[expected]), abs=1e-4)


def test_dense_prefetch_then_maxsim_rerank(store: VectorStore, cname: str) -> None:
    points = filled(store, cname)
    rng = np.random.default_rng(13)
    qd, qt = rng.normal(size=DIM), rng.normal(size=(3, TOK))
    only_dogs = Filter(must=[Match("kind", "dog")])
    hits = store.search_rerank(
        cname, qd, qt, prefetch_limit=6, limit=4, exact=True, filter=only_dogs
    )
    dogs = [p for p in points if p.payload["kind"] == "dog"]
    dense = _unit(np.array([p.vectors["dense"] for p in dogs])) @ _unit(qd)
    candidates = [dogs[i] for i in np.argsort(-dense)[:6]]
    reranked = sorted(candidates, key=lambda p: -maxsim(qt, np.array(p.vectors["tokens"])))[:4]
    assert [h.id for h in hits] == [p.id for p in reranked]
    # The rerank really changed something relative to dense order for this seed.
    assert [h.id for h in hits] != [p.id for p in candidates[:4]]


# --------------------------------------------------------------------------- lifecycle


def test_persists_across_close_and_reopen(opener: Opener) -> None:
    name = f"p_{uuid.uuid4().hex[:12]}"
    q = np.random.default_rng(3).normal(size=DIM)
    with opener() as first:
        filled(first, name)
        first.optimize(name)
        before = first.search(name, q, limit=5, exact=True)
    with opener() as second:
        try:
            assert name in second.list_collections()
            assert second.collection_info(name).spec == spec_for(name)
            assert second.count(name) == N
            after = second.search(name, q, limit=5, exact=True)
            assert [h.id for h in after] == [h.id for h in before]
        finally:
            second.delete_collection(name)


def test_closed_store_refuses_calls(store: VectorStore, cname: str) -> None:
    store.create_collection(spec_for(cname))
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreClosed):
        store.count(cname)


def test_concurrent_upserts_from_threads(store: VectorStore, cname: str) -> None:
    store.create_collection(spec_for(cname))
    points = make_points(n=80)
    errors: list[BaseException] = []

    def work(chunk: list[Point]) -> None:
        try:
            for p in chunk:
                store.upsert(cname, [p])
                store.search(cname, np.ones(DIM), limit=1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(points[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count(cname) == 80


def test_edge_shard_has_one_owner(tmp_path: Path) -> None:
    with EdgeVectorStore(tmp_path) as first:
        first.create_collection(CollectionSpec("c", dense=4))
        with EdgeVectorStore(tmp_path) as second:
            assert second.list_collections() == ["c"]
            with pytest.raises(StoreLocked, match="one process"):
                second.count("c")


def test_edge_spec_file_is_the_catalogue(tmp_path: Path) -> None:
    with EdgeVectorStore(tmp_path) as s:
        s.create_collection(spec_for("cat"))
    assert CollectionSpec.from_dict(
        json.loads((tmp_path / "cat" / "collection.json").read_text())
    ) == spec_for("cat")
    (tmp_path / "half_created" / "shard").mkdir(parents=True)  # no spec: not a collection
    with EdgeVectorStore(tmp_path) as s:
        assert s.list_collections() == ["cat"]
        assert s.create_collection(CollectionSpec("half_created", dense=4)) is True


# --------------------------------------------------------------------------- parity


def test_edge_and_client_give_the_same_exact_results(tmp_path: Path) -> None:
    rng = np.random.default_rng(21)
    queries = [(rng.normal(size=DIM), rng.normal(size=(3, TOK))) for _ in range(5)]
    flt = Filter(must_not=[Match("kind", "fox")], must=[Range("i", gte=3)])
    results: dict[str, list[list[tuple[object, float]]]] = {}
    for kind in ("edge", "local"):
        with _opener(kind, tmp_path)() as s:
            filled(s, "parity")
            out = []
            for qd, qt in queries:
                out.append(s.search("parity", qd, limit=7, exact=True))
                out.append(s.search("parity", qd, limit=7, exact=True, filter=flt))
                out.append(s.search_multivector("parity", qt, limit=7, exact=True))
                out.append(
                    s.search_rerank("parity", qd, qt, prefetch_limit=10, limit=5, exact=True)
                )
            results[kind] = [[(h.id, h.score) for h in hits] for hits in out]
    for edge_hits, local_hits in zip(results["edge"], results["local"], strict=True):
        assert [i for i, _ in edge_hits] == [i for i, _ in local_hits]
        assert [s for _, s in edge_hits] == pytest.approx([s for _, s in local_hits], abs=1e-4)


# --------------------------------------------------------------------------- factory


def test_open_store_follows_settings(tmp_path: Path) -> None:
    embedded = Settings(home=tmp_path)
    with open_store(embedded) as s:
        assert isinstance(s, EdgeVectorStore)
        assert s.root == embedded.vectors_dir
        s.create_collection(CollectionSpec("c", dense=4))
    assert (tmp_path / "vectors" / "c" / "collection.json").is_file()
    remote = Settings(home=tmp_path, vectors="qdrant", qdrant={"url": "http://127.0.0.1:1"})
    with open_store(remote) as s:
        assert isinstance(s, QdrantServerStore)
