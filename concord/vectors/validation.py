"""Checks of points and queries against a collection's spec, shared by every backend.

Each raises `InvalidArgument`, `UnknownVector` or `DimensionMismatch` naming the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeGuard

from concord.vectors.errors import DimensionMismatch, InvalidArgument, UnknownVector
from concord.vectors.types import (
    CollectionSpec,
    DenseVector,
    MultiVector,
    Point,
    VectorLike,
    as_vector,
)


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


def _is_dense(vec: DenseVector | MultiVector) -> TypeGuard[DenseVector]:
    return bool(vec) and not isinstance(vec[0], list)


def _is_multi(vec: DenseVector | MultiVector) -> TypeGuard[MultiVector]:
    return bool(vec) and isinstance(vec[0], list)


def _check_dense(
    vec: DenseVector | MultiVector, dim: int, where: str, collection: str
) -> DenseVector:
    if not _is_dense(vec):
        raise InvalidArgument(
            where, f"expected one dense vector of {dim} values, got a multivector"
        )
    if len(vec) != dim:
        raise DimensionMismatch(
            where,
            f"expected {dim} values for collection {collection!r}, got {len(vec)}",
        )
    return vec


def _check_multi(
    vec: DenseVector | MultiVector, dim: int, where: str, collection: str
) -> MultiVector:
    if not _is_multi(vec):
        raise InvalidArgument(where, f"expected a multivector (rows of {dim} values), got 1-D")
    width = len(vec[0])
    if width != dim:
        raise DimensionMismatch(
            where, f"expected rows of {dim} values for collection {collection!r}, got {width}"
        )
    return vec


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
    vec = as_vector(vector, "vector")
    return name, _check_dense(vec, spec.dense_dims[name], "vector", spec.name)


def query_multi(
    spec: CollectionSpec, using: str | None, vectors: VectorLike, field_name: str = "vectors"
) -> tuple[str, MultiVector]:
    """Validate a multivector query. Returns: (vector name, the rows as lists)."""
    name = resolve_using(spec, using, "multivector")
    vec = as_vector(vectors, field_name)
    return name, _check_multi(vec, spec.multivector_dims[name], field_name, spec.name)


def check_limit(limit: int, field_name: str = "limit") -> None:
    """Raise InvalidArgument unless `limit` is a positive int."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidArgument(field_name, f"must be a positive integer, got {limit!r}")
