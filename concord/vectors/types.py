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
MAX_INT_ID = 2**64 - 1  # Qdrant's integer ids are unsigned 64-bit
# A payload key as a filter names it (Qdrant's JSON path): dot-separated segments, each a
# word (letters, digits, _ and -) or a "quoted" name (no quote or backslash inside), each
# optionally followed by `[]` or `[N]`. Qdrant refuses anything else ("invalid JSON path")
# with an untyped error; checked against qdrant-edge with thousands of random keys.
_KEY_SEGMENT = r'(?:[\w\-]+|"[^"\\]+")(?:\[[0-9]*\])*'
_KEY_RE = re.compile(rf"^{_KEY_SEGMENT}(?:\.{_KEY_SEGMENT})*$")
MAX_KEY_CHARS = 256
MAX_PAYLOAD_DEPTH = 32
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
        if not 0 <= value <= MAX_INT_ID:
            raise InvalidArgument(
                field_name, f"integer point ids must be between 0 and 2^64-1, got {value}"
            )
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise InvalidArgument(
                field_name, f"{value[:64]!r} is not a UUID (use concord.vectors.point_id)"
            ) from None
    raise InvalidArgument(field_name, f"a point id is a UUID or an int, got {type(value).__name__}")


def parse_point_id(raw: str, field_name: str = "id") -> PointId:
    """A point id as the wire carries it (a string): ASCII digits are an integer id (0 to
    2^64-1), anything else must be a UUID. `str.isdigit` alone would take '²' or '①'.

    Returns:
        The canonical id. Raises: InvalidArgument naming `field_name`.
    """
    if raw.isascii() and raw.isdigit():
        if len(raw) > 20:  # longer than 2^64-1 (and int() refuses > 4300 digits)
            raise InvalidArgument(field_name, "integer point ids must be between 0 and 2^64-1")
        return normalize_id(int(raw), field_name)
    return normalize_id(raw, field_name)


def valid_payload_key(key: object) -> bool:
    """Returns: whether a filter can name payload field `key` (see `_KEY_RE`)."""
    return isinstance(key, str) and len(key) <= MAX_KEY_CHARS and _KEY_RE.match(key) is not None


def check_key(key: object, field_name: str) -> None:
    """Raises: InvalidArgument naming `field_name` when `key` is not a payload path."""
    if not valid_payload_key(key):
        shown = key[:64] if isinstance(key, str) else key
        raise InvalidArgument(
            field_name,
            f"{shown!r} is not a payload field path (dot-separated names of letters, digits, "
            '_ and -, each optionally followed by [] or [N]; quote other names: "a b")',
        )


def check_payload(payload: Mapping[str, Any], field_name: str = "payload") -> None:
    """Check a JSON payload: string keys, finite numbers, nesting within MAX_PAYLOAD_DEPTH.

    Raises:
        InvalidArgument: naming the first bad value, e.g. `payload.scores[2]`.
    """
    _check_value(payload, field_name, 0)


def _check_value(value: object, where: str, depth: int) -> None:
    if depth > MAX_PAYLOAD_DEPTH:
        raise InvalidArgument(where, f"nests deeper than {MAX_PAYLOAD_DEPTH} levels")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgument(where, f"is {value}; payload numbers must be finite")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidArgument(where, f"has a key of type {type(key).__name__}")
            _check_value(item, f"{where}.{key[:64]}", depth + 1)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool):
        if not -(2**63) <= value < 2**64:
            raise InvalidArgument(where, f"is {value}; payload integers must fit in 64 bits")
    elif value is not None and not isinstance(value, str | bool):
        raise InvalidArgument(where, f"a {type(value).__name__} is not a JSON value")


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
        payload = dict(payload or {})
        check_payload(payload)
        object.__setattr__(self, "payload", payload)


def named_vectors(value: object) -> dict[str, DenseVector | MultiVector]:
    """A point's named vectors as a backend returns them (None or a mapping): dense vectors
    and multivectors, the only kinds Concord stores."""
    if not isinstance(value, Mapping):
        return {}
    return {name: vec for name, vec in value.items() if isinstance(vec, list)}


@dataclass(frozen=True, slots=True)
class ScoredPoint:
    """A search hit: higher score is closer (cosine/dot), for euclid lower distance ranks first."""

    id: PointId
    score: float
    payload: dict[str, Any] | None = None  # None when with_payload=False


@dataclass(frozen=True)
class SearchQuery:
    """One dense search of `VectorStore.search_batch`: the arguments of `VectorStore.search`."""

    vector: VectorLike
    using: str | None = None
    limit: int = 10
    filter: Filter | None = None
    exact: bool = False
    with_payload: bool = True
    score_threshold: float | None = None


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

    def __post_init__(self) -> None:
        check_key(self.key, "filter.key")


@dataclass(frozen=True)
class MatchAny:
    """Payload field `key` equals one of `values` (all str or all int)."""

    key: str
    values: Sequence[str] | Sequence[int]

    def __post_init__(self) -> None:
        check_key(self.key, "filter.key")
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
        check_key(self.key, "filter.key")
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
