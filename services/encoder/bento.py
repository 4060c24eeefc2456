"""The encoder as a BentoML service (HTTP, adaptive batching), for teams that deploy Bentos.

    bentoml serve services.encoder.bento:EncoderBento --host 127.0.0.1 --port 3000
    bentoml build                      # packages it with bentofile.yaml

APIs (POST, JSON or multipart):
- `/encode_texts` `{"texts": ["a red circle", ...]}` -> [[E floats], ...] (L2-normalised);
- `/encode_images` multipart files `images` (any format PIL reads) -> [[E floats], ...];
- `/info` -> model name and version, embedding dim, and how many batches/items were encoded.

Concurrent requests are merged by BentoML's adaptive batcher into one model call (up to
`MAX_BATCH_SIZE` items). The model comes from `CONCORD_ENCODER_MODEL` (a model directory or
`models:/...`), loaded with the same code as the gRPC service; inference is the same torch
path (`images_to_tensor`, the model's tokenizer), so results equal the gRPC service's.
"""

from __future__ import annotations

import threading

import bentoml
import numpy as np
from PIL.Image import Image

from concord.checkpoints import LoadedModel, load_model
from concord.config import load_settings
from concord.devices import inference, service_device
from concord.models.preprocess import images_to_tensor
from concord.registry import Registry

MAX_BATCH_SIZE = 64
MAX_LATENCY_MS = 10_000  # a batch's whole budget, queueing included; beyond it: 503


@bentoml.service(
    name="concord-encoder",
    traffic={"timeout": 60, "concurrency": 256},
    labels={"project": "concord", "service": "encoder"},
)
class EncoderBento:
    """Loads `settings.encoder_model` once per worker; batchable text and image APIs."""

    def __init__(self) -> None:
        settings = load_settings()
        self.loaded: LoadedModel = load_model(
            settings.encoder_model, lambda: Registry.from_settings(settings)
        )
        self.device = service_device(settings.device, "encoder")
        self.precision = settings.device.precision
        self.model = self.loaded.torch_model().to(self.device)
        self._lock = threading.Lock()
        self.batches = 0
        self.items = 0
        self.largest_batch = 0

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Returns: float32 (len(texts), E) pooled text embeddings."""
        batch = self.loaded.tokenizer(texts)
        ids, mask = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
        with inference(self.device, self.precision):
            encoded = self.model.encode_text(ids, mask)
        self._count(len(texts))
        return encoded.pooled.float().cpu().numpy()

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def encode_images(self, images: list[Image]) -> np.ndarray:
        """Returns: float32 (len(images), E) pooled image embeddings."""
        pixels = images_to_tensor(images, self.loaded.image_size)
        with inference(self.device, self.precision):
            encoded = self.model.encode_image(pixels.to(self.device))
        self._count(len(images))
        return encoded.pooled.float().cpu().numpy()

    @bentoml.api
    def info(self) -> dict[str, object]:
        """Returns: the served model, its embedding dim, and batching counters."""
        with self._lock:
            counters = {
                "batches": self.batches,
                "items": self.items,
                "largest_batch": self.largest_batch,
            }
        return {
            "model": self.loaded.id.name,
            "version": self.loaded.id.version,
            "dim": self.loaded.embed_dim,
            **counters,
        }

    def _count(self, n: int) -> None:
        with self._lock:
            self.batches += 1
            self.items += n
            self.largest_batch = max(self.largest_batch, n)
