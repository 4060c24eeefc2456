"""Knowledge bases on the vector store: one collection `kb-<name>` per knowledge base, with
named vectors "text" and "image" (the frozen encoder's global features, for candidate search
and for M3EL's re-rank) and "fused" (M3EL's entity embedding), the entity as payload.

An entity without an image has no "image" vector (Qdrant allows a missing named vector), so
image search never returns it. Cosine collections store unit vectors, but M3EL re-ranks the
raw features it was trained on: each vector's norm goes in the payload and `fetch` scales the
stored unit vector back. A small catalog collection remembers which model built each
knowledge base, so vectors of another model are never compared with the served one's.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from concord.errors import FailedPrecondition, InvalidArgument, NotFound
from concord.vectors import (
    CollectionNotFound,
    CollectionSpec,
    Point,
    ScoredPoint,
    VectorStore,
    point_id,
)
from concord.wire import ModelId

PREFIX = "kb-"
CATALOG = "linker-catalog"  # one point per knowledge base: the model and dimensions
TEXT, IMAGE, FUSED = "text", "image", "fused"
PAYLOAD_INDEXES: Mapping[str, Any] = {"entity_id": "keyword"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,59}$")  # kb-<name> fits 64 characters
ENTRY_TTL_SECONDS = 5.0  # how long a catalog entry is trusted before it is read again


@dataclass(frozen=True)
class KBEntry:
    """What the catalog knows about one knowledge base."""

    name: str
    model: ModelId
    text_dim: int
    image_dim: int
    fused_dim: int


@dataclass(frozen=True, eq=False)
class EntityRecord:
    """One entity as it is stored: its fields and its vectors (image None: no image)."""

    id: str
    name: str
    description: str
    attributes: Mapping[str, Any]
    image_count: int
    text: np.ndarray
    image: np.ndarray | None
    fused: np.ndarray


@dataclass(frozen=True, eq=False)
class StoredEntity:
    """An entity read back: payload fields and its raw text / image features."""

    point: str  # point id
    id: str
    name: str
    description: str
    attributes: dict[str, Any] = field(default_factory=dict)
    image_count: int = 0
    text: np.ndarray | None = None
    image: np.ndarray | None = None


def collection_of(name: str) -> str:
    """Returns: the collection of knowledge base `name`."""
    return PREFIX + name


def check_name(name: str, field: str = "knowledge_base") -> str:
    """Returns: `name`. Raises: InvalidArgument naming `field` unless 1-60 of [A-Za-z0-9_-]."""
    if not name:
        raise InvalidArgument(field, "is empty; name a knowledge base")
    if not NAME_RE.match(name):
        raise InvalidArgument(
            field, f"{name!r} is not a knowledge base name (1-60 of A-Z a-z 0-9 _ -)"
        )
    return name


def entity_point(kb: str, entity_id: str) -> str:
    """The point id of an entity: the same for the same knowledge base and entity id, so an
    upsert replaces and a replay rewrites the same point."""
    return point_id(entity_id.encode(), namespace=f"kb:{kb}")


class KnowledgeBases:
    """Creates, fills, searches and drops knowledge bases (thread-safe; sync store calls).

    Args:
        store: the process's vector store (embedded qdrant-edge or a Qdrant server).
    """

    def __init__(self, store: VectorStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[KBEntry, float]] = {}
        store.create_collection(CollectionSpec(CATALOG, dense={"marker": 1}))

    # ----------------------------------------------------------------- catalog

    def entry(self, name: str, field: str = "knowledge_base") -> KBEntry:
        """Returns: the catalog entry. Raises: NotFound naming the knowledge base."""
        check_name(name, field)
        cached = self._entries.get(name)
        if cached is not None and time.monotonic() - cached[1] < ENTRY_TTL_SECONDS:
            return cached[0]
        found = self.store.retrieve(CATALOG, [_catalog_id(name)])
        if not found or collection_of(name) not in self.store.list_collections():
            self._entries.pop(name, None)
            raise NotFound(f"knowledge base {name!r} does not exist")
        entry = _entry(name, found[0].payload)
        self._entries[name] = (entry, time.monotonic())
        return entry

    def ensure(self, name: str, model: ModelId, dims: tuple[int, int, int]) -> KBEntry:
        """Create knowledge base `name` for `model` if missing.

        Args:
            dims: the text, image and fused vector sizes of the model.
        Raises:
            FailedPrecondition: it holds vectors of another model (or other sizes).
        """
        with self._lock:
            try:
                entry = self.entry(name)
            except NotFound:
                text, image, fused = dims
                spec = CollectionSpec(
                    collection_of(name),
                    dense={TEXT: text, IMAGE: image, FUSED: fused},
                    payload_indexes=PAYLOAD_INDEXES,
                )
                self.store.create_collection(spec)
                entry = KBEntry(name, model, text, image, fused)
                self._write(entry)
            if entry.model != model or (entry.text_dim, entry.image_dim, entry.fused_dim) != dims:
                raise FailedPrecondition(
                    f"knowledge base {name!r} holds vectors of {entry.model}, the linker serves "
                    f"{model}: delete it and upsert its entities again, or use a new one"
                )
            return entry

    def _write(self, entry: KBEntry) -> None:
        payload = {
            "knowledge_base": entry.name,
            "model_name": entry.model.name,
            "model_version": entry.model.version,
            "text_dim": entry.text_dim,
            "image_dim": entry.image_dim,
            "fused_dim": entry.fused_dim,
        }
        self.store.upsert(CATALOG, [Point(_catalog_id(entry.name), {"marker": [1.0]}, payload)])
        self._entries[entry.name] = (entry, time.monotonic())

    def names(self) -> list[str]:
        """Returns: every knowledge base, sorted."""
        return sorted(
            c.removeprefix(PREFIX) for c in self.store.list_collections() if c.startswith(PREFIX)
        )

    def summaries(self) -> list[tuple[KBEntry, int]]:
        """Returns: (entry, entity count) of every knowledge base, sorted by name."""
        out = []
        for name in self.names():
            try:
                entry = self.entry(name)
                out.append((entry, self.store.count(collection_of(name))))
            except (NotFound, CollectionNotFound):  # dropped meanwhile, or made elsewhere
                continue
        return out

    def drop(self, name: str, field: str = "name") -> bool:
        """Delete knowledge base `name` and its entities. Returns: whether it existed."""
        check_name(name, field)
        with self._lock:
            self._entries.pop(name, None)
            existed = self.store.delete_collection(collection_of(name))
            self.store.delete(CATALOG, [_catalog_id(name)])
        return existed

    # ----------------------------------------------------------------- entities

    def upsert(self, name: str, records: Sequence[EntityRecord]) -> int:
        """Add or replace entities (by id). Returns: how many were written."""
        self.entry(name)
        points = [Point(entity_point(name, r.id), _vectors(r), _payload(r)) for r in records]
        self.store.upsert(collection_of(name), points)
        return len(points)

    def delete(self, name: str, ids: Sequence[str]) -> int:
        """Delete entities by id (unknown ids are ignored). Returns: how many existed."""
        self.entry(name)
        points = [entity_point(name, i) for i in dict.fromkeys(ids)]
        existing = self.store.retrieve(collection_of(name), points)
        self.store.delete(collection_of(name), points)
        return len(existing)

    def count(self, name: str) -> int:
        self.entry(name)
        return self.store.count(collection_of(name))

    def search(
        self, name: str, using: str, vector: np.ndarray, limit: int, exact: bool = False
    ) -> list[ScoredPoint]:
        """Nearest entities by one named vector ("text", "image" or "fused"), best first."""
        return self.store.search(collection_of(name), vector, using=using, limit=limit, exact=exact)

    def fetch(self, name: str, points: Sequence[str]) -> list[StoredEntity]:
        """Entities by point id, with their raw text and image features, in the order asked
        (missing points are left out)."""
        found = self.store.retrieve(collection_of(name), points, with_vectors=True)
        return [_stored(p.id, p.payload, p.vectors) for p in found]

    def get(self, name: str, ids: Sequence[str]) -> list[StoredEntity]:
        """Entities by entity id (without vectors), in the order asked."""
        self.entry(name)
        found = self.store.retrieve(collection_of(name), [entity_point(name, i) for i in ids])
        return [_stored(p.id, p.payload, {}) for p in found]


def _catalog_id(name: str) -> str:
    return point_id(name.encode(), namespace=CATALOG)


def _entry(name: str, payload: Mapping[str, Any]) -> KBEntry:
    model = ModelId(str(payload.get("model_name", "")), str(payload.get("model_version", "")))
    return KBEntry(
        name,
        model,
        int(payload.get("text_dim", 0)),
        int(payload.get("image_dim", 0)),
        int(payload.get("fused_dim", 0)),
    )


def _norm(vector: np.ndarray) -> float:
    return float(np.linalg.norm(vector))


def _vectors(record: EntityRecord) -> dict[str, np.ndarray]:
    vectors = {TEXT: record.text, FUSED: record.fused}
    if record.image is not None:
        vectors[IMAGE] = record.image
    return vectors


def _payload(record: EntityRecord) -> dict[str, Any]:
    return {
        "entity_id": record.id,
        "name": record.name,
        "description": record.description,
        "attributes": dict(record.attributes),
        "image_count": record.image_count,
        "text_norm": _norm(record.text),
        "image_norm": _norm(record.image) if record.image is not None else 0.0,
    }


def _stored(point: object, payload: Mapping[str, Any], vectors: Mapping[str, Any]) -> StoredEntity:
    def raw(name: str) -> np.ndarray | None:
        if name not in vectors:
            return None
        unit = np.asarray(vectors[name], dtype=np.float32)
        return unit * np.float32(payload.get(f"{name}_norm", 1.0))

    return StoredEntity(
        point=str(point),
        id=str(payload.get("entity_id", "")),
        name=str(payload.get("name", "")),
        description=str(payload.get("description", "")),
        attributes=dict(payload.get("attributes") or {}),
        image_count=int(payload.get("image_count", 0)),
        text=raw(TEXT),
        image=raw(IMAGE),
    )
