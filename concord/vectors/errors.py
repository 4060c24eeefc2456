"""Typed errors of the vector store, the same for every backend.

They extend `concord.errors`, so the serving core maps them to gRPC codes in one place:
`InvalidArgument` (and subclasses) -> INVALID_ARGUMENT with `.field` as the BadRequest
field; `CollectionNotFound` -> NOT_FOUND; conflicts -> FAILED_PRECONDITION; a locked or
closed store -> UNAVAILABLE.
"""

from __future__ import annotations

from concord import errors


class VectorStoreError(errors.ConcordError):
    """Base of every error raised by `concord.vectors`."""


class CollectionNotFound(VectorStoreError, errors.NotFound, LookupError):
    """The named collection does not exist."""

    def __init__(self, collection: str) -> None:
        super().__init__(f"collection {collection!r} does not exist")
        self.collection = collection


class CollectionConflict(VectorStoreError, errors.FailedPrecondition):
    """A collection of that name exists with a different spec."""


class InvalidArgument(VectorStoreError, errors.InvalidArgument, ValueError):
    """A caller-supplied value is wrong; `.field` names it (e.g. `points[3].vectors.dense`)."""

    def __init__(self, field: str, message: str) -> None:
        errors.InvalidArgument.__init__(self, field, message)
        self.field = field


class DimensionMismatch(InvalidArgument):
    """A vector has the wrong number of values for its collection."""


class UnknownVector(InvalidArgument):
    """A vector name is not part of the collection spec (or is of the other kind)."""


class StoreLocked(VectorStoreError, errors.Unavailable):
    """An embedded shard is already open in another handle (one process owns a shard)."""


class StoreClosed(VectorStoreError, errors.Unavailable):
    """The store was used after `close()`."""
