"""The bias service's model state: load the bias package once (settings `bias.model`: a registry
URI or a package directory, through `concord.checkpoints.load_bias`), then judge pairs through
a dynamic batcher and run the text-reliance probe one pair at a time.

The inconsistency cue comes from the shared concord-encoder inside the bias package, in process,
not from a gRPC call to the scorer: the classifier already runs that encoder's towers, so the
image-text cosine costs one projection more, with no network hop per pair and no dependency on
the scorer being up; its calibration is fitted on the bias data's contradicting images.

Torch runs in worker threads, one model call at a time. No proto types here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from concord.checkpoints.bias import LoadedBias, load_bias
from concord.config import Settings
from concord.devices import service_device
from concord.models import bias as model
from concord.models.preprocess import images_to_tensor
from concord.registry import Registry
from concord.serving import DynamicBatcher
from concord.serving.servable import Pinned, Servable, batcher, run_pinned
from concord.wire import ModelId
from services.bias.types import Cue, PairIn, Probe, Verdict


@dataclass(frozen=True, eq=False)
class ProbeIn:
    pair: PairIn
    counterfactuals: tuple[str, ...]


class BiasServable(Servable[LoadedBias]):
    """Holds the served bias detector and its batchers.

    Args:
        settings: `bias.model` names the package; `bias.threshold`, when set explicitly,
            overrides the package's decision threshold (a product's own precision / recall
            trade-off); the request limits; `batching` sizes the Detect batcher.
        registry: returns the platform registry (called only for `models:/` URIs).
    """

    missing_hint = (
        " (train and register one: `concord bias-model train --register`, or set "
        "CONCORD_BIAS__MODEL to a package directory)"
    )

    def __init__(self, settings: Settings, registry: Callable[[], Registry]) -> None:
        bias = settings.bias
        explicit = "threshold" in bias.model_fields_set
        self._threshold_setting = bias.threshold if explicit else None
        self.max_pairs = bias.max_pairs_per_request
        self.max_text_chars = bias.max_text_chars
        self.max_counterfactuals = bias.max_counterfactuals
        self._registry = registry
        self._device_settings = settings.device
        # One model call at a time: Detect batches, probes and the workers share the model.
        self._model_lock = threading.Lock()
        # Items carry the package their request took: a batch runs each on that package.
        self.pairs: DynamicBatcher[Pinned[LoadedBias, PairIn], Verdict] = batcher(
            self._detect_batch, "bias-pairs", settings.batching
        )
        # A probe is one image with up to max_counterfactuals texts: a batch of its own.
        self.probes: DynamicBatcher[Pinned[LoadedBias, ProbeIn], Probe] = batcher(
            self._probe_batch, "bias-probe", settings.batching, max_batch_size=1, max_delay_ms=0.0
        )
        super().__init__("bias", bias.model, [self.pairs, self.probes])

    def load(self) -> LoadedBias:
        """Resolve the device, then load the package and its encoder onto it."""
        self.device = service_device(self._device_settings, "bias")
        loaded = load_bias(self.uri, self._registry, self.device)
        if self._threshold_setting is not None:
            loaded.detector.threshold = self._threshold_setting
        return loaded

    @property
    def models(self) -> list[ModelId]:
        """The package, then the encoder it is built on."""
        loaded = self.loaded
        return [loaded.id, loaded.encoder.id] if loaded is not None else []

    @property
    def threshold(self) -> float:
        """P(biased) at or above which a pair is labelled biased."""
        return self.require().detector.threshold

    # ----------------------------------------------------------------- predict

    async def detect(
        self, pairs: Sequence[PairIn], model: LoadedBias | None = None
    ) -> list[Verdict]:
        """Judge decoded pairs; each goes through the batcher so callers coalesce.

        Args:
            model: the package the request took (`require()`); default: the served one now.
        """
        loaded = model or self.require()
        return await self.pairs.submit_many([Pinned(loaded, pair) for pair in pairs])

    async def probe(
        self, pair: PairIn, counterfactuals: Sequence[str], model: LoadedBias | None = None
    ) -> Probe:
        """The text-reliance probe of one image with altered texts."""
        loaded = model or self.require()
        return await self.probes.submit(Pinned(loaded, ProbeIn(pair, tuple(counterfactuals))))

    def detect_sync(self, pairs: Sequence[PairIn]) -> list[Verdict]:
        """The same as `detect` for callers in other threads (the bus workers)."""
        return self._detect_on(self.require(), list(pairs))

    def _detect_batch(self, items: list[Pinned[LoadedBias, PairIn]]) -> list[Verdict]:
        return run_pinned(items, self._detect_on)

    def _probe_batch(self, items: list[Pinned[LoadedBias, ProbeIn]]) -> list[Probe]:
        return run_pinned(items, self._probe_on)

    def _detect_on(self, loaded: LoadedBias, items: list[PairIn]) -> list[Verdict]:
        """One model call per kind of item: those that want cues, and those that do not."""
        out: list[Verdict | None] = [None] * len(items)
        for explain in (True, False):
            idx = [i for i, p in enumerate(items) if p.explain == explain]
            if not idx:
                continue
            found = self._run(loaded, [items[i] for i in idx], explain)
            for i, verdict in zip(idx, found, strict=True):
                out[i] = verdict
        return [v for v in out if v is not None]

    def _run(self, loaded: LoadedBias, items: list[PairIn], explain: bool) -> list[Verdict]:
        detector = loaded.detector
        pixels = images_to_tensor([p.image for p in items], loaded.image_size)
        texts = [p.text for p in items]
        with self._model_lock:
            found = detector.detect(pixels, texts, explain=explain)
        t = detector.threshold
        return [verdict(v, text, t, explain) for v, text in zip(found, texts, strict=True)]

    def _probe_on(self, loaded: LoadedBias, items: list[ProbeIn]) -> list[Probe]:
        detector = loaded.detector
        out = []
        for item in items:
            pixels = images_to_tensor([item.pair.image], loaded.image_size)
            with self._model_lock:
                # Counterfactual verdicts without occlusion cues; the original with them.
                found = detector.probe(pixels, item.pair.text, item.counterfactuals, explain=False)
                (original,) = detector.detect(pixels, [item.pair.text], explain=True)
            t = detector.threshold
            out.append(
                Probe(
                    verdict(original, item.pair.text, t),
                    tuple(
                        verdict(v, text, t, explained=False)
                        for v, text in zip(found.counterfactuals, item.counterfactuals, strict=True)
                    ),
                    found.text_reliance,
                    found.text_effect,
                    found.image_effect,
                    found.flip_rate,
                )
            )
        return out


def verdict(found: model.Verdict, text: str, threshold: float, explained: bool = True) -> Verdict:
    """The model's verdict in the service's terms: cue words read from the text. Without
    occlusion (`explained` False) there is no rationale: the model's would say that no word
    moves the verdict, which nobody measured."""
    return Verdict(
        biased=found.biased,
        probability=found.probability,
        threshold=threshold,
        inconsistency=found.inconsistency,
        cues=tuple(cue(c, text) for c in found.cues) if explained else (),
        rationale=found.rationale if explained else "",
    )


def cue(found: model.Cue, text: str) -> Cue:
    words = text[found.span[0] : found.span[1]] if found.span is not None else ""
    return Cue(found.kind, found.weight, found.description, found.span, words, found.region)
