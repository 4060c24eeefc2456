"""The `VectorStore` interface and its typed values (spec, points, filters, results).

Backends (`edge.EdgeVectorStore`, `server.QdrantServerStore`) translate these to their
engine; validation that must behave the same everywhere lives here.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias

import numpy as np

from concord.vectors.errors import DimensionMismatch, InvalidArgument, UnknownVector

PointId: TypeAlias = str | int  # canonical UUID string, or an unsigned integer
Distance: TypeAlias = Literal["cosine", "dot", "euclid"]
PayloadType: TypeAlias = Literal["keyword", "integer", "float", "bool"]
DenseVector: TypeAlias = list[float]
MultiVector: TypeAlias = list[list[float]]
VectorLike: TypeAlias = Sequence[float] | Sequence[Sequence[float]] | np.ndarray

DEFAULT_DENSE = "dense"  # the vector name `CollectionSpec(dense=<int>)` creates
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")  # collection names are directory names
_VECTOR_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_DISTANCES: tuple[str, ...] = ("cosine", "dot", "euclid")
_PAYLOAD_TYPES: tuple[str, ...] = ("keyword", "integer", "float", "bool")
# Fixed namespace so `point_id` is stable across processes, machines and releases.
_CONCORD_NS = uuid.UUID("6f1d3c1e-1c55-5b8e-9c7a-8a0f3e2d4b61")


def point_id(content: bytes, namespace: str = "") -> str:
    """A deterministic point id for content, so re-ingesting it overwrites instead of duplicating.

    Args:
        content: the bytes that identify the item (e.g. the image file, the UTF-8 caption).
        namespace: separates kinds of content that could share bytes (e.g. "image", "text").

    Returns:
        A canonical UUID string (uuid5 of the namespace and the content's sha256).
    """
    digest = hashlib.sha256(content).hexdigest()
    return str(uuid.uuid5(_CONCORD_NS, f"{namespace}\x00{digest}"))


def valid_collection_name(name: object) -> bool:
    """Returns: whether `name` is a legal collection name ([A-Za-z0-9_-], 1-64 chars)."""
    return isinstance(name, str) and _NAME_RE.match(name) is not None


def normalize_id(value: object, field_name: str = "id") -> PointId:
    """Check a point id and return its canonical form (UUID string or non-negative int).

    Args:
        value: a UUID (object or string) or a non-negative int.
        field_name: named in the error.

    Returns:
        The canonical id.
    """
    if isinstance(value, bool):
        raise InvalidArgument(
            field_name, "a point id is a UUID or a non-negative integer, not bool"
        )
    if isinstance(value, int):
        if value < 0:
            raise InvalidArgument(field_name, f"integer point ids must be >= 0, got {value}")
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise InvalidArgument(
                field_name, f"{value!r} is not a UUID (use concord.vectors.point_id)"
            ) from None
    raise InvalidArgument(field_name, f"a point id is a UUID or an int, got {type(value).__name__}")


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class CollectionSpec:
    """What a collection holds: named dense vectors, named multivectors (MAX_SIM), payload indexes.

    `dense=384` is shorthand for `dense={"dense": 384}`. All vectors share one distance.
    """

    name: str
    dense: Mapping[str, int] | int = field(default_factory=dict)
    multivector: Mapping[str, int] = field(default_factory=dict)  # name -> per-token dim
    distance: Distance = "cosine"
    payload_indexes: Mapping[str, PayloadType] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not valid_collection_name(self.name):
            raise InvalidArgument(
                "name", f"{self.name!r} is not a collection name ([A-Za-z0-9_-], 1-64 chars)"
            )
        dense = {DEFAULT_DENSE: self.dense} if isinstance(self.dense, int) else dict(self.dense)
        multi = dict(self.multivector)
        object.__setattr__(self, "dense", dense)
        object.__setattr__(self, "multivector", multi)
        object.__setattr__(self, "payload_indexes", dict(self.payload_indexes))
        if not dense and not multi:
            raise InvalidArgument("dense", "a collection needs at least one vector")
        for kind, vectors in (("dense", dense), ("multivector", multi)):
            for vname, dim in vectors.items():
                if not isinstance(vname, str) or not _VECTOR_NAME_RE.match(vname):
                    raise InvalidArgument(f"{kind}", f"{vname!r} is not a vector name")
                if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
                    raise InvalidArgument(f"{kind}.{vname}", f"dimension must be >= 1, got {dim!r}")
        both = set(dense) & set(multi)
        if both:
            raise InvalidArgument("multivector", f"names {sorted(both)} are also dense vectors")
        if self.distance not in _DISTANCES:
            raise InvalidArgument("distance", f"{self.distance!r} is not one of {_DISTANCES}")
        for key, ptype in self.payload_indexes.items():
            if ptype not in _PAYLOAD_TYPES:
                raise InvalidArgument(
                    f"payload_indexes.{key}", f"{ptype!r} is not one of {_PAYLOAD_TYPES}"
                )

    @property
    def dense_dims(self) -> dict[str, int]:
        """Dense vector name -> dimension."""
        return dict(self.dense)  # type: ignore[arg-type]

    @property
    def multivector_dims(self) -> dict[str, int]:
        """Multivector name -> per-token dimension."""
        return dict(self.multivector)

    def to_dict(self) -> dict[str, Any]:
        """Returns: a JSON-able dict that `from_dict` reads back."""
        return {
            "name": self.name,
            "dense": self.dense_dims,
            "multivector": self.multivector_dims,
            "distance": self.distance,
            "payload_indexes": dict(self.payload_indexes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CollectionSpec:
        """Args: data: what `to_dict` wrote. Returns: the spec."""
        return cls(
            name=data["name"],
            dense=dict(data.get("dense", {})),
            multivector=dict(data.get("multivector", {})),
            distance=data.get("distance", "cosine"),
            payload_indexes=dict(data.get("payload_indexes", {})),
        )

    def to_json(self) -> str:
        """Returns: the spec as stable, human-readable JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


@dataclass(frozen=True)
class CollectionInfo:
    """A collection's spec and how many points it holds."""

    spec: CollectionSpec
    count: int


# --------------------------------------------------------------------------- points


@dataclass(frozen=True)
class Point:
    """One item: a deterministic id, its named vectors, and a JSON payload.

    Vectors may be numpy arrays; they are stored as float32 lists.
    """

    id: PointId
    vectors: Mapping[str, VectorLike]
    payload: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", normalize_id(self.id))
        vectors: dict[str, DenseVector | MultiVector] = {}
        for vname, value in self.vectors.items():
            vectors[vname] = _as_vector(value, f"vectors.{vname}")
        object.__setattr__(self, "vectors", vectors)
        object.__setattr__(self, "payload", dict(self.payload))


@dataclass(frozen=True)
class ScoredPoint:
    """A search hit: higher score is closer (cosine/dot), for euclid lower distance ranks first."""

    id: PointId
    score: float
    payload: dict[str, Any] | None = None  # None when with_payload=False


def _as_vector(value: VectorLike, field_name: str) -> DenseVector | MultiVector:
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(field_name, f"not a numeric vector ({exc})") from None
    if arr.ndim not in (1, 2) or arr.size == 0:
        raise InvalidArgument(
            field_name, f"expected a non-empty 1-D (dense) or 2-D (multivector), got {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise InvalidArgument(field_name, "contains NaN or infinity")
    out: DenseVector | MultiVector = arr.tolist()
    return out


# --------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class Match:
    """Payload field `key` equals `value` (or, for a list field, contains it)."""

    key: str
    value: str | int | bool


@dataclass(frozen=True)
class MatchAny:
    """Payload field `key` equals one of `values` (all str or all int)."""

    key: str
    values: Sequence[str] | Sequence[int]

    def __post_init__(self) -> None:
        values = tuple(self.values)
        if not values:
            raise InvalidArgument(f"filter.{self.key}", "match-any needs at least one value")
        if not (
            all(isinstance(v, str) for v in values)
            or all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        ):
            raise InvalidArgument(
                f"filter.{self.key}", "match-any values must be all str or all int"
            )
        object.__setattr__(self, "values", values)


@dataclass(frozen=True)
class Range:
    """Numeric payload field `key` within the given bounds."""

    key: str
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None

    def __post_init__(self) -> None:
        bounds = (self.gte, self.gt, self.lte, self.lt)
        if all(b is None for b in bounds):
            raise InvalidArgument(f"filter.{self.key}", "a range needs at least one bound")
        if any(b is not None and not math.isfinite(b) for b in bounds):
            raise InvalidArgument(f"filter.{self.key}", "range bounds must be finite")


@dataclass(frozen=True)
class Filter:
    """Boolean filter: all of `must`, at least one of `should` (if any), none of `must_not`.

    Conditions may themselves be `Filter`s for nesting.
    """

    must: Sequence[Condition] = ()
    should: Sequence[Condition] = ()
    must_not: Sequence[Condition] = ()

    def __post_init__(self) -> None:
        for part in ("must", "should", "must_not"):
            object.__setattr__(self, part, tuple(getattr(self, part)))

    @property
    def empty(self) -> bool:
        """True when the filter has no condition at all (matches everything)."""
        return not (self.must or self.should or self.must_not)


Condition: TypeAlias = Match | MatchAny | Range | Filter


# --------------------------------------------------------------------------- validation


def check_points(spec: CollectionSpec, points: Sequence[Point]) -> None:
    """Check every point's vector names and dimensions against the spec.

    Args:
        spec: the collection spec.
        points: the points to upsert.

    Raises:
        UnknownVector, DimensionMismatch, InvalidArgument: naming `points[i].vectors.<name>`.
    """
    dense, multi = spec.dense_dims, spec.multivector_dims
    for i, point in enumerate(points):
        if not isinstance(point, Point):
            raise InvalidArgument(f"points[{i}]", f"expected a Point, got {type(point).__name__}")
        for vname, vec in point.vectors.items():
            where = f"points[{i}].vectors.{vname}"
            if vname in dense:
                _check_dense(vec, dense[vname], where, spec.name)
            elif vname in multi:
                _check_multi(vec, multi[vname], where, spec.name)
            else:
                known = sorted(dense) + sorted(multi)
                raise UnknownVector(
                    where, f"collection {spec.name!r} has no vector {vname!r} (has {known})"
                )


def _check_dense(vec: object, dim: int, where: str, collection: str) -> None:
    if not vec or isinstance(vec[0], list):  # type: ignore[index]
        raise InvalidArgument(
            where, f"expected one dense vector of {dim} values, got a multivector"
        )
    if len(vec) != dim:  # type: ignore[arg-type]
        raise DimensionMismatch(
            where,
            f"expected {dim} values for collection {collection!r}, got {len(vec)}",  # type: ignore[arg-type]
        )


def _check_multi(vec: object, dim: int, where: str, collection: str) -> None:
    if not vec or not isinstance(vec[0], list):  # type: ignore[index]
        raise InvalidArgument(where, f"expected a multivector (rows of {dim} values), got 1-D")
    width = len(vec[0])  # type: ignore[index]
    if width != dim:
        raise DimensionMismatch(
            where, f"expected rows of {dim} values for collection {collection!r}, got {width}"
        )


def resolve_using(
    spec: CollectionSpec, using: str | None, kind: Literal["dense", "multivector"]
) -> str:
    """Pick the vector a query runs on: the named one, or the only one of that kind.

    Args:
        spec: the collection spec.
        using: the vector name, or None for the collection's only vector of that kind.
        kind: "dense" or "multivector".

    Returns:
        The vector name.
    """
    names = spec.dense_dims if kind == "dense" else spec.multivector_dims
    if using is None:
        if len(names) == 1:
            return next(iter(names))
        raise InvalidArgument(
            "using",
            f"collection {spec.name!r} has {len(names)} {kind} vectors {sorted(names)}; name one",
        )
    if using not in names:
        raise UnknownVector(
            "using",
            f"collection {spec.name!r} has no {kind} vector {using!r} (has {sorted(names)})",
        )
    return using


def query_dense(
    spec: CollectionSpec, using: str | None, vector: VectorLike
) -> tuple[str, DenseVector]:
    """Validate a dense query vector. Returns: (vector name, the vector as a list)."""
    name = resolve_using(spec, using, "dense")
    vec = _as_vector(vector, "vector")
    _check_dense(vec, spec.dense_dims[name], "vector", spec.name)
    return name, vec  # type: ignore[return-value]


def query_multi(
    spec: CollectionSpec, using: str | None, vectors: VectorLike, field_name: str = "vectors"
) -> tuple[str, MultiVector]:
    """Validate a multivector query. Returns: (vector name, the rows as lists)."""
    name = resolve_using(spec, using, "multivector")
    vec = _as_vector(vectors, field_name)
    _check_multi(vec, spec.multivector_dims[name], field_name, spec.name)
    return name, vec  # type: ignore[return-value]


def check_limit(limit: int, field_name: str = "limit") -> None:
    """Raise InvalidArgument unless `limit` is a positive int."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidArgument(field_name, f"must be a positive integer, got {limit!r}")


# --------------------------------------------------------------------------- interface


class VectorStore(ABC):
    """A set of named collections of points; one instance owns its connection or shards.

    All search methods take `exact=True` to bypass HNSW (brute force, deterministic).
    """

    @abstractmethod
    def create_collection(self, spec: CollectionSpec) -> bool:
        """Create a collection; a no-op when it exists with the same spec.

        Args:
            spec: what the collection holds.

        Returns:
            True if created, False if it already existed with an equal spec.

        Raises:
            CollectionConflict: it exists with a different spec.
        """

    @abstractmethod
    def delete_collection(self, name: str) -> bool:
        """Drop a collection and its points.

        Returns:
            True if it existed.
        """

    @abstractmethod
    def list_collections(self) -> list[str]:
        """Returns: collection names, sorted."""

    @abstractmethod
    def collection_info(self, name: str) -> CollectionInfo:
        """Returns: the spec and point count. Raises: CollectionNotFound."""

    @abstractmethod
    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        """Insert or overwrite points (same id -> replaced); durable when it returns.

        Raises:
            CollectionNotFound, UnknownVector, DimensionMismatch.
        """

    @abstractmethod
    def retrieve(
        self, collection: str, ids: Sequence[PointId], *, with_vectors: bool = False
    ) -> list[Point]:
        """Fetch points by id, in the order asked; missing ids are left out.

        Cosine collections store vectors unit-normalised, so that is what comes back.

        Args:
            collection: collection name.
            ids: point ids.
            with_vectors: include vectors (else `Point.vectors` is empty).
        """

    @abstractmethod
    def delete(self, collection: str, ids: Sequence[PointId]) -> None:
        """Delete points by id (missing ids are ignored)."""

    @abstractmethod
    def delete_by_filter(self, collection: str, filter: Filter) -> None:
        """Delete every point the filter matches (an empty filter is refused)."""

    @abstractmethod
    def count(self, collection: str, filter: Filter | None = None) -> int:
        """Returns: the exact number of points (matching the filter, if given)."""

    @abstractmethod
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
        """Nearest points by one dense vector.

        Args:
            collection: collection name.
            vector: the query vector.
            using: dense vector name (default: the collection's only dense vector).
            limit: top-k.
            filter: only points matching it.
            exact: brute force instead of HNSW.
            with_payload: return payloads.
            score_threshold: drop hits scoring below it.

        Returns:
            Hits, best first.
        """

    @abstractmethod
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
        """Late interaction: score = sum over query rows of the max similarity to any point row.

        Args:
            collection: collection name.
            vectors: query token vectors (rows).
            using: multivector name (default: the collection's only multivector).
            limit, filter, exact, with_payload: as in `search`.

        Returns:
            Hits, best first.
        """

    @abstractmethod
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
        """Dense top-`prefetch_limit` candidates, reranked by MAX_SIM, in one engine query.

        Args:
            collection: collection name.
            vector: dense query vector (first stage).
            multivector: query token vectors (rerank stage).
            using: dense vector name; rerank_using: multivector name.
            prefetch_limit: candidates from the dense stage.
            limit, filter, exact, with_payload: as in `search`.

        Returns:
            Hits scored by MAX_SIM, best first.
        """

    @abstractmethod
    def optimize(self, collection: str) -> None:
        """Build indexes now (embedded: blocks until HNSW is built; server: in background)."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release everything; later calls raise StoreClosed. Idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
