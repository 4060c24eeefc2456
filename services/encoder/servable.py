"""The encoder's model state: load once, then encode images and texts through one dynamic
batcher per modality (torch in a worker thread, inference mode). No proto types here."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from concord.checkpoints import LoadedModel, load_model
from concord.config import Settings
from concord.devices import inference, service_device
from concord.models.dual_encoder import Encoded
from concord.models.preprocess import images_to_tensor
from concord.registry import Registry
from concord.serving import DynamicBatcher
from concord.serving.servable import Pinned, Servable, batcher, run_pinned

if TYPE_CHECKING:
    from services.encoder.triton_backend import TritonEncoderBackend

log = logging.getLogger(__name__)

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

    def _encode_images(self, items: list[Pinned[LoadedModel, Image.Image]]) -> list[ItemEncoding]:
        return run_pinned(items, self._images_on)

    def _encode_texts(self, items: list[Pinned[LoadedModel, str]]) -> list[ItemEncoding]:
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
