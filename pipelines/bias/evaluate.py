"""Evaluation on the gold-checked test split: accuracy and macro-F1 against gold, accuracy per
cue kind, span F1 of linguistic cues against the gold loaded words, ECE, the text-reliance
probe."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from concord.models.alignment.spans import word_spans
from concord.models.bias import (
    BiasClassifier,
    BiasDetector,
    biased_probability,
    expected_calibration_error,
    word_attributions,
)
from concord.models.preprocess import TextTokenizer
from pipelines.bias.data import BiasSplit
from pipelines.bias.train import Inputs
from pipelines.evaluate.classification import macro_f1


@dataclass(frozen=True)
class Scores:
    accuracy: float
    macro_f1: float
    by_cue: dict[str, float]  # accuracy on items whose bias is cued by: none | text | image | both
    ece: float  # of sigmoid(logit / T) against gold


def score(logits: Tensor, split: BiasSplit, temperature: float = 1.0, threshold: float = 0.5) -> Scores:
    """Accuracy / macro-F1 of `P(biased) >= threshold` against the split's gold labels."""
    probs = biased_probability(logits, temperature)
    pred = (probs >= threshold).long().numpy()
    gold = split.gold.numpy()
    cues = split.cues
    by_cue = {c: float((pred[cues == c] == gold[cues == c]).mean()) for c in np.unique(cues)}
    return Scores(
        float((pred == gold).mean()),
        macro_f1(gold, pred),
        by_cue,
        expected_calibration_error(probs, split.gold),
    )


def gold_words(text: str, spans: Sequence[Sequence[int]]) -> set[tuple[int, int]]:
    """The words of `text` inside the gold loaded spans."""
    return {w for w in word_spans(text) if any(s <= w[0] and w[1] <= e for s, e in spans)}


@dataclass(frozen=True)
class SpanScores:
    precision: float
    recall: float
    f1: float
    random_f1: float  # the same number of words per text, chosen at random
    items: int


def span_f1(
    classifier: BiasClassifier,
    tokenizer: TextTokenizer,
    split: BiasSplit,
    inputs: Inputs,
    temperature: float,
    top_k: int = 3,
    min_delta: float = 0.02,
    seed: int = 0,
) -> SpanScores:
    """Word-level micro P/R/F1 of the occlusion cues (the up to `top_k` words whose removal
    lowers P(biased) by >= `min_delta`) against the gold loaded words, on text-cued items."""
    index = [i for i, r in enumerate(split.records) if r["cue_spans"]]
    rng = np.random.default_rng(seed)
    tp = fp = fn = rtp = rfp = rfn = 0
    for start in range(0, len(index), 64):
        chunk = index[start : start + 64]
        texts = [split.texts[i] for i in chunk]
        batch = tokenizer(texts)
        image = inputs.image_states[chunk] if classifier.config.uses_image else None
        found = word_attributions(
            classifier, batch.input_ids, batch.attention_mask, batch.offsets, texts, image,
            temperature,
        )
        for i, text, words in zip(chunk, texts, found, strict=True):
            gold = gold_words(text, split.records[i]["cue_spans"])
            ranked = sorted(words, key=lambda w: w.delta, reverse=True)[:top_k]
            predicted = {w.span for w in ranked if w.delta >= min_delta}
            tp += len(predicted & gold)
            fp += len(predicted - gold)
            fn += len(gold - predicted)
            candidates = [w.span for w in words]
            pick = rng.choice(len(candidates), size=min(len(predicted), len(candidates)), replace=False)
            chosen = {candidates[j] for j in pick}
            rtp += len(chosen & gold)
            rfp += len(chosen - gold)
            rfn += len(gold - chosen)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    random_f1 = 2 * rtp / (2 * rtp + rfp + rfn) if rtp + rfp + rfn else 0.0
    return SpanScores(precision, recall, f1, random_f1, len(index))


@dataclass(frozen=True)
class ProbeScores:
    items: int
    text_reliance: float  # mean over image-cued items
    image_effect: float  # mean |P change| when the image is blanked
    detected: float  # share of image-cued (neutral text, contradicting image) pairs called biased
    faithful_neutral: float  # share called neutral once the text matches the image
    loaded_biased: float  # share called biased with a loaded rewording of the claim


def probe_image_cued(detector: BiasDetector, split: BiasSplit, limit: int = 150) -> ProbeScores:
    """The text-reliance probe on the split's image-cued items: original (neutral text that the
    image contradicts) vs counterfactual texts (the faithful description of the image, and a
    loaded rewording of the claim)."""
    index = [i for i, r in enumerate(split.records) if r["cue"] == "image"][:limit]
    reliance, image_effect, detected, faithful, loaded = [], [], [], [], []
    for i in index:
        cf = {c["kind"]: c["text"] for c in split.records[i]["counterfactuals"]}
        with torch.no_grad():
            probe = detector.probe(
                split.pixels[i : i + 1], split.texts[i], [cf["faithful"], cf["loaded"]],
                explain=False,
            )
        reliance.append(probe.text_reliance)
        image_effect.append(probe.image_effect)
        detected.append(probe.original.biased)
        faithful.append(not probe.counterfactuals[0].biased)
        loaded.append(probe.counterfactuals[1].biased)
    n = max(1, len(index))
    return ProbeScores(
        len(index),
        float(sum(reliance) / n),
        float(sum(image_effect) / n),
        float(sum(detected) / n),
        float(sum(faithful) / n),
        float(sum(loaded) / n),
    )
