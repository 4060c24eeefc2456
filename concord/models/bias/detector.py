"""What the bias service runs (pure torch, no I/O): `BiasDetector.detect` (image-text pairs ->
label, calibrated P(biased), cues, rationale, inconsistency) and `BiasDetector.probe` (the
"blind faith in text" probe: the same image with counterfactual texts).

The inconsistency cue comes from the shared concord-encoder held here, in process, not from a
gRPC call to the scorer: the bias model already runs that encoder's image tower and MiniLM, so
the image-text cosine costs one projection more, with no network hop per pair and no
dependency on the scorer being up; its calibration is fitted on the bias data's contradicting
images, i.e. for exactly the question this cue answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from concord.models.bias.calibration import InconsistencyCalibration, biased_probability
from concord.models.bias.classifier import BiasClassifier, BiasConfig
from concord.models.bias.cues import (
    Cue,
    inconsistency_cue,
    linguistic_cues,
    rationale,
    region_attributions,
    visual_cue,
    word_attributions,
)
from concord.models.dual_encoder import Encoded
from concord.models.preprocess import TextTokenizer


class PairEncoder(Protocol):
    """The concord-encoder surface the inconsistency cue needs (DualEncoder, ClipAdapter)."""

    def encode_image(self, pixels: Tensor) -> Encoded: ...

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Encoded: ...


@dataclass(frozen=True)
class Verdict:
    biased: bool
    probability: float  # calibrated P(biased)
    cues: tuple[Cue, ...]  # linguistic (strongest first), then visual, then inconsistency
    rationale: str
    inconsistency: float  # P(inconsistent) from the shared encoder


@dataclass(frozen=True)
class Probe:
    original: Verdict
    counterfactuals: tuple[Verdict, ...]
    text_reliance: float  # in [0, 1]: 1 = the verdict follows the text alone (see text_reliance)
    text_effect: float  # mean |P(biased) change| over the counterfactual texts
    image_effect: float  # |P(biased) change| when the image is replaced by a blank one
    flip_rate: float  # share of counterfactual texts that flip the label


def text_reliance(p_original: float, p_counterfactuals: Sequence[float], p_blank: float) -> float:
    """How much of the verdict follows the text alone ("blind faith in text").

    text effect = mean |P(text_k, image) - P(text, image)| over the counterfactual texts;
    image effect = |P(text, blank image) - P(text, image)|;
    reliance = text effect / (text effect + image effect), 0 when neither moves the verdict.
    A text-only model scores 1, an image-only model 0.
    """
    text_effect = (
        sum(abs(p - p_original) for p in p_counterfactuals) / len(p_counterfactuals)
        if p_counterfactuals
        else 0.0
    )
    image_effect = abs(p_blank - p_original)
    total = text_effect + image_effect
    return text_effect / total if total > 1e-6 else 0.0


class BiasDetector:
    """A trained classifier, the encoder it was built on, and the package's calibration.

    Args:
        classifier: the BiasClassifier (eval mode is set here).
        encoder: the concord-encoder model (encode_image / encode_text) for the inconsistency.
        tokenizer: MiniLM's TextTokenizer, max_length = the classifier's config.
        temperature: P(biased) = sigmoid(logit / temperature).
        threshold: P(biased) at or above which the label is biased.
        inconsistency: the cosine -> P(inconsistent) map.
        top_words: at most this many linguistic cues per pair.
        min_delta: smallest P(biased) change that makes a word or region a cue.
        grid: the visual cue's occlusion grid (grid x grid cells plus the 4 quadrants).
    """

    def __init__(
        self,
        classifier: BiasClassifier,
        encoder: PairEncoder,
        tokenizer: TextTokenizer,
        *,
        temperature: float = 1.0,
        threshold: float = 0.5,
        inconsistency: InconsistencyCalibration | None = None,
        top_words: int = 3,
        min_delta: float = 0.02,
        grid: int = 4,
    ) -> None:
        self.classifier = classifier.eval()
        if isinstance(encoder, nn.Module):
            encoder.eval()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.temperature = float(temperature)
        self.threshold = float(threshold)
        self.calibration = inconsistency or InconsistencyCalibration()
        self.top_words, self.min_delta, self.grid = top_words, min_delta, grid

    @property
    def config(self) -> BiasConfig:
        return self.classifier.config

    @property
    def device(self) -> torch.device:
        return next(self.classifier.parameters()).device

    @torch.no_grad()
    def probabilities(self, pixels: Tensor, texts: Sequence[str]) -> Tensor:
        """The fast path: (B,) calibrated P(biased), no cues. pixels (B, 3, S, S) in [0, 1]."""
        batch = self.tokenizer(texts).to(self.device)
        logits = self.classifier(batch.input_ids, batch.attention_mask, pixels.to(self.device))
        return biased_probability(logits, self.temperature).cpu()

    @torch.no_grad()
    def inconsistencies(self, pixels: Tensor, texts: Sequence[str]) -> Tensor:
        """(B,) P(inconsistent) from the encoder's pooled image-text cosine."""
        batch = self.tokenizer(texts).to(self.device)
        image = self.encoder.encode_image(pixels.to(self.device)).pooled
        text = self.encoder.encode_text(batch.input_ids, batch.attention_mask).pooled
        return self.calibration.probability((image * text).sum(dim=-1)).cpu()

    @torch.no_grad()
    def detect(self, pixels: Tensor, texts: Sequence[str], explain: bool = True) -> list[Verdict]:
        """Classify B pairs.

        Args:
            pixels: (B, 3, S, S) in [0, 1] (concord.models.preprocess.images_to_tensor).
            texts: B non-empty texts.
            explain: False skips the occlusion cues (label, probability, inconsistency only).
        Returns:
            One Verdict per pair, in order.
        """
        if pixels.shape[0] != len(texts):
            raise ValueError(f"{pixels.shape[0]} images but {len(texts)} texts")
        cfg = self.classifier.config
        pixels = pixels.to(self.device)
        batch = self.tokenizer(texts).to(self.device)
        text_states = (
            self.classifier.text_states(batch.input_ids, batch.attention_mask)
            if cfg.uses_text
            else None
        )
        image_states = self.classifier.image_states(pixels) if cfg.uses_image else None
        probs = biased_probability(
            self.classifier.classify(text_states, image_states), self.temperature
        ).tolist()
        image = self.encoder.encode_image(pixels).pooled
        text = self.encoder.encode_text(batch.input_ids, batch.attention_mask).pooled
        incons = self.calibration.probability((image * text).sum(dim=-1)).tolist()
        words: list[list[Cue]] = [[] for _ in texts]
        regions: list[Cue | None] = [None for _ in texts]
        if explain and cfg.uses_text:
            attributions = word_attributions(
                self.classifier,
                batch.input_ids,
                batch.attention_mask,
                batch.offsets,
                texts,
                image_states,
                self.temperature,
            )
            words = [linguistic_cues(a, self.top_words, self.min_delta) for a in attributions]
        if explain and cfg.uses_image:
            found = region_attributions(
                self.classifier, pixels, text_states, self.temperature, self.grid
            )
            regions = [visual_cue(r, self.min_delta) for r in found]
        verdicts = []
        for i, text_i in enumerate(texts):
            biased = probs[i] >= self.threshold
            cues: list[Cue] = list(words[i])
            region = regions[i]
            if region is not None:
                cues.append(region)
            if explain:
                inc = inconsistency_cue(incons[i], self.calibration.threshold)
                if inc is not None:
                    cues.append(inc)
            verdicts.append(
                Verdict(
                    biased,
                    float(probs[i]),
                    tuple(cues),
                    rationale(text_i, biased, probs[i], cues),
                    float(incons[i]),
                )
            )
        return verdicts

    @torch.no_grad()
    def probe(
        self, pixels: Tensor, text: str, counterfactuals: Sequence[str], explain: bool = True
    ) -> Probe:
        """The "blind faith in text" probe for one image.

        Args:
            pixels: (1, 3, S, S) or (3, S, S) in [0, 1].
            text: the original text.
            counterfactuals: altered texts for the same image (at least one).
        Returns:
            The verdicts and `text_reliance` (plus its two effects and the label flip rate).
        """
        if not counterfactuals:
            raise ValueError("no counterfactual texts given")
        if pixels.ndim == 3:
            pixels = pixels.unsqueeze(0)
        texts = [text, *counterfactuals]
        images = pixels.expand(len(texts), -1, -1, -1)
        verdicts = self.detect(images, texts, explain=explain)
        blank = torch.full_like(pixels, 0.5)  # mid-grey: no visual content at all
        p_blank = float(self.probabilities(blank, [text])[0])
        p0 = verdicts[0].probability
        p_cf = [v.probability for v in verdicts[1:]]
        text_effect = sum(abs(p - p0) for p in p_cf) / len(p_cf)
        flips = sum(v.biased != verdicts[0].biased for v in verdicts[1:]) / len(p_cf)
        return Probe(
            verdicts[0],
            tuple(verdicts[1:]),
            text_reliance(p0, p_cf, p_blank),
            text_effect,
            abs(p_blank - p0),
            flips,
        )
