"""The encoder's held-out evaluation suite: one trained model -> R@1/5/10 both directions on test,
test_compositional and binding pairs (global and FILIP scorers), binding pair accuracy, and
digits zero-shot accuracy, as report rows beside their baselines."""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np

from concord.models.dual_encoder import DualEncoder
from concord.models.preprocess import TextTokenizer
from pipelines.data.sets.real import DIGIT_WORDS
from pipelines.encoder.data import BindingPairs, ImageTextSet, LabelledImages
from pipelines.encoder.embed import TextStateCache, embed_images, embed_texts
from pipelines.encoder.evaluate import (
    Retrieval,
    Scores,
    binding_pair_accuracy,
    filip_scores,
    global_scores,
    retrieval,
    zero_shot_accuracy,
)
from pipelines.encoder.wording import FRAMES
from pipelines.evaluate.report import MetricRow

KS = (1, 5, 10)
CHANCE = "chance"
MAJORITY = "always the most frequent class"
DIGIT_PROMPT = "a handwritten digit {word}"
DIGIT_TEMPLATES = (
    "a handwritten digit {word}",
    "the number {label} written by hand",
    "a blurry handwritten {word} on white paper",
)


@dataclass(frozen=True)
class EvalSets:
    """The held-out data every model is measured on."""

    test: ImageTextSet
    test_compositional: ImageTextSet
    binding: BindingPairs
    digits: LabelledImages | None = None
    unseen_wording: ImageTextSet | None = None  # test images, captions in frames never trained on

    def retrieval_splits(self) -> dict[str, ImageTextSet]:
        splits = {
            "test": self.test,
            "test_compositional": self.test_compositional,
            "binding": self.binding.as_retrieval(),
        }
        if self.unseen_wording is not None:
            splits["test_unseen_wording"] = self.unseen_wording
        return splits


def _chance_r(k: int, candidates: int, relevant: int) -> float:
    """Probability that a random ranking puts one of `relevant` items in the top k."""
    k = min(k, candidates)
    return 1.0 - comb(candidates - relevant, k) / comb(candidates, k)


def chance_rows(sets: EvalSets) -> list[MetricRow]:
    """What a random scorer gets, the floor every retrieval row is read against."""
    rows = []
    for split, data in sets.retrieval_splits().items():
        n_img, caps = len(data), len(data.captions[0])
        n_txt = sum(len(c) for c in data.captions)
        for k in KS:
            rows.append(MetricRow(f"R@{k}", f"{split} t2i", CHANCE, _chance_r(k, n_img, 1)))
            rows.append(MetricRow(f"R@{k}", f"{split} i2t", CHANCE, _chance_r(k, n_txt, caps)))
    rows += [MetricRow("pair accuracy", f"binding {d}", CHANCE, 0.5) for d in ("t2i", "i2t")]
    if sets.digits is not None:
        rows.append(MetricRow("zero-shot accuracy", "digits", CHANCE, 0.1))
        counts = np.bincount(sets.digits.labels, minlength=10)
        rows.append(
            MetricRow("zero-shot accuracy", "digits", MAJORITY, float(counts.max() / counts.sum()))
        )
    return rows


def retrieval_rows(r: Retrieval, split: str, method: str, baseline: str | None) -> list[MetricRow]:
    rows = []
    for direction, res in (("t2i", r.text_to_image), ("i2t", r.image_to_text)):
        for k in KS:
            rows.append(
                MetricRow(f"R@{k}", f"{split} {direction}", method, getattr(res, f"r{k}"), baseline)
            )
    return rows


def evaluate_model(
    model: DualEncoder,
    tokenizer: TextTokenizer,
    sets: EvalSets,
    name: str,
    baseline: str | None = CHANCE,
    filip: bool = False,
    filip_baseline: str | None = None,
    cache: TextStateCache | None = None,
    digits: bool = False,
) -> list[MetricRow]:
    """Rows for one model.

    Args:
        name: method name of its global (pooled cosine) rows.
        baseline: the method its global rows are compared with.
        filip: also score with FILIP late interaction, as method `filip_name(name)`.
        filip_baseline: what the FILIP rows are compared with (default: this model's global rows).
        cache: frozen text-tower outputs (frozen models only).
        digits: add zero-shot digits accuracy (single prompt vs template ensemble).
    """
    model.eval()
    use_cache = cache if model.config.text.unfrozen_layers == 0 else None
    fname = filip_name(name)
    rows: list[MetricRow] = []
    for split, data in sets.retrieval_splits().items():
        texts, owner = data.flat_captions()
        image = embed_images(model, data.pixels)
        text = embed_texts(model, tokenizer, texts, cache=use_cache)
        scorers: list[tuple[str, str | None, Scores]] = [
            (name, baseline, global_scores(text, image))
        ]
        if filip:
            scorers.append((fname, filip_baseline or name, filip_scores(text, image)))
        for method, base, scores in scorers:
            rows += retrieval_rows(retrieval(scores, owner), split, method, base)
            if split == "test_unseen_wording":
                rows += frame_rows(scores, owner, data, method)
            if split == "binding":
                t2i, i2t = binding_pair_accuracy(scores)
                pb = CHANCE if base == baseline and method == name else base
                rows += [
                    MetricRow("pair accuracy", "binding t2i", method, t2i, pb),
                    MetricRow("pair accuracy", "binding i2t", method, i2t, pb),
                ]
    if digits and sets.digits is not None:
        rows += digits_rows(model, tokenizer, sets.digits, name, use_cache)
    return rows


def frame_rows(
    scores: Scores, owner: np.ndarray, data: ImageTextSet, method: str
) -> list[MetricRow]:
    """R@1 t2i of each unseen-wording frame alone (an image's k-th caption is frame k), so a
    frame the model cannot read shows instead of being averaged in."""
    if any(len(c) != len(FRAMES) for c in data.captions):
        return []  # not laid out one caption per frame
    t = np.asarray(scores.text_to_image)
    hit = t.argmax(axis=1) == owner
    return [
        MetricRow(
            "R@1", f"test_unseen_wording[{frame}] t2i", method, float(hit[k :: len(FRAMES)].mean())
        )
        for k, frame in enumerate(FRAMES)
    ]


def digits_rows(
    model: DualEncoder,
    tokenizer: TextTokenizer,
    digits: LabelledImages,
    name: str,
    cache: TextStateCache | None,
) -> list[MetricRow]:
    """Zero-shot digits: the prompt "a handwritten digit N" vs chance, the 3-template ensemble vs it."""
    image = embed_images(model, digits.pixels).pooled
    single = [
        embed_texts(
            model, tokenizer, [DIGIT_PROMPT.format(word=DIGIT_WORDS[c], label=c)], cache=cache
        ).pooled
        for c in range(10)
    ]
    multi = [
        embed_texts(
            model,
            tokenizer,
            [t.format(word=DIGIT_WORDS[c], label=c) for t in DIGIT_TEMPLATES],
            cache=cache,
        ).pooled
        for c in range(10)
    ]
    one = f"{name}: prompt"
    return [
        MetricRow(
            "zero-shot accuracy",
            "digits",
            one,
            zero_shot_accuracy(image, single, digits.labels),
            CHANCE,
        ),
        MetricRow(
            "zero-shot accuracy",
            "digits",
            f"{name}: 3-template ensemble",
            zero_shot_accuracy(image, multi, digits.labels),
            one,
        ),
    ]


def filip_name(name: str) -> str:
    """The method name of a model's FILIP-scored rows."""
    return f"{name.removesuffix(' (global)')} (FILIP scoring)"


def r1(rows: list[MetricRow], split: str, method: str) -> float:
    """The R@1 value of a row (NaN when absent)."""
    for r in rows:
        if r.metric == "R@1" and r.split == split and r.method == method:
            return r.value
    return float(np.nan)
