"""Encoder upgrades for retrieval: when the encoder starts answering with a new model version,
queries that name no collection keep being answered while the old collection's items are
re-embedded into the new model's collection in the background; then the default switches.

- The new version is noticed on the first query it answers, or by a poll of the encoder's
  GetInfo every `serving.reload_interval_seconds` (0: only on queries).
- Its predecessor is the default collection (`<name>-v<version>`) of the same model name with
  the highest other version in the catalog.
- While the backfill runs, a default query goes to the old collection through the XBT
  projection psi (new space -> old space) when the new encoder package carries one (`PSI_*`
  below, written by `save_psi`); without psi it searches the new collection as far as it is
  filled (new items indexed meanwhile land there too).
- The backfill re-embeds what the old points keep: the text of text points, and for image
  points the thumbnail in their payload (services.retrieval.thumbnails; PNG, longest side
  <= 224 px, so lossless for images up to that size). Image points indexed without a thumbnail
  cannot be re-embedded: they stay searchable only in the old collection (named explicitly,
  with raw vectors or the old encoder) and are counted as `left_behind`.
- Text points whose id is the content hash get the new collection's content hash (re-indexing
  the same text later is idempotent); other ids are kept.
- State is in memory: a restart during a backfill leaves the new collection as far as it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from concord.clients.types import Embedding
from concord.errors import NotFound
from concord.vectors import Filter, Match, Point, ScoredPoint, point_id
from concord.wire import ImageData, ModelId
from services.retrieval import thumbnails
from services.retrieval.collections import DENSE, TOKENS, Collections, Entry, default_collection

if TYPE_CHECKING:
    from concord.clients.encoder import EncoderClient
    from concord.models.xbt import CompatibleProjection
    from concord.registry import Registry

log = logging.getLogger(__name__)

# psi beside the new encoder's files: the weights, and what they map from and to.
PSI_WEIGHTS = "xbt_psi.safetensors"
PSI_CONFIG = (
    "xbt_psi.json"  # {"old_model": {"name", "version"}, "new_dim", "old_dim", "hidden_dim"}
)
BACKFILL_BATCH = 64  # items per encoder call while backfilling
MAX_BACKFILL_POINTS = 1_000_000  # per modality (points are listed by one exact search)


def save_psi(directory: Path, psi: CompatibleProjection, old_model: ModelId) -> None:
    """Write psi beside a new encoder's files (before registering it), naming the old model
    whose space it maps into."""
    from safetensors.torch import save_file
    from torch import nn

    first = psi.net[0] if isinstance(psi.net, nn.Sequential) else psi.net
    hidden = first.out_features if isinstance(psi.net, nn.Sequential) else 0
    state = {k: v.detach().cpu().contiguous() for k, v in psi.state_dict().items()}
    save_file(state, str(directory / PSI_WEIGHTS))
    config = {
        "old_model": {"name": old_model.name, "version": old_model.version},
        "new_dim": psi.new_dim,
        "old_dim": psi.old_dim,
        "hidden_dim": hidden,
    }
    (directory / PSI_CONFIG).write_text(json.dumps(config, indent=2))


def load_psi(directory: Path) -> tuple[CompatibleProjection, ModelId] | None:
    """Returns: psi and the old model it maps into, or None when `directory` has none."""
    if not (directory / PSI_CONFIG).is_file() or not (directory / PSI_WEIGHTS).is_file():
        return None
    from safetensors.torch import load_file

    from concord.models.xbt import CompatibleProjection

    config = json.loads((directory / PSI_CONFIG).read_text())
    psi = CompatibleProjection(
        int(config["new_dim"]), int(config["old_dim"]), int(config.get("hidden_dim", 0))
    )
    psi.load_state_dict(load_file(str(directory / PSI_WEIGHTS)))
    old = config["old_model"]
    return psi.eval(), ModelId(str(old["name"]), str(old["version"]))


@dataclass
class Upgrade:
    """One encoder upgrade: the collection served meanwhile and the one being filled."""

    old: Entry
    new: ModelId
    target: str  # default_collection(new)
    psi: CompatibleProjection | None = None
    state: Literal["backfilling", "done", "failed"] = "backfilling"
    copied: int = 0
    left_behind: int = 0  # image points without pixels to re-embed
    error: str = ""
    finished: threading.Event = field(default_factory=threading.Event)

    def project(self, embedding: Embedding) -> Embedding:
        """The query in the old space (psi); token vectors do not map, so none."""
        import torch

        assert self.psi is not None
        with torch.inference_mode():
            vector = self.psi(torch.from_numpy(np.asarray(embedding.vector, np.float32)))
        return Embedding(vector.numpy())


class Upgrades:
    """Tracks encoder versions, runs backfills, and routes queries that name no collection.

    Args:
        collections: returns the service's collections (after start).
        encoder: returns the blocking encoder client (the backfill runs in its own thread).
        registry: returns the platform registry, to find psi beside a registered encoder;
            None: no psi (the new collection is searched as far as it is filled).
    """

    def __init__(
        self,
        collections: Callable[[], Collections],
        encoder: Callable[[], EncoderClient | None],
        registry: Callable[[], Registry] | None = None,
    ) -> None:
        self._collections = collections
        self._encoder = encoder
        self._registry = registry
        self._lock = threading.Lock()
        self._seen: set[ModelId] = set()
        self.upgrades: dict[ModelId, Upgrade] = {}  # by new model
        self._task: asyncio.Task[None] | None = None

    async def start(self, served: Callable[[], Awaitable[ModelId | None]], interval: float) -> None:
        """Poll what the encoder serves every `interval` seconds (0: only queries notice)."""
        if interval > 0:
            self._task = asyncio.create_task(self._watch(served, interval), name="upgrades")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(
        self, served: Callable[[], Awaitable[ModelId | None]], interval: float
    ) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                model = await served()
                if model is not None:
                    await asyncio.to_thread(self.observe, model)
            except Exception as err:  # the encoder is down: the next poll tries again
                log.debug("retrieval: encoder poll failed: %s", err)

    # ----------------------------------------------------------------- routing

    def default_route(
        self, embedding: Embedding, model: ModelId
    ) -> tuple[Entry, Embedding, ModelId]:
        """Where a query the encoder answered with `model` goes when it names no collection.

        Returns:
            The collection, the query vector in that collection's space, and that space's
            model. Raises: NotFound when there is no collection for the model at all.
        """
        self.observe(model)
        up = self.upgrades.get(model)
        collections = self._collections()
        if up is None or up.state == "done":
            return collections.entry(default_collection(model)), embedding, model
        if up.psi is not None:
            return up.old, up.project(embedding), up.old.model
        tokens = up.old.has_tokens
        entry = collections.ensure(up.target, model, int(np.asarray(embedding.vector).size), tokens)
        return entry, embedding, model

    def observe(self, model: ModelId) -> Upgrade | None:
        """Note that the encoder serves `model`; start the backfill from its predecessor's
        collection the first time a model has one and no finished collection of its own."""
        if model in self._seen:
            return self.upgrades.get(model)
        with self._lock:
            if model in self._seen:
                return self.upgrades.get(model)
            up = self._begin(model)
            self._seen.add(model)
            return up

    def _begin(self, model: ModelId) -> Upgrade | None:
        collections = self._collections()
        old = self._predecessor(collections, model)
        if old is None:
            return None
        target = default_collection(model)
        try:
            collections.entry(target)
            if collections.store.count(target) >= collections.store.count(old.name):
                return None  # already filled (another replica, or an earlier run)
        except NotFound:
            pass
        up = Upgrade(old, model, target, self._psi(model, old.model))
        self.upgrades[model] = up
        log.info(
            "retrieval: the encoder moved from %s to %s; serving %r %s while %r is backfilled",
            old.model,
            model,
            old.name,
            "through psi" if up.psi is not None else "no longer (no psi): the new collection",
            target,
        )
        threading.Thread(target=self._backfill, args=(up,), name=f"backfill-{target}").start()
        return up

    @staticmethod
    def _predecessor(collections: Collections, model: ModelId) -> Entry | None:
        found: list[Entry] = []
        for name in collections.names():
            entry = collections.entry(name)
            if (
                entry.model.name == model.name
                and entry.model != model
                and name == default_collection(entry.model)
            ):
                found.append(entry)
        return max(found, key=lambda e: _version_key(e.model.version), default=None)

    def _psi(self, model: ModelId, old: ModelId) -> CompatibleProjection | None:
        if self._registry is None or not model.version.isdigit():
            return None
        try:
            _, directory = self._registry().download(f"models:/{model.name}/{model.version}")
            found = load_psi(Path(directory))
        except Exception as err:  # no psi is a slower upgrade, not a broken one
            log.warning("retrieval: cannot read psi of %s: %s", model, err)
            return None
        if found is None:
            return None
        psi, maps_to = found
        if maps_to != old:
            log.warning("retrieval: psi of %s maps into %s, not %s: unused", model, maps_to, old)
            return None
        return psi

    # ----------------------------------------------------------------- backfill

    def _backfill(self, up: Upgrade) -> None:
        try:
            for modality in ("text", "image"):
                self._copy(up, modality)
            up.state = "done"
            log.info(
                "retrieval: %r backfilled from %r (%d points, %d images left behind without "
                "pixels); default queries of %s now search it",
                up.target,
                up.old.name,
                up.copied,
                up.left_behind,
                up.new,
            )
        except Exception as err:
            up.state, up.error = "failed", f"{type(err).__name__}: {err}"
            log.error("retrieval: backfilling %r failed: %s", up.target, up.error)
        finally:
            up.finished.set()

    def _copy(self, up: Upgrade, modality: str) -> None:
        collections = self._collections()
        store = collections.store
        where = Filter(must=[Match("modality", modality)])
        n = min(store.count(up.old.name, where), MAX_BACKFILL_POINTS)
        if not n:
            return
        probe = np.zeros(up.old.dim, np.float32)
        probe[0] = 1.0
        points = store.search(
            up.old.name, probe, using=DENSE, limit=n, filter=where, exact=True, with_payload=True
        )
        for start in range(0, len(points), BACKFILL_BATCH):
            self._copy_batch(up, modality, points[start : start + BACKFILL_BATCH])

    def _copy_batch(self, up: Upgrade, modality: str, hits: list[ScoredPoint]) -> None:
        encoder = self._encoder()
        if encoder is None:
            raise RuntimeError("the encoder client is not open")
        tokens = up.old.has_tokens
        if modality == "text":
            todo = [(h, str(h.payload.get("text", ""))) for h in hits if h.payload]
            todo = [(h, t) for h, t in todo if t]
            if not todo:
                return
            encoded = encoder.encode_texts([t for _, t in todo], include_tokens=tokens)
        else:
            images: list[tuple[ScoredPoint, ImageData]] = []
            for h in hits:
                image = thumbnails.read(h.payload)
                if image is None:
                    up.left_behind += 1
                else:
                    images.append((h, image))
            if not images:
                return
            todo = images  # type: ignore[assignment]
            encoded = encoder.encode_images([i for _, i in images], include_tokens=tokens)
        if encoded.model != up.new:
            raise RuntimeError(f"the encoder moved on to {encoded.model} during the backfill")
        collections = self._collections()
        entry = collections.ensure(up.target, up.new, encoded.dim, tokens)
        points = [
            Point(_new_id(up, hit, content), _vectors(emb, tokens), dict(hit.payload or {}))
            for (hit, content), emb in zip(todo, encoded.embeddings, strict=True)
        ]
        collections.store.upsert(entry.name, points)
        up.copied += len(points)


def _new_id(up: Upgrade, hit: ScoredPoint, content: Any) -> Any:
    if isinstance(content, str) and str(hit.id) == str(
        point_id(content.encode(), namespace=up.old.name)
    ):
        return point_id(content.encode(), namespace=up.target)
    return hit.id


def _vectors(embedding: Embedding, tokens: bool) -> dict[str, Any]:
    vectors: dict[str, Any] = {DENSE: embedding.vector}
    if tokens and embedding.tokens is not None and len(embedding.tokens.vectors):
        vectors[TOKENS] = embedding.tokens.vectors
    return vectors


def _version_key(version: str) -> tuple[int, int, str]:
    return (1, int(version), "") if version.isdigit() else (0, 0, version)
