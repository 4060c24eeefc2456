"""Measures for generated pictures, read by the judge: semantic recall of the objects a prompt
names (GCDP's headline metric), layout mIoU against the judge's segmentation, and a Fréchet
distance on judge features (the FID stand-in). Prompt parsing uses the Concord Scenes vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from pipelines.data.vocab import CLASS_NAMES, COLOURS, COUNT_WORDS, PLURALS, SIZES, TEXTURES
from pipelines.generator.judges import Detection, present

_SHAPE_WORDS = {s: s for s in CLASS_NAMES[1:]} | {p: s for s, p in PLURALS.items()}
_COUNTS = {w: n for n, w in COUNT_WORDS.items()}
# Words that may sit between a colour and its shape ("a red striped circle", "a red large one").
_MODIFIERS = set(SIZES) | set(TEXTURES)


@dataclass(frozen=True)
class NamedObject:
    colour: str | None  # None: the prompt names the shape without a colour
    shape: str  # a name in CLASS_NAMES[1:]
    count: int = 1  # "two red circles" -> 2


def parse_prompt(prompt: str) -> list[NamedObject]:
    """The (colour, shape) objects a prompt names, in order; unknown words (concept tokens,
    relations, positions) are skipped.

    A shape takes the nearest colour before it within its noun phrase (only size/texture words
    may come between), and a count word right before that phrase.
    """
    words = re.findall(r"[a-z]+", prompt.lower())
    out = []
    for k, w in enumerate(words):
        shape = _SHAPE_WORDS.get(w)
        if shape is None:
            continue
        colour, count, j = None, 1, k - 1
        while j >= 0 and (words[j] in _MODIFIERS or words[j] in COLOURS):
            if words[j] in COLOURS and colour is None:
                colour = words[j]
            j -= 1
        if j >= 0 and words[j] in _COUNTS:
            count = _COUNTS[words[j]]
        out.append(NamedObject(colour, shape, count))
    return out


@dataclass(frozen=True)
class Recall:
    objects: int  # named objects checked
    found: int  # of which the judge found
    prompts: int
    prompts_all_found: int  # prompts whose every named object was found
    by_shape: dict[str, tuple[int, int]]  # shape -> (found, named)

    @property
    def recall(self) -> float:
        return self.found / self.objects if self.objects else float("nan")

    @property
    def prompt_accuracy(self) -> float:
        return self.prompts_all_found / self.prompts if self.prompts else float("nan")

    def shape_recall(self, shape: str) -> float:
        f, n = self.by_shape.get(shape, (0, 0))
        return f / n if n else float("nan")


def semantic_recall(prompts: Sequence[str], dets: Sequence[list[Detection]]) -> Recall:
    """Share of the objects each prompt names (colour + shape) that the judge found in its image.

    Args:
        prompts: one per image.
        dets: the judge's detections per image (judges.detections).
    """
    if len(prompts) != len(dets):
        raise ValueError(f"{len(prompts)} prompts but {len(dets)} detection lists")
    objects = found = all_found = 0
    by_shape: dict[str, list[int]] = {}
    for prompt, d in zip(prompts, dets, strict=True):
        hits = [present(d, o.colour, o.shape) for o in parse_prompt(prompt)]
        for o, h in zip(parse_prompt(prompt), hits, strict=True):
            tally = by_shape.setdefault(o.shape, [0, 0])
            tally[0] += h
            tally[1] += 1
        objects += len(hits)
        found += sum(hits)
        all_found += all(hits)
    return Recall(objects, found, len(prompts), all_found,
                  {k: (v[0], v[1]) for k, v in sorted(by_shape.items())})


def layout_miou(pred: np.ndarray, truth: np.ndarray, n_classes: int = len(CLASS_NAMES)) -> float:
    """Mean IoU over the classes present in either map (all images pooled)."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"layout shapes differ: {pred.shape} vs {truth.shape}")
    ious = []
    for c in range(n_classes):
        p, t = pred == c, truth == c
        union = (p | t).sum()
        if union:
            ious.append((p & t).sum() / union)
    return float(np.mean(ious)) if ious else float("nan")


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, F), as in FID:
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two (N>=2, F) feature sets of one width, got {a.shape}, {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():  # near-singular product: nudge both, as pytorch-fid does
        eps = np.eye(a.shape[1]) * 1e-6
        covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = np.real(covmean)
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))
    return max(value, 0.0)
