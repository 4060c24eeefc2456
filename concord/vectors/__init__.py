"""Vector storage for Concord: one `VectorStore` interface, embedded Qdrant or a Qdrant server.

`open_store(settings)` picks the backend; `point_id(content)` gives idempotent ids.
Backends are imported lazily so `import concord.vectors` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from concord.vectors.base import VectorStore
from concord.vectors.errors import (
    CollectionConflict,
    CollectionNotFound,
    DimensionMismatch,
    InvalidArgument,
    StoreClosed,
    StoreLocked,
    UnknownVector,
    VectorStoreError,
)
from concord.vectors.types import (
    DEFAULT_DENSE,
    CollectionInfo,
    CollectionSpec,
    Condition,
    Filter,
    Match,
    MatchAny,
    Point,
    PointId,
    Range,
    ScoredPoint,
    SearchQuery,
    normalize_id,
    point_id,
    valid_collection_name,
)

if TYPE_CHECKING:
    from concord.config import Settings
    from concord.vectors.edge import EdgeVectorStore
    from concord.vectors.server import QdrantServerStore

__all__ = [
    "DEFAULT_DENSE",
    "CollectionConflict",
    "CollectionInfo",
    "CollectionNotFound",
    "CollectionSpec",
    "Condition",
    "DimensionMismatch",
    "EdgeVectorStore",
    "Filter",
    "InvalidArgument",
    "Match",
    "MatchAny",
    "Point",
    "PointId",
    "QdrantServerStore",
    "Range",
    "ScoredPoint",
    "SearchQuery",
    "StoreClosed",
    "StoreLocked",
    "UnknownVector",
    "VectorStore",
    "VectorStoreError",
    "normalize_id",
    "open_store",
    "point_id",
    "valid_collection_name",
]


def open_store(settings: Settings) -> VectorStore:
    """Open the vector store the settings ask for.

    Args:
        settings: `vectors == "embedded"` -> `EdgeVectorStore(settings.vectors_dir)`;
            `"qdrant"` -> `QdrantServerStore(settings.qdrant.url, ...)`.

    Returns:
        An open store; close it (or use it as a context manager) when done.
    """
    if settings.vectors == "embedded":
        from concord.vectors.edge import EdgeVectorStore

        return EdgeVectorStore(settings.vectors_dir)
    from concord.vectors.server import QdrantServerStore

    api_key = settings.qdrant.api_key.get_secret_value() if settings.qdrant.api_key else None
    return QdrantServerStore(
        settings.qdrant.url, api_key=api_key, prefer_grpc=settings.qdrant.prefer_grpc
    )


def __getattr__(name: str) -> Any:
    # Lazy backend classes: `from concord.vectors import EdgeVectorStore` works without
    # importing qdrant-client for embedded-only processes.
    if name == "EdgeVectorStore":
        from concord.vectors.edge import EdgeVectorStore

        return EdgeVectorStore
    if name == "QdrantServerStore":
        from concord.vectors.server import QdrantServerStore

        return QdrantServerStore
    raise AttributeError(f"module 'concord.vectors' has no attribute {name!r}")
