"""`QdrantServerStore`: the `VectorStore` interface over qdrant-client.

Talks to a Qdrant server (`url=`), or runs qdrant-client's pure-Python local mode (`path=`,
or `path=":memory:"`), which speaks the same client API and serves tests without a server.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from concord.vectors.base import VectorStore
from concord.vectors.errors import (
    CollectionConflict,
    CollectionNotFound,
    InvalidArgument,
    StoreClosed,
    VectorStoreError,
)
from concord.vectors.types import (
    CollectionInfo,
    CollectionSpec,
    Distance,
    Filter,
    Match,
    MatchAny,
    Point,
    PointId,
    Range,
    ScoredPoint,
    VectorLike,
    named_vectors,
    normalize_id,
    valid_collection_name,
)
from concord.vectors.validation import check_limit, check_points, query_dense, query_multi

METADATA_KEY = "concord_spec"  # collection metadata entry holding the spec we created it with

_DISTANCE: dict[Distance, qm.Distance] = {
    "cosine": qm.Distance.COSINE,
    "dot": qm.Distance.DOT,
    "euclid": qm.Distance.EUCLID,
}
_DISTANCE_BACK: dict[qm.Distance, Distance] = {v: k for k, v in _DISTANCE.items()}
_PAYLOAD = {
    "keyword": qm.PayloadSchemaType.KEYWORD,
    "integer": qm.PayloadSchemaType.INTEGER,
    "float": qm.PayloadSchemaType.FLOAT,
    "bool": qm.PayloadSchemaType.BOOL,
}
_PAYLOAD_BACK = {v.value: k for k, v in _PAYLOAD.items()}
T = TypeVar("T")


class QdrantServerStore(VectorStore):
    """Collections in a Qdrant server (or qdrant-client local mode) behind `VectorStore`."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        prefer_grpc: bool = False,
        path: str | Path | None = None,
        timeout: int = 30,
    ) -> None:
        """Connect (lazily: the first call reaches the server).

        Args:
            url: the server, e.g. `http://qdrant:6333`.
            api_key: the server's API key, if it has one.
            prefer_grpc: use gRPC (port 6334) instead of REST for data calls.
            path: instead of `url`, a directory for qdrant-client local mode, or ":memory:".
            timeout: seconds per request.
        """
        if (url is None) == (path is None):
            raise InvalidArgument("url", "give exactly one of url (server) or path (local mode)")
        self._local = path is not None
        if path is not None:
            where = str(path)
            if where == ":memory:":
                self._client = QdrantClient(location=":memory:")
            else:
                Path(where).mkdir(parents=True, exist_ok=True)
                self._client = QdrantClient(path=where)
        else:
            where = str(url)
            # check_compatibility would make a network call here; errors surface on first use.
            self._client = QdrantClient(
                url=url,
                api_key=api_key,
                prefer_grpc=prefer_grpc,
                timeout=timeout,
                check_compatibility=False,
            )
        self._where = where
        # Local mode is plain Python without locks; the server client is thread-safe.
        self._lock: threading.RLock | None = threading.RLock() if self._local else None
        self._specs: dict[str, CollectionSpec] = {}
        self._specs_lock = threading.Lock()
        self._closed = False

    @property
    def client(self) -> QdrantClient:
        """The underlying qdrant-client (for what the interface does not cover)."""
        return self._client

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        if self._closed:
            raise StoreClosed(f"QdrantServerStore ({self._where}) is closed")
        if self._lock is None:
            yield
        else:
            with self._lock:
                yield

    def _call(self, fn: Callable[[], T], collection: str | None = None) -> T:
        with self._guard():
            try:
                return fn()
            except VectorStoreError:
                raise
            except Exception as exc:
                text = str(exc)
                if collection is not None and "not found" in text.lower():
                    with self._specs_lock:
                        self._specs.pop(collection, None)
                    raise CollectionNotFound(collection) from exc
                where = f"collection {collection!r}" if collection else self._where
                raise VectorStoreError(f"{where}: {text}") from exc

    # ----------------------------------------------------------------- catalogue

    def _spec(self, name: str) -> CollectionSpec:
        with self._specs_lock:
            spec = self._specs.get(name)
        if spec is not None:
            return spec
        spec = self._fetch_spec(name)
        if spec is None:
            raise CollectionNotFound(name)
        with self._specs_lock:
            self._specs[name] = spec
        return spec

    def _fetch_spec(self, name: str) -> CollectionSpec | None:
        if not valid_collection_name(name):
            return None
        if not self._call(lambda: self._client.collection_exists(name)):
            return None
        info = self._call(lambda: self._client.get_collection(name), name)
        return _spec_from_info(name, info)

    def create_collection(self, spec: CollectionSpec) -> bool:
        """See `VectorStore.create_collection`."""
        existing = self._fetch_spec(spec.name)
        if existing is None:
            try:
                self._call(lambda: self._create(spec))
            except VectorStoreError:
                # Lost a race with another creator: fall through to compare specs.
                existing = self._fetch_spec(spec.name)
                if existing is None:
                    raise
            else:
                with self._specs_lock:
                    self._specs[spec.name] = spec
                return True
        if existing != spec:
            raise CollectionConflict(
                f"collection {spec.name!r} exists with spec {existing.to_dict()}, "
                f"asked for {spec.to_dict()}"
            )
        return False

    def _create(self, spec: CollectionSpec) -> None:
        distance = _DISTANCE[spec.distance]
        vectors = {
            name: qm.VectorParams(size=dim, distance=distance)
            for name, dim in spec.dense_dims.items()
        }
        maxsim = qm.MultiVectorConfig(comparator=qm.MultiVectorComparator.MAX_SIM)
        for name, dim in spec.multivector_dims.items():
            vectors[name] = qm.VectorParams(size=dim, distance=distance, multivector_config=maxsim)
        self._client.create_collection(
            spec.name, vectors_config=vectors, metadata={METADATA_KEY: spec.to_dict()}
        )
        if not self._local:  # local mode ignores payload indexes (and warns about them)
            for key, ptype in spec.payload_indexes.items():
                self._client.create_payload_index(spec.name, key, _PAYLOAD[ptype], wait=True)

    def delete_collection(self, name: str) -> bool:
        """See `VectorStore.delete_collection`."""
        with self._specs_lock:
            self._specs.pop(name, None)
        if not valid_collection_name(name):
            return False
        if not self._call(lambda: self._client.collection_exists(name)):
            return False
        return bool(self._call(lambda: self._client.delete_collection(name), name))

    def list_collections(self) -> list[str]:
        """See `VectorStore.list_collections`."""
        response = self._call(self._client.get_collections)
        return sorted(c.name for c in response.collections)

    def collection_info(self, name: str) -> CollectionInfo:
        """See `VectorStore.collection_info`."""
        spec = self._fetch_spec(name)  # fresh: another client may have changed it
        if spec is None:
            raise CollectionNotFound(name)
        return CollectionInfo(spec=spec, count=self.count(name))

    def collection_spec(self, name: str) -> CollectionSpec:
        """See `VectorStore.collection_spec` (fresh from the server, as `collection_info`)."""
        spec = self._fetch_spec(name)
        if spec is None:
            raise CollectionNotFound(name)
        return spec

    # ----------------------------------------------------------------- points

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        """See `VectorStore.upsert`."""
        spec = self._spec(collection)
        check_points(spec, points)
        if not points:
            return
        structs = [
            qm.PointStruct(id=p.id, vector=dict(p.vectors), payload=dict(p.payload)) for p in points
        ]
        self._call(lambda: self._client.upsert(collection, points=structs, wait=True), collection)

    def retrieve(
        self, collection: str, ids: Sequence[PointId], *, with_vectors: bool = False
    ) -> list[Point]:
        """See `VectorStore.retrieve`."""
        self._spec(collection)
        wanted = [normalize_id(i, f"ids[{n}]") for n, i in enumerate(ids)]
        if not wanted:
            return []
        records = self._call(
            lambda: self._client.retrieve(
                collection, ids=wanted, with_payload=True, with_vectors=with_vectors
            ),
            collection,
        )
        found = {
            normalize_id(r.id): Point(
                normalize_id(r.id),
                named_vectors(r.vector) if with_vectors else {},
                r.payload or {},
            )
            for r in records
        }
        return [found[i] for i in dict.fromkeys(wanted) if i in found]

    def delete(self, collection: str, ids: Sequence[PointId]) -> None:
        """See `VectorStore.delete`."""
        self._spec(collection)
        wanted = [normalize_id(i, f"ids[{n}]") for n, i in enumerate(ids)]
        if wanted:
            selector = qm.PointIdsList(points=list(wanted))
            self._call(
                lambda: self._client.delete(collection, points_selector=selector, wait=True),
                collection,
            )

    def delete_by_filter(self, collection: str, filter: Filter) -> None:
        """See `VectorStore.delete_by_filter`."""
        self._spec(collection)
        if filter is None or filter.empty:
            raise InvalidArgument(
                "filter", "refusing to delete by an empty filter (use delete_collection)"
            )
        selector = qm.FilterSelector(filter=to_client_filter(filter))
        self._call(
            lambda: self._client.delete(collection, points_selector=selector, wait=True), collection
        )

    def count(self, collection: str, filter: Filter | None = None) -> int:
        """See `VectorStore.count`."""
        self._spec(collection)
        result = self._call(
            lambda: self._client.count(collection, count_filter=_opt_filter(filter), exact=True),
            collection,
        )
        return int(result.count)

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
        spec = self._spec(collection)
        name, vec = query_dense(spec, using, vector)
        check_limit(limit)
        return self._query(
            collection,
            query=vec,
            using=name,
            limit=limit,
            query_filter=_opt_filter(filter),
            search_params=self._params(exact),
            with_payload=with_payload,
            score_threshold=score_threshold,
        )

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
        spec = self._spec(collection)
        name, rows = query_multi(spec, using, vectors)
        check_limit(limit)
        return self._query(
            collection,
            query=rows,
            using=name,
            limit=limit,
            query_filter=_opt_filter(filter),
            search_params=self._params(exact),
            with_payload=with_payload,
        )

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
        spec = self._spec(collection)
        dense_name, vec = query_dense(spec, using, vector)
        multi_name, rows = query_multi(spec, rerank_using, multivector, "multivector")
        check_limit(limit)
        check_limit(prefetch_limit, "prefetch_limit")
        client_filter = _opt_filter(filter)
        params = self._params(exact)
        prefetch = qm.Prefetch(
            query=vec, using=dense_name, limit=prefetch_limit, filter=client_filter, params=params
        )
        return self._query(
            collection,
            prefetch=prefetch,
            query=rows,
            using=multi_name,
            limit=limit,
            query_filter=client_filter,
            search_params=params,
            with_payload=with_payload,
        )

    def _params(self, exact: bool) -> qm.SearchParams | None:
        # Local mode is always brute force and warns when given search params.
        return None if self._local else qm.SearchParams(exact=exact)

    def _query(self, collection: str, **kwargs: Any) -> list[ScoredPoint]:
        with_payload = bool(kwargs["with_payload"])
        response = self._call(lambda: self._client.query_points(collection, **kwargs), collection)
        return [
            ScoredPoint(
                normalize_id(h.id), float(h.score), (h.payload or {}) if with_payload else None
            )
            for h in response.points
        ]

    # ----------------------------------------------------------------- lifecycle

    def optimize(self, collection: str) -> None:
        """No-op: a Qdrant server builds indexes in the background."""
        self._spec(collection)

    def close(self) -> None:
        """See `VectorStore.close`."""
        if self._closed:
            return
        with self._guard():
            self._client.close()
            self._closed = True


# --------------------------------------------------------------------------- helpers


def _spec_from_info(name: str, info: qm.CollectionInfo) -> CollectionSpec:
    """Rebuild the spec from what the server reports (the truth), plus our metadata."""
    vectors = info.config.params.vectors
    if not isinstance(vectors, dict):
        raise VectorStoreError(
            f"collection {name!r} has an unnamed vector; Concord collections use named vectors"
        )
    dense: dict[str, int] = {}
    multi: dict[str, int] = {}
    distances = set()
    for vname, params in vectors.items():
        distances.add(params.distance)
        (multi if params.multivector_config is not None else dense)[vname] = params.size
    if len(distances) != 1 or next(iter(distances)) not in _DISTANCE_BACK:
        raise VectorStoreError(
            f"collection {name!r} mixes or uses unsupported distances {distances}"
        )
    metadata = getattr(info.config, "metadata", None) or {}
    stored = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    if isinstance(stored, dict) and "payload_indexes" in stored:
        indexes = dict(stored["payload_indexes"])
    else:
        indexes = {
            key: _PAYLOAD_BACK[str(getattr(schema.data_type, "value", schema.data_type))]
            for key, schema in (info.payload_schema or {}).items()
            if str(getattr(schema.data_type, "value", schema.data_type)) in _PAYLOAD_BACK
        }
    return CollectionSpec(
        name=name,
        dense=dense,
        multivector=multi,
        distance=_DISTANCE_BACK[next(iter(distances))],
        payload_indexes=indexes,
    )


def _opt_filter(f: Filter | None) -> qm.Filter | None:
    return None if f is None or f.empty else to_client_filter(f)


def to_client_filter(f: Filter) -> qm.Filter:
    """Translate a Concord `Filter` to a qdrant-client filter.

    Args:
        f: the filter.

    Returns:
        The equivalent `qdrant_client.models.Filter`.
    """

    def cond(c: object) -> Any:
        if isinstance(c, Filter):
            return to_client_filter(c)
        if isinstance(c, Match):
            return qm.FieldCondition(key=c.key, match=qm.MatchValue(value=c.value))
        if isinstance(c, MatchAny):
            return qm.FieldCondition(key=c.key, match=qm.MatchAny(any=c.value_list()))
        if isinstance(c, Range):
            return qm.FieldCondition(
                key=c.key, range=qm.Range(gte=c.gte, gt=c.gt, lte=c.lte, lt=c.lt)
            )
        raise InvalidArgument("filter", f"unsupported condition {type(c).__name__}")

    return qm.Filter(
        must=[cond(c) for c in f.must] or None,
        should=[cond(c) for c in f.should] or None,
        must_not=[cond(c) for c in f.must_not] or None,
    )
