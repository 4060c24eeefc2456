"""The `VectorStore` interface that every backend implements.

Backends (`edge.EdgeVectorStore`, `server.QdrantServerStore`) translate the typed values
of `concord.vectors.types` to their engine and check inputs with `concord.vectors.validation`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from concord.vectors.types import (
    CollectionInfo,
    CollectionSpec,
    Filter,
    Point,
    PointId,
    ScoredPoint,
    SearchQuery,
    VectorLike,
)


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

    def collection_spec(self, name: str) -> CollectionSpec:
        """Returns: the spec alone, without counting points (cheaper than `collection_info`).
        Raises: CollectionNotFound."""
        return self.collection_info(name).spec

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

    def search_batch(
        self, collection: str, queries: Sequence[SearchQuery]
    ) -> list[list[ScoredPoint] | Exception]:
        """Several dense searches of one collection, in one engine call where the backend has
        one (cheaper than one `search` each). Each query is checked on its own: a bad one
        gets its error in its slot, the others still run.

        Args:
            collection: collection name.
            queries: the searches (the arguments of `search`).

        Returns:
            Per query, in order: its hits (best first, as `search` returns them), or the
            exception `search` would have raised for it.
        """
        out: list[list[ScoredPoint] | Exception] = []
        for q in queries:
            try:
                out.append(
                    self.search(
                        collection,
                        q.vector,
                        using=q.using,
                        limit=q.limit,
                        filter=q.filter,
                        exact=q.exact,
                        with_payload=q.with_payload,
                        score_threshold=q.score_threshold,
                    )
                )
            except Exception as exc:  # handed back in its slot, as documented
                out.append(exc)
        return out

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
