"""The vector store's typed values: collection specs, points, filters, hits, and point ids.

Constructors check their own values (names, ids, finite vectors) so a bad value fails
where it is built, the same for every backend.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, cast

import numpy as np

from concord.vectors.errors import InvalidArgument

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
        # Always a mapping after __post_init__; the int form is the constructor's shorthand.
        return {DEFAULT_DENSE: self.dense} if isinstance(self.dense, int) else dict(self.dense)

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


@dataclass(frozen=True, init=False)
class Point:
    """One item: a deterministic id, its named vectors, and a JSON payload.

    Vectors may be numpy arrays; they are stored as float32 lists.
    """

    id: PointId
    vectors: dict[str, DenseVector | MultiVector]
    payload: dict[str, Any]

    def __init__(
        self,
        id: PointId | uuid.UUID,
        vectors: Mapping[str, VectorLike],
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        # The fields hold the checked, canonical forms of what the caller passed.
        object.__setattr__(self, "id", normalize_id(id))
        object.__setattr__(
            self,
            "vectors",
            {vname: as_vector(value, f"vectors.{vname}") for vname, value in vectors.items()},
        )
        object.__setattr__(self, "payload", dict(payload or {}))


def named_vectors(value: object) -> dict[str, DenseVector | MultiVector]:
    """A point's named vectors as a backend returns them (None or a mapping): dense vectors
    and multivectors, the only kinds Concord stores."""
    if not isinstance(value, Mapping):
        return {}
    return {name: vec for name, vec in value.items() if isinstance(vec, list)}


@dataclass(frozen=True)
class ScoredPoint:
    """A search hit: higher score is closer (cosine/dot), for euclid lower distance ranks first."""

    id: PointId
    score: float
    payload: dict[str, Any] | None = None  # None when with_payload=False


def as_vector(value: VectorLike, field_name: str) -> DenseVector | MultiVector:
    """Check a dense vector or multivector and return it as float32 lists.

    Args:
        value: a 1-D (dense) or 2-D (multivector) array-like of finite numbers.
        field_name: named in the error.

    Returns:
        The vector as (nested) lists of floats.
    """
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

    def value_list(self) -> list[str] | list[int]:
        """Returns: the values as a list, all str or all int (as the constructor checked)."""
        return cast("list[str] | list[int]", list(self.values))


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
