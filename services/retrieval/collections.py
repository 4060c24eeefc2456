"""Retrieval collections on the vector store: one per (model name, version) by default, each
with a dense "dense" vector and a "tokens" MAX_SIM multivector, and a small catalog collection
that remembers which model built each collection and whether it holds token vectors."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from concord.errors import FailedPrecondition, InvalidArgument, NotFound
from concord.vectors import (
    CollectionInfo,
    CollectionNotFound,
    CollectionSpec,
    Point,
    VectorStore,
    point_id,
    valid_collection_name,
)
from concord.wire import ModelId

DENSE = "dense"
TOKENS = "tokens"
CATALOG = "concord-catalog"  # holds one point per collection; hidden from listings
PAYLOAD_INDEXES = {"modality": "keyword"}

ENTRY_TTL_SECONDS = 5.0  # how stale a token-less catalog entry may be


def default_collection(model: ModelId) -> str:
    """Returns: the collection of a model, `<name>-v<version>`."""
    return f"{model.name}-v{model.version}"


@dataclass(frozen=True)
class Entry:
    """What the catalog knows about one collection."""

    name: str
    model: ModelId
    dim: int
    has_tokens: bool


class Collections:
    """Creates, describes and lists retrieval collections (thread-safe; sync store calls).

    Args:
        store: the process's vector store.
    """

    def __init__(self, store: VectorStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._read_at: dict[str, float] = {}  # monotonic time each entry was read
        store.create_collection(CollectionSpec(CATALOG, dense={DENSE: 1}))

    def entry(self, name: str, field: str = "collection") -> Entry:
        """Returns: the catalog entry. Raises: NotFound (unknown), InvalidArgument (bad name)."""
        if not valid_collection_name(name) or name == CATALOG:
            raise InvalidArgument(field, f"{name!r} is not a collection name ([A-Za-z0-9_-])")
        cached = self.cached(name)
        if cached is not None:
            return cached
        found = self.store.retrieve(CATALOG, [_catalog_id(name)])
        if found:
            entry = _entry(name, found[0].payload)
        else:
            try:
                spec = self.store.collection_spec(name)
            except CollectionNotFound:
                raise NotFound(f"collection {name!r} does not exist") from None
            # Made outside this service: describe it from its spec alone.
            entry = Entry(name, ModelId("", ""), spec.dense_dims.get(DENSE, 0), False)
        self._entries[name] = entry
        self._read_at[name] = time.monotonic()
        return entry

    def cached(self, name: str) -> Entry | None:
        """Returns: the entry `entry(name)` would return without a store read (cheap enough
        for the event loop), or None when `entry` has to read the store (or raise)."""
        cached = self._entries.get(name)
        if cached is None:
            return None
        # A collection's model never changes and has_tokens only turns on, so a cached entry
        # is safe to serve; entries without tokens are re-read now and then in case another
        # replica turned tokens on (a store read per query cost ~10 ms at 100k points).
        if cached.has_tokens:
            return cached
        fresh = time.monotonic() - self._read_at.get(name, float("-inf")) < ENTRY_TTL_SECONDS
        return cached if fresh else None

    def ensure(self, name: str, model: ModelId, dim: int, tokens: bool) -> Entry:
        """Create the collection for `model` if missing; mark it as holding tokens if asked.

        Raises:
            FailedPrecondition: the collection belongs to another model or dimension.
        """
        with self._lock:
            try:
                entry = self.entry(name)
            except NotFound:
                spec = CollectionSpec(
                    name,
                    dense={DENSE: dim},
                    multivector={TOKENS: dim},
                    payload_indexes=PAYLOAD_INDEXES,
                )
                self.store.create_collection(spec)
                entry = self._write(Entry(name, model, dim, tokens))
            if entry.model.name and entry.model != model:
                raise FailedPrecondition(
                    f"collection {name!r} was built by {entry.model}, the encoder serves "
                    f"{model}; index into a new collection (or query it with raw vectors)"
                )
            if entry.dim != dim:
                raise FailedPrecondition(
                    f"collection {name!r} holds {entry.dim}-d vectors, the encoder gives {dim}"
                )
            if tokens and not entry.has_tokens:
                entry = self._write(Entry(name, entry.model, dim, True))
            return entry

    def _write(self, entry: Entry) -> Entry:
        payload = {
            "collection": entry.name,
            "model_name": entry.model.name,
            "model_version": entry.model.version,
            "dim": entry.dim,
            "has_tokens": entry.has_tokens,
        }
        self.store.upsert(CATALOG, [Point(_catalog_id(entry.name), {DENSE: [1.0]}, payload)])
        self._entries[entry.name] = entry
        self._read_at[entry.name] = time.monotonic()
        return entry

    def info(self, name: str, field: str = "name") -> tuple[Entry, CollectionInfo]:
        """Returns: the catalog entry and the store's spec and point count."""
        entry = self.entry(name, field)
        return entry, self.store.collection_info(name)

    def names(self) -> list[str]:
        """Returns: every retrieval collection, sorted: those in the catalog. The store is
        shared (the linker keeps its knowledge bases there too), so a collection that
        retrieval did not create is not listed, and neither is the catalog itself."""
        names = [n for n in self.store.list_collections() if n != CATALOG]
        known = {p.id for p in self.store.retrieve(CATALOG, [_catalog_id(n) for n in names])}
        return [n for n in names if _catalog_id(n) in known]


def _catalog_id(name: str) -> str:
    return point_id(name.encode(), namespace=CATALOG)


def _entry(name: str, payload: dict) -> Entry:  # type: ignore[type-arg]
    model = ModelId(str(payload.get("model_name", "")), str(payload.get("model_version", "")))
    return Entry(name, model, int(payload.get("dim", 0)), bool(payload.get("has_tokens")))
