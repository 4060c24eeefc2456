"""The scorer's model state: load the scorer package once, then score pairs through a dynamic
batcher and explain single pairs (CLIP4DM needs gradients: one pair per model call).
Torch runs on one model thread, one model call at a time (OpenMP keeps a thread team per
calling thread: hopping between asyncio's pool threads would build one per thread). No proto
types here."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from PIL import Image

from concord.config import Settings
from concord.devices import service_device
from concord.models.alignment import Explanation, PairScores, aligned_probability
from concord.models.preprocess import images_to_tensor
from concord.registry import Registry
from concord.serving import DynamicBatcher
from concord.serving.servable import ModelThread, Pinned, Servable, batcher, run_pinned
from concord.wire import ModelId
from services.scorer.loading import LoadedScorer, load_scorer

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class PairIn:
    """One decoded pair; `references` (possibly none) give RefCLIPScore."""

    image: Image.Image
    text: str
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExplainIn:
    image: Image.Image
    text: str
    threshold: float


@dataclass(frozen=True)
class Scored:
    scores: PairScores
    probability: float  # calibrated P(aligned)


@dataclass(frozen=True, eq=False)
class Explained:
    explanation: Explanation
    probability: float
    threshold: float  # the threshold the words were flagged with


class ScorerServable(Servable[LoadedScorer]):
    """Holds the served scorer and its batchers.

    Args:
        settings: `scorer.model` names the package; `scorer.threshold`, when set explicitly,
            overrides the package's CLIP4DM epsilon (fitted for its encoder; the paper's 5e-5
            is for OpenAI CLIP's attribution scale); `batching` sizes the Score batcher.
        registry: returns the platform registry (called only for `models:/` URIs).
    """

    # fp32 even on a GPU (no autocast): CLIP4DM's word threshold and the calibration were
    # fitted on fp32 attributions, gradients of tiny magnitude that bf16 would shift.
    precision = "fp32"

    def __init__(self, settings: Settings, registry: Callable[[], Registry]) -> None:
        explicit = "threshold" in settings.scorer.model_fields_set
        self._threshold_setting = settings.scorer.threshold if explicit else None
        self.max_pairs = settings.scorer.max_pairs_per_request
        self.max_text_chars = settings.scorer.max_text_chars
        self.max_references = (
            settings.scorer.max_references_per_pair,
            settings.scorer.max_references_per_request,
        )
        self._registry = registry
        self._device_settings = settings.device
        # One model call at a time: Score batches, explanations and the auditor share the
        # model, and CLIP4DM's backward passes must not interleave.
        self._model_lock = threading.Lock()
        self._thread = ModelThread("scorer-model")
        # Items carry the package their request took: a batch runs each on that package.
        self.pairs: DynamicBatcher[Pinned[LoadedScorer, PairIn], Scored] = batcher(
            self._score_batch, "scorer-pairs", settings.batching
        )
        # Explanations are per pair; the batcher still queues them (and sheds overload).
        self.explanations: DynamicBatcher[Pinned[LoadedScorer, ExplainIn], Explained] = batcher(
            self._explain_batch,
            "scorer-explain",
            settings.batching,
            max_batch_size=4,
            max_delay_ms=0.0,
        )
        super().__init__("scorer", settings.scorer.model, [self.pairs, self.explanations])

    def load(self) -> LoadedScorer:
        """Resolve the device, then load the package and its encoder onto it."""
        self.device = service_device(self._device_settings, "scorer")
        return load_scorer(self.uri, self._registry, self.device)

    @property
    def models(self) -> list[ModelId]:
        """The package, then the encoder it scores with."""
        loaded = self.loaded
        return [loaded.id, loaded.encoder.id] if loaded is not None else []

    @property
    def threshold(self) -> float:
        """The default CLIP4DM epsilon: the setting if given, else the package's."""
        return self.threshold_of(self.require())

    def threshold_of(self, loaded: LoadedScorer) -> float:
        """The default CLIP4DM epsilon with package `loaded`."""
        return self._threshold_setting if self._threshold_setting is not None else loaded.threshold

    # ----------------------------------------------------------------- predict

    async def score(
        self, pairs: Sequence[PairIn], model: LoadedScorer | None = None
    ) -> list[Scored]:
        """Score decoded pairs; each goes through the batcher so callers coalesce.

        Args:
            model: the package the request took (`require()`); default: the served one now.
        """
        loaded = model or self.require()
        return await self.pairs.submit_many([Pinned(loaded, pair) for pair in pairs])

    async def explain(
        self,
        image: Image.Image,
        text: str,
        threshold: float = 0.0,
        model: LoadedScorer | None = None,
    ) -> Explained:
        """Per-word alignment of one pair; `threshold` 0 means the service default."""
        loaded = model or self.require()
        item = ExplainIn(image, text, threshold or self.threshold_of(loaded))
        return await self.explanations.submit(Pinned(loaded, item))

    def score_sync(self, pairs: Sequence[PairIn]) -> list[Scored]:
        """The same as `score` for callers in other threads (the auditor)."""
        return self._score_on(self.require(), list(pairs))

    def explain_sync(self, image: Image.Image, text: str, threshold: float = 0.0) -> Explained:
        """The same as `explain` for callers in other threads (the auditor)."""
        loaded = self.require()
        item = ExplainIn(image, text, threshold or self.threshold_of(loaded))
        (out,) = self._explain_on(loaded, [item])
        return out

    async def stop(self) -> None:
        await super().stop()
        self._thread.close()

    async def _score_batch(self, items: list[Pinned[LoadedScorer, PairIn]]) -> list[Scored]:
        return await self._on_model_thread(items, self._score_on)

    async def _explain_batch(self, items: list[Pinned[LoadedScorer, ExplainIn]]) -> list[Explained]:
        return await self._on_model_thread(items, self._explain_on)

    async def _on_model_thread(
        self, items: list[Pinned[LoadedScorer, T]], fn: Callable[[LoadedScorer, list[T]], list[R]]
    ) -> list[R]:
        return await self._thread.run(run_pinned, items, fn)

    def _score_on(self, loaded: LoadedScorer, items: list[PairIn]) -> list[Scored]:
        pixels = images_to_tensor([p.image for p in items], loaded.image_size).to(self.device)
        texts = [p.text for p in items]
        # A pair without references gets ref_clip_score None, also beside pairs with them.
        refs = [list(p.references) for p in items] if any(p.references for p in items) else None
        with self._model_lock:
            scores = loaded.scorer.score(pixels, texts, refs, threshold=self.threshold_of(loaded))
        return [Scored(s, aligned_probability(s, loaded.calibration)) for s in scores]

    def _explain_on(self, loaded: LoadedScorer, items: list[ExplainIn]) -> list[Explained]:
        out = []
        for item in items:
            pixels = images_to_tensor([item.image], loaded.image_size).to(self.device)
            with self._model_lock:
                explanation = loaded.scorer.explain(pixels, item.text, threshold=item.threshold)
            probability = aligned_probability(explanation.scores, loaded.calibration)
            out.append(Explained(explanation, probability, item.threshold))
        return out
