"""The encoder's model state: load once, then encode images and texts through one dynamic
batcher per modality (torch in inference mode on that modality's own model thread). No proto
types here.

Each modality's batches run on one dedicated thread, not on asyncio's shared pool: OpenMP
keeps a thread team per calling thread, so a forward that hops between pool threads builds
(and spins) a new team on each, and a shared pool lets decode work queue behind forwards. One
thread per modality keeps one team, lets an image batch and a text batch run side by side, and
never runs two batches of one modality at once (the batcher sends one at a time anyway).

A batch of one item whose in-process forward has been measured at under `INLINE_MODEL_SECONDS`
runs on the event loop itself: on a busy machine each hop to a thread and back waits to be
scheduled (about 1 ms of a batch-1 call's p50 at load 4 on 2 cores, benchmarks/encoder_serving.py),
a cost of the same order as such a forward. A remote (Triton) backend never runs on the loop."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from PIL import Image

from concord.checkpoints import LoadedModel, load_model
from concord.config import Settings
from concord.devices import inference, service_device
from concord.models.dual_encoder import Encoded
from concord.models.preprocess import images_to_tensor
from concord.registry import Registry
from concord.serving import DynamicBatcher
from concord.serving.servable import ModelThread, Pinned, Servable, batcher, run_pinned

if TYPE_CHECKING:
    from services.encoder.triton_backend import TritonEncoderBackend

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

INLINE_MODEL_SECONDS = 0.015  # a single-item forward this fast runs on the event loop
EWMA_WEIGHT = 0.2  # of the newest single-item forward in the running estimate
MAX_ITEMS_PER_REQUEST = 1024  # also capped by settings.batching.max_queue


@dataclass(frozen=True, eq=False)
class ItemEncoding:
    """One input's result: pooled (E,) unit-norm, tokens (n, E) with text strings and spans."""

    pooled: np.ndarray
    tokens: np.ndarray
    token_texts: tuple[str, ...] = ()  # empty for image patches
    spans: tuple[tuple[int, int], ...] = ()  # empty for image patches


class EncoderServable(Servable[LoadedModel]):
    """Holds the served model and its batchers.

    Args:
        settings: `encoder_model` names the model; `batching` sizes the batchers;
            `encoder_backend` "triton" sends the batched model calls to `triton_url`.
        registry: returns the platform registry (called only for `models:/` URIs).
    """

    def __init__(self, settings: Settings, registry: Callable[[], Registry]) -> None:
        self._registry = registry
        self._settings = settings
        self.remote: TritonEncoderBackend | None = None  # set when the backend is triton
        self.max_items = min(MAX_ITEMS_PER_REQUEST, settings.batching.max_queue)
        self.max_text_chars = settings.serving.max_text_chars  # checked before tokenizing
        self.precision = settings.device.precision
        self._threads = {kind: ModelThread(f"encoder-{kind}") for kind in ("images", "texts")}
        self.single_seconds: dict[str, float] = {}  # per modality: a one-item batch's forward
        # Items carry the model their request took: a batch runs each on that model.
        self.images: DynamicBatcher[Pinned[LoadedModel, Image.Image], ItemEncoding] = batcher(
            self._encode_images, "encoder-images", settings.batching
        )
        self.texts: DynamicBatcher[Pinned[LoadedModel, str], ItemEncoding] = batcher(
            self._encode_texts, "encoder-texts", settings.batching
        )
        super().__init__("encoder", settings.encoder_model, [self.images, self.texts])

    def load(self) -> LoadedModel:
        """Resolve the device (Triton runs the model elsewhere), then load the model onto it."""
        if self._settings.encoder_backend == "triton":
            # A reload (the alias moved) keeps the endpoint it has.
            self.remote = self.remote or self._connect_triton()
        else:
            self.device = service_device(self._settings.device, "encoder")
        loaded = load_model(self.uri, self._registry, weights=self.remote is None)
        if loaded.model is not None:
            loaded.model.to(self.device)  # in place: every later torch_model() is on the device
        return loaded

    async def stop(self) -> None:
        await super().stop()
        for thread in self._threads.values():
            thread.close()
        if self.remote is not None:
            self.remote.close()

    def _connect_triton(self) -> TritonEncoderBackend:
        from services.encoder.triton_backend import TritonEncoderBackend

        url, model = self._settings.triton_url, self._settings.triton_model
        # The chart's gateway and its KServe predictor share one token (one Secret).
        token = self._settings.serving.auth_token
        remote = TritonEncoderBackend(
            url or "", model, token=token.get_secret_value() if token else None
        )
        if not remote.ready():  # not fatal: the endpoint may come up after the service
            log.warning("triton endpoint %s: models of %r not ready yet", url, model)
        return remote

    @property
    def where(self) -> str:
        return "triton" if self.remote is not None else super().where

    @property
    def dim(self) -> int:
        return self.require().embed_dim

    # ----------------------------------------------------------------- predict

    async def encode_images(
        self, images: Sequence[Image.Image], model: LoadedModel | None = None
    ) -> list[ItemEncoding]:
        """Encode decoded images; each goes through the batcher so callers coalesce.

        Args:
            model: the model the request took (`require()`); default: the served one now.
        """
        loaded = model or self.require()
        return await self.images.submit_many([Pinned(loaded, image) for image in images])

    async def encode_texts(
        self, texts: Sequence[str], model: LoadedModel | None = None
    ) -> list[ItemEncoding]:
        """Encode non-empty texts; each goes through the batcher so callers coalesce.

        Args:
            model: the model the request took (`require()`); default: the served one now.
        """
        loaded = model or self.require()
        return await self.texts.submit_many([Pinned(loaded, text) for text in texts])

    async def _encode_images(
        self, items: list[Pinned[LoadedModel, Image.Image]]
    ) -> list[ItemEncoding]:
        return await self._on_thread("images", self._run_images, items)

    async def _encode_texts(self, items: list[Pinned[LoadedModel, str]]) -> list[ItemEncoding]:
        return await self._on_thread("texts", self._run_texts, items)

    async def _on_thread(self, kind: str, fn: Callable[[list[T]], R], items: list[T]) -> R:
        single = len(items) == 1 and self.remote is None
        if single and self.single_seconds.get(kind, INLINE_MODEL_SECONDS) < INLINE_MODEL_SECONDS:
            return self._timed(kind, fn, items)
        call = partial(self._timed, kind, fn, items) if single else partial(fn, items)
        return await self._threads[kind].run(call)

    def _timed(self, kind: str, fn: Callable[[list[T]], R], items: list[T]) -> R:
        """`fn(items)` for a single item, its time kept in `single_seconds[kind]`."""
        started = time.perf_counter()
        out = fn(items)
        elapsed = time.perf_counter() - started
        previous = self.single_seconds.get(kind)
        self.single_seconds[kind] = (
            elapsed if previous is None else (1 - EWMA_WEIGHT) * previous + EWMA_WEIGHT * elapsed
        )
        return out

    def _run_images(self, items: list[Pinned[LoadedModel, Image.Image]]) -> list[ItemEncoding]:
        return run_pinned(items, self._images_on)

    def _run_texts(self, items: list[Pinned[LoadedModel, str]]) -> list[ItemEncoding]:
        return run_pinned(items, self._texts_on)

    def _images_on(self, loaded: LoadedModel, images: list[Image.Image]) -> list[ItemEncoding]:
        pixels = images_to_tensor(images, loaded.image_size)
        if self.remote is not None:
            return _split(self.remote.encode_image(pixels))
        with inference(self.device, self.precision):
            encoded = loaded.torch_model().encode_image(pixels.to(self.device))
        return _split(encoded)

    def _texts_on(self, loaded: LoadedModel, texts: list[str]) -> list[ItemEncoding]:
        batch = loaded.tokenizer(texts)
        if self.remote is not None:
            encoded = self.remote.encode_text(batch.input_ids, batch.attention_mask)
            return _split(encoded, batch.tokens, batch.offsets)
        ids, mask = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
        with inference(self.device, self.precision):
            encoded = loaded.torch_model().encode_text(ids, mask)
        return _split(encoded, batch.tokens, batch.offsets)


def _split(
    encoded: Encoded,
    token_texts: list[list[str]] | None = None,
    offsets: list[list[tuple[int, int]]] | None = None,
) -> list[ItemEncoding]:
    # Back to CPU float32 (autocast may have produced bf16/fp16 on a GPU).
    pooled = encoded.pooled.float().cpu().numpy()
    tokens = encoded.tokens.float().cpu().numpy()
    mask = encoded.mask.cpu().numpy()
    out = []
    for i in range(len(pooled)):
        rows = tokens[i][mask[i]]
        out.append(
            ItemEncoding(
                pooled=pooled[i],
                tokens=rows,
                token_texts=tuple(token_texts[i]) if token_texts else (),
                spans=tuple(offsets[i]) if offsets else (),
            )
        )
    return out
