"""The retrieval service's state and operations: the vector store's collections and the
encoder reached over gRPC (async for RPCs, blocking for the bus worker). No proto types."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from concord.clients.encoder import AsyncEncoderClient, EncoderClient
from concord.clients.scorer import AsyncScorerClient
from concord.clients.types import Embedding
from concord.config import Settings
from concord.errors import FailedPrecondition, InvalidArgument
from concord.serving.dependencies import Dependencies
from concord.serving.requests import check_text
from concord.transport import open_channel
from concord.vectors import Filter, ScoredPoint, VectorStore
from concord.vectors.types import parse_point_id
from concord.wire import ImageData, ModelId
from services.retrieval import indexing, search, thumbnails
from services.retrieval.collections import Collections, Entry, default_collection
from services.retrieval.explain import HitExplanation, explain_hits
from services.retrieval.upgrade import Upgrades


@dataclass(frozen=True)
class Query:
    """Exactly one of text, image or a raw vector."""

    text: str | None = None
    image: ImageData | None = None
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class Indexed:
    ids: tuple[str, ...]
    collection: str
    model: ModelId
    modalities: tuple[str, ...]


def encoder_address(settings: Settings) -> str:
    return settings.serving.address_for("encoder")


def scorer_address(settings: Settings) -> str:
    return settings.serving.address_for("scorer")


def _metadata(settings: Settings) -> tuple[tuple[str, str], ...]:
    token = settings.serving.auth_token
    return (("authorization", f"Bearer {token.get_secret_value()}"),) if token else ()


# After the encoder went away, gRPC redials with a backoff that grows to 120 s by default:
# an ingest worker waiting out a short outage would then idle long after the encoder is back.
MAX_RECONNECT_BACKOFF_MS = 2000


def _channel_options(settings: Settings) -> list[tuple[str, int]]:
    size = settings.serving.max_message_bytes
    return [
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    ]


class Retrieval:
    """Indexes and searches collections; `start`/`stop` inside the serving event loop.

    Args:
        settings: the encoder's address, auth token and message limits.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.max_text_chars = settings.serving.max_text_chars  # index items and text queries
        self._collections: Collections | None = None
        self._aio_channel: grpc.aio.Channel | None = None
        self._channel: grpc.Channel | None = None
        self.encoder: AsyncEncoderClient | None = None
        self.encoder_sync: EncoderClient | None = None
        # Only a search with `explain` calls the scorer; readiness does not wait for it.
        self._scorer_channel: grpc.aio.Channel | None = None
        self.scorer: AsyncScorerClient | None = None
        # Readiness follows the encoder: retrieval encodes every text and image through it.
        self.dependencies = Dependencies(settings, ["encoder"])
        # Encoder upgrades (services.retrieval.upgrade): set by app.build; None: no routing.
        self.upgrades: Upgrades | None = None
        # Runs the dense searches of RPCs (inline or batched across callers); set by start.
        self.runner: search.SearchRunner | None = None

    async def start(self, store: VectorStore) -> None:
        self._collections = await asyncio.to_thread(Collections, store)
        self.runner = search.SearchRunner(store)
        address, options = encoder_address(self.settings), _channel_options(self.settings)
        self._aio_channel = open_channel(address, self.settings.serving, options, aio=True)
        self._channel = open_channel(address, self.settings.serving, options)
        self.encoder = AsyncEncoderClient(self._aio_channel, _metadata(self.settings))
        self.encoder_sync = EncoderClient(self._channel, _metadata(self.settings))
        self._scorer_channel = open_channel(
            scorer_address(self.settings), self.settings.serving, options, aio=True
        )
        self.scorer = AsyncScorerClient(self._scorer_channel, _metadata(self.settings))

    async def stop(self) -> None:
        if self.runner is not None:
            self.runner.close()
        if self._aio_channel is not None:
            await self._aio_channel.close()
        if self._channel is not None:
            self._channel.close()
        if self._scorer_channel is not None:
            await self._scorer_channel.close()

    @property
    def collections(self) -> Collections:
        if self._collections is None:
            raise FailedPrecondition("the retrieval service has not started")
        return self._collections

    # ----------------------------------------------------------------- index

    async def index(
        self,
        items: Sequence[indexing.ItemIn],
        collection: str,
        tokens: bool,
        keep_thumbnails: bool = False,
    ) -> Indexed:
        """Encode and upsert items (async path of the RPCs); `keep_thumbnails` stores each
        image's thumbnail in its payload (what `explain` sends to the scorer)."""
        indexing.validate(items, max_text_chars=self.max_text_chars)
        assert self.encoder is not None
        calls = indexing.EncodeCalls(
            lambda t: self.encoder.encode_texts(t, include_tokens=tokens),  # type: ignore[union-attr]
            lambda i: self.encoder.encode_images(i, include_tokens=tokens),  # type: ignore[union-attr]
        )
        embeddings, model, dim = await indexing.encode_async(items, calls)
        return await asyncio.to_thread(
            self._store_items, items, embeddings, model, dim, collection, tokens, keep_thumbnails
        )

    def index_sync(
        self,
        items: Sequence[indexing.ItemIn],
        collection: str,
        tokens: bool,
        keep_thumbnails: bool = True,
    ) -> Indexed:
        """Encode and upsert items with blocking calls (the bus worker's thread); the bus
        path keeps thumbnails, so ingested images can be explained."""
        indexing.validate(items, max_text_chars=self.max_text_chars)
        assert self.encoder_sync is not None
        enc = self.encoder_sync
        calls = indexing.EncodeCalls(
            lambda t: enc.encode_texts(t, include_tokens=tokens),
            lambda i: enc.encode_images(i, include_tokens=tokens),
        )
        embeddings, model, dim = indexing.encode_sync(items, calls)
        return self._store_items(items, embeddings, model, dim, collection, tokens, keep_thumbnails)

    def _store_items(
        self,
        items: Sequence[indexing.ItemIn],
        embeddings: list[Embedding],
        model: ModelId,
        dim: int,
        collection: str,
        tokens: bool,
        keep_thumbnails: bool = False,
    ) -> Indexed:
        name = collection or default_collection(model)
        entry = self.collections.ensure(name, model, dim, tokens)
        points = indexing.build_points(items, embeddings, entry.name, tokens)
        if keep_thumbnails:
            for item, point in zip(items, points, strict=True):
                if item.image is not None:
                    field = indexing.at(item.where, "item.image")
                    point.payload[thumbnails.THUMBNAIL_KEY] = thumbnails.make(item.image, field)
        self.collections.store.upsert(entry.name, points)
        return Indexed(
            tuple(str(p.id) for p in points),
            entry.name,
            model,
            tuple(i.modality for i in items),
        )

    # ----------------------------------------------------------------- search

    async def search(
        self, query: Query, spec: search.SearchSpec, collection: str
    ) -> tuple[list[ScoredPoint], Entry]:
        """Encode the query if needed and search. Returns: hits and the collection searched."""
        if query.text is not None:
            check_text(query.text, "text", self.max_text_chars)
        entry = await self._entry(collection) if collection else None
        tokens: np.ndarray | None = None
        if query.vector is not None:
            if entry is None:
                entry = await self.default_entry()
            vector = search.check_vector(query.vector, entry.dim)
        else:
            embedding, model = await self._encode_query(query, spec.rerank)
            if entry is None and self.upgrades is not None:  # the old collection while upgrading
                entry, embedding, model = await asyncio.to_thread(
                    self.upgrades.default_route, embedding, model
                )
            if entry is None:
                entry = await self._entry(default_collection(model))
            if entry.model.name and entry.model != model:
                raise FailedPrecondition(
                    f"collection {entry.name!r} was built by {entry.model}, the encoder serves "
                    f"{model}: its queries would land in another space"
                )
            vector = embedding.vector
            tokens = embedding.tokens.vectors if embedding.tokens is not None else None
        if spec.rerank or self.runner is None:
            hits = await asyncio.to_thread(
                search.run, self.collections.store, entry, spec, vector, tokens
            )
        else:
            hits = await self.runner.search(entry.name, search.dense_query(spec, vector))
        return hits, entry

    async def _entry(self, name: str) -> Entry:
        """The catalog entry, from memory when it is there (no thread hand-off)."""
        collections = self.collections
        cached = collections.cached(name)
        return cached if cached is not None else await asyncio.to_thread(collections.entry, name)

    async def explain(
        self, text: str, hits: Sequence[ScoredPoint], timeout: float | None = None
    ) -> tuple[list[HitExplanation | None], ModelId | None]:
        """The scorer's word verdicts for each image hit against the query text (see
        services.retrieval.explain). Returns: one entry per hit and the scorer model."""
        if self.scorer is None:
            raise FailedPrecondition("the retrieval service has not started")
        return await explain_hits(self.scorer, scorer_address(self.settings), text, hits, timeout)

    async def _encode_query(self, query: Query, tokens: bool) -> tuple[Embedding, ModelId]:
        assert self.encoder is not None
        try:
            if query.text is not None:
                encoded = await self.encoder.encode_texts([query.text], include_tokens=tokens)
            else:
                encoded = await self.encoder.encode_images([query.image], include_tokens=tokens)  # type: ignore[list-item]
        except InvalidArgument as err:
            # The encoder names `texts[0]` / `images[0].data`; this request calls them
            # `text` / `image.data`.
            raise InvalidArgument.from_violations(
                [
                    type(v)(
                        v.field.replace("texts[0]", "text").replace("images[0]", "image"),
                        v.description,
                    )
                    for v in err.violations
                ]
            ) from None
        return encoded.embeddings[0], encoded.model

    async def default_entry(self) -> Entry:
        assert self.encoder is not None
        model = await self.encoder.model()
        if model is None:
            raise FailedPrecondition(
                "name a collection: the encoder serves no model, so there is no default one"
            )
        return await self._entry(default_collection(model))

    # ----------------------------------------------------------------- delete

    def delete(self, collection: str, ids: Sequence[str], where: Filter | None) -> int:
        """Delete by ids and/or filter. Returns: how many points went away."""
        if not ids and (where is None or where.empty):
            raise InvalidArgument("ids", "give ids or a non-empty filter")
        wanted = [parse_point_id(i, f"ids[{n}]") for n, i in enumerate(ids)]
        entry = self.collections.entry(collection)
        store = self.collections.store
        before = store.count(entry.name)
        if wanted:
            store.delete(entry.name, wanted)
        if where is not None and not where.empty:
            store.delete_by_filter(entry.name, where)
        return before - store.count(entry.name)
