"""`EdgeVectorStore`: the embedded default, the real Qdrant engine in process (qdrant-edge).

Layout: `<root>/<collection>/shard/` (one EdgeShard) and `<root>/<collection>/collection.json`
(the spec; written last, so a directory without it is an unfinished create).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import qdrant_edge as qe

from concord.vectors.base import VectorStore
from concord.vectors.errors import (
    CollectionConflict,
    CollectionNotFound,
    InvalidArgument,
    StoreClosed,
    StoreLocked,
    VectorStoreError,
)
from concord.vectors.types import (
    CollectionInfo,
    CollectionSpec,
    Filter,
    Match,
    MatchAny,
    Point,
    PointId,
    Range,
    ScoredPoint,
    SearchQuery,
    VectorLike,
    named_vectors,
    normalize_id,
    valid_collection_name,
)
from concord.vectors.validation import check_limit, check_points, query_dense, query_multi

SPEC_FILE = "collection.json"
SHARD_DIR = "shard"
# One engine thread per query. Callers already run queries side by side (retrieval's
# SearchRunner: one thread per core); qdrant-edge's default pool (sized from the CPU count,
# 8 threads on a 2-core node, one pool per shard) spreads each query's segments over threads
# that then fight those callers for the cores. Measured on 2 cores, 100k x 128, 2 segments:
# a served search cost 4.6 ms of process CPU with the default pool, 3.4 ms with one thread,
# at the same single-query latency.
DEFAULT_SEARCH_THREADS = 1

_DISTANCE = {"cosine": qe.Distance.Cosine, "dot": qe.Distance.Dot, "euclid": qe.Distance.Euclid}
_PAYLOAD = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "float": qe.PayloadSchemaType.Float,
    "bool": qe.PayloadSchemaType.Bool,
}
T = TypeVar("T")


class EdgeVectorStore(VectorStore):
    """Collections as qdrant-edge shards under one directory.

    One process (one instance) owns the directory: qdrant-edge lets only one handle open a
    shard, and a second open raises `StoreLocked`. Queries and updates run concurrently from
    threads (the engine releases the GIL); creating, dropping and opening shards is serialised.
    """

    def __init__(
        self, root: str | os.PathLike[str], search_threads: int | None = DEFAULT_SEARCH_THREADS
    ) -> None:
        """Args:
        root: the directory holding the collections (created if missing).
        search_threads: threads in each shard's search pool (qdrant-edge's
            `max_search_threads`), set on every shard this store creates or opens; None
            leaves a shard's own setting (a new shard then sizes its pool from the CPU count).
        """
        self._root = Path(root)
        self._search_threads = search_threads
        self._root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._shards: dict[str, qe.EdgeShard] = {}
        self._specs: dict[str, CollectionSpec] = {}
        self._closed = False

    @property
    def root(self) -> Path:
        """The directory holding the collections."""
        return self._root

    # ----------------------------------------------------------------- catalogue

    def _dir(self, name: str) -> Path:
        return self._root / name

    def _read_spec(self, name: str) -> CollectionSpec | None:
        path = self._dir(name) / SPEC_FILE
        if not path.is_file():
            return None
        return CollectionSpec.from_dict(_load_json(path))

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"EdgeVectorStore at {self._root} is closed")

    def _spec(self, name: str) -> CollectionSpec:
        with self._lock:
            self._check_open()
            spec = self._specs.get(name)
            if spec is None:
                spec = self._read_spec(name) if _valid_name(name) else None
                if spec is None:
                    raise CollectionNotFound(name)
                self._specs[name] = spec
            return spec

    def _shard(self, name: str) -> tuple[CollectionSpec, qe.EdgeShard]:
        with self._lock:
            spec = self._spec(name)
            shard = self._shards.get(name)
            if shard is None:
                path = self._dir(name) / SHARD_DIR
                shard = _call(lambda: self._load(spec, path), name, path)
                self._shards[name] = shard
            return spec, shard

    def _load(self, spec: CollectionSpec, path: Path) -> qe.EdgeShard:
        if self._search_threads is None:
            return qe.EdgeShard.load(str(path))
        config = qe.EdgeConfig(vectors=_edge_vectors(spec), max_search_threads=self._search_threads)
        try:
            return qe.EdgeShard.load(str(path), config)
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise
            # A shard the config does not describe (made elsewhere): open it as it is.
            return qe.EdgeShard.load(str(path))

    def create_collection(self, spec: CollectionSpec) -> bool:
        """See `VectorStore.create_collection`."""
        with self._lock:
            self._check_open()
            existing = self._read_spec(spec.name)
            if existing is not None:
                if existing != spec:
                    raise CollectionConflict(
                        f"collection {spec.name!r} exists with spec {existing.to_dict()}, "
                        f"asked for {spec.to_dict()}"
                    )
                return False
            cdir = self._dir(spec.name)
            if cdir.exists():  # an earlier create died before writing the spec
                shutil.rmtree(cdir)
            shard_path = cdir / SHARD_DIR
            config = qe.EdgeConfig(
                vectors=_edge_vectors(spec), max_search_threads=self._search_threads
            )
            shard = _call(
                lambda: qe.EdgeShard.create(str(shard_path), config), spec.name, shard_path
            )
            for key, ptype in spec.payload_indexes.items():
                shard.update(qe.UpdateOperation.create_field_index(key, _PAYLOAD[ptype]))
            shard.flush()
            tmp = cdir / f".{SPEC_FILE}.tmp"
            tmp.write_text(spec.to_json())
            os.replace(tmp, cdir / SPEC_FILE)  # atomic: the collection exists from here on
            self._shards[spec.name] = shard
            self._specs[spec.name] = spec
            return True

    def delete_collection(self, name: str) -> bool:
        """See `VectorStore.delete_collection`."""
        with self._lock:
            self._check_open()
            if not _valid_name(name) or self._read_spec(name) is None:
                return False
            shard = self._shards.pop(name, None)
            self._specs.pop(name, None)
            if shard is not None:
                shard.close()
            # Remove the spec first so a crash mid-rmtree leaves an "unfinished" dir, not a
            # collection with half a shard.
            (self._dir(name) / SPEC_FILE).unlink()
            shutil.rmtree(self._dir(name))
            return True

    def list_collections(self) -> list[str]:
        """See `VectorStore.list_collections`."""
        with self._lock:
            self._check_open()
            return sorted(
                p.name for p in self._root.iterdir() if p.is_dir() and (p / SPEC_FILE).is_file()
            )

    def collection_info(self, name: str) -> CollectionInfo:
        """See `VectorStore.collection_info`."""
        return CollectionInfo(spec=self._spec(name), count=self.count(name))

    def collection_spec(self, name: str) -> CollectionSpec:
        """See `VectorStore.collection_spec`."""
        return self._spec(name)

    # ----------------------------------------------------------------- points

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        """See `VectorStore.upsert`."""
        spec, shard = self._shard(collection)
        check_points(spec, points)
        if not points:
            return
        edge_points = [qe.Point(p.id, dict(p.vectors), dict(p.payload)) for p in points]
        _call(lambda: shard.update(qe.UpdateOperation.upsert_points(edge_points)), collection)

    def retrieve(
        self, collection: str, ids: Sequence[PointId], *, with_vectors: bool = False
    ) -> list[Point]:
        """See `VectorStore.retrieve`."""
        _, shard = self._shard(collection)
        wanted = [normalize_id(i, f"ids[{n}]") for n, i in enumerate(ids)]
        if not wanted:
            return []
        records = _call(
            lambda: shard.retrieve(list(wanted), with_payload=True, with_vector=with_vectors),
            collection,
        )
        found = {
            _out_id(r.id): Point(
                _out_id(r.id),
                named_vectors(r.vector) if with_vectors else {},
                r.payload or {},
            )
            for r in records
        }
        return [found[i] for i in dict.fromkeys(wanted) if i in found]

    def delete(self, collection: str, ids: Sequence[PointId]) -> None:
        """See `VectorStore.delete`."""
        _, shard = self._shard(collection)
        wanted = [normalize_id(i, f"ids[{n}]") for n, i in enumerate(ids)]
        if wanted:
            _call(lambda: shard.update(qe.UpdateOperation.delete_points(list(wanted))), collection)

    def delete_by_filter(self, collection: str, filter: Filter) -> None:
        """See `VectorStore.delete_by_filter`."""
        _, shard = self._shard(collection)
        if filter is None or filter.empty:
            raise InvalidArgument(
                "filter", "refusing to delete by an empty filter (use delete_collection)"
            )
        op = qe.UpdateOperation.delete_points_by_filter(to_edge_filter(filter))
        _call(lambda: shard.update(op), collection)

    def count(self, collection: str, filter: Filter | None = None) -> int:
        """See `VectorStore.count`."""
        _, shard = self._shard(collection)
        request = qe.CountRequest(exact=True, filter=_opt_filter(filter))
        return int(_call(lambda: shard.count(request), collection))

    # ----------------------------------------------------------------- search

    def search(
        self,
        collection: str,
        vector: VectorLike,
        *,
        using: str | None = None,
        limit: int = 10,
        filter: Filter | None = None,
        exact: bool = False,
        with_payload: bool = True,
        score_threshold: float | None = None,
    ) -> list[ScoredPoint]:
        """See `VectorStore.search`."""
        spec, shard = self._shard(collection)
        query = SearchQuery(vector, using, limit, filter, exact, with_payload, score_threshold)
        request = _dense_request(spec, query)
        return _scored(_call(lambda: shard.query(request), collection), with_payload)

    def search_batch(
        self, collection: str, queries: Sequence[SearchQuery]
    ) -> list[list[ScoredPoint] | Exception]:
        """See `VectorStore.search_batch`: the valid queries run as one `query_batch`."""
        try:
            spec, shard = self._shard(collection)
        except VectorStoreError as exc:
            return [exc for _ in queries]
        out: list[list[ScoredPoint] | Exception] = []
        planned: list[tuple[int, qe.QueryRequest]] = []
        for i, query in enumerate(queries):
            try:
                planned.append((i, _dense_request(spec, query)))
                out.append([])
            except VectorStoreError as exc:
                out.append(exc)
        if not planned:
            return out
        requests = [request for _, request in planned]
        try:
            if len(requests) == 1:
                results = [_call(lambda: shard.query(requests[0]), collection)]
            else:
                batch = qe.QueryBatchRequest(requests)
                results = _call(lambda: shard.query_batch(batch), collection)
        except VectorStoreError:
            if len(requests) == 1:
                raise
            # One query's engine error must not fail the others: each on its own again.
            return self._each(collection, shard, queries, planned, out)
        for (i, _), hits in zip(planned, results, strict=True):
            out[i] = _scored(hits, queries[i].with_payload)
        return out

    def _each(
        self,
        collection: str,
        shard: qe.EdgeShard,
        queries: Sequence[SearchQuery],
        planned: list[tuple[int, qe.QueryRequest]],
        out: list[list[ScoredPoint] | Exception],
    ) -> list[list[ScoredPoint] | Exception]:
        for i, request in planned:
            try:
                hits = _call(functools.partial(shard.query, request), collection)
                out[i] = _scored(hits, queries[i].with_payload)
            except VectorStoreError as exc:
                out[i] = exc
        return out

    def search_multivector(
        self,
        collection: str,
        vectors: VectorLike,
        *,
        using: str | None = None,
        limit: int = 10,
        filter: Filter | None = None,
        exact: bool = False,
        with_payload: bool = True,
    ) -> list[ScoredPoint]:
        """See `VectorStore.search_multivector`."""
        spec, shard = self._shard(collection)
        name, rows = query_multi(spec, using, vectors)
        check_limit(limit)
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(rows, using=name),
            filter=_opt_filter(filter),
            params=qe.SearchParams(exact=exact),
            with_payload=with_payload,
        )
        return _scored(_call(lambda: shard.query(request), collection), with_payload)

    def search_rerank(
        self,
        collection: str,
        vector: VectorLike,
        multivector: VectorLike,
        *,
        using: str | None = None,
        rerank_using: str | None = None,
        prefetch_limit: int = 100,
        limit: int = 10,
        filter: Filter | None = None,
        exact: bool = False,
        with_payload: bool = True,
    ) -> list[ScoredPoint]:
        """See `VectorStore.search_rerank`."""
        spec, shard = self._shard(collection)
        dense_name, vec = query_dense(spec, using, vector)
        multi_name, rows = query_multi(spec, rerank_using, multivector, "multivector")
        check_limit(limit)
        check_limit(prefetch_limit, "prefetch_limit")
        edge_filter = _opt_filter(filter)
        params = qe.SearchParams(exact=exact)
        request = qe.QueryRequest(
            limit=limit,
            prefetches=[
                qe.Prefetch(
                    limit=prefetch_limit,
                    query=qe.Query.Nearest(vec, using=dense_name),
                    filter=edge_filter,
                    params=params,
                )
            ],
            query=qe.Query.Nearest(rows, using=multi_name),
            filter=edge_filter,
            params=params,
            with_payload=with_payload,
        )
        return _scored(_call(lambda: shard.query(request), collection), with_payload)

    # ----------------------------------------------------------------- lifecycle

    def optimize(self, collection: str) -> None:
        """Build HNSW and merge segments now; blocks the calling thread (minutes at 100k x 384)."""
        _, shard = self._shard(collection)
        _call(shard.optimize, collection)

    def close(self) -> None:
        """See `VectorStore.close`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            shards, self._shards = self._shards, {}
            errors: list[str] = []
            for name, shard in shards.items():
                try:
                    shard.flush()
                    shard.close()
                except Exception as exc:  # close the others even if one fails
                    errors.append(f"{name}: {exc}")
            if errors:
                raise VectorStoreError("closing shards failed: " + "; ".join(errors))


# --------------------------------------------------------------------------- helpers


def _valid_name(name: str) -> bool:
    # Never let a name like "../x" reach the filesystem; invalid names are simply unknown.
    return valid_collection_name(name)


def _load_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _edge_vectors(spec: CollectionSpec) -> dict[str, qe.EdgeVectorParams]:
    distance = _DISTANCE[spec.distance]
    vectors = {name: qe.EdgeVectorParams(dim, distance) for name, dim in spec.dense_dims.items()}
    maxsim = qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim)
    for name, dim in spec.multivector_dims.items():
        vectors[name] = qe.EdgeVectorParams(dim, distance, multivector_config=maxsim)
    return vectors


def _call(fn: Callable[[], T], collection: str, path: Path | None = None) -> T:
    """Run an engine call, turning its untyped exceptions into typed ones."""
    try:
        return fn()
    except VectorStoreError:
        raise
    except Exception as exc:  # qdrant-edge raises plain Exception with a message
        text = str(exc)
        if "WouldBlock" in text:
            raise StoreLocked(
                f"collection {collection!r} ({path}) is open in another handle; "
                "one process (one EdgeVectorStore) owns an embedded shard"
            ) from exc
        if "not initialized" in text:
            raise StoreClosed(f"collection {collection!r} was closed during the call") from exc
        raise VectorStoreError(f"collection {collection!r}: {text}") from exc


def _out_id(value: object) -> PointId:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, int):
        return value
    return str(uuid.UUID(str(value)))


def _scored(hits: list[qe.ScoredPoint], with_payload: bool) -> list[ScoredPoint]:
    if not with_payload:
        return [ScoredPoint(_out_id(h.id), float(h.score), None) for h in hits]
    return [ScoredPoint(_out_id(h.id), float(h.score), h.payload or {}) for h in hits]


def _dense_request(spec: CollectionSpec, query: SearchQuery) -> qe.QueryRequest:
    """The engine request of one dense search. Raises: the checks' InvalidArgument et al."""
    name, vec = query_dense(spec, query.using, query.vector)
    check_limit(query.limit)
    return qe.QueryRequest(
        limit=query.limit,
        query=qe.Query.Nearest(vec, using=name),
        filter=_opt_filter(query.filter),
        params=qe.SearchParams(exact=query.exact),
        with_payload=query.with_payload,
        score_threshold=query.score_threshold,
    )


def _opt_filter(f: Filter | None) -> qe.Filter | None:
    return None if f is None or f.empty else to_edge_filter(f)


def to_edge_filter(f: Filter) -> qe.Filter:
    """Translate a Concord `Filter` to a qdrant-edge filter.

    Args:
        f: the filter.

    Returns:
        The equivalent `qdrant_edge.Filter`.
    """

    def cond(c: object) -> Any:
        if isinstance(c, Filter):
            return to_edge_filter(c)
        if isinstance(c, Match):
            return qe.FieldCondition(c.key, match=qe.MatchValue(c.value))
        if isinstance(c, MatchAny):
            return qe.FieldCondition(c.key, match=qe.MatchAny(c.value_list()))
        if isinstance(c, Range):
            return qe.FieldCondition(
                c.key, range=qe.RangeFloat(gte=c.gte, gt=c.gt, lte=c.lte, lt=c.lt)
            )
        raise InvalidArgument("filter", f"unsupported condition {type(c).__name__}")

    return qe.Filter(
        must=[cond(c) for c in f.must] or None,
        should=[cond(c) for c in f.should] or None,
        must_not=[cond(c) for c in f.must_not] or None,
    )
