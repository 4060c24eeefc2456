"""Pair and word scores from threshold-free results (pure numpy, no I/O).

- CLIPScore (Hessel et al. 2021): `w * max(cos, 0)`; RefCLIPScore: harmonic mean of CLIPScore and
  the best reference cosine `max(max_r cos(text, r), 0)` (the paper's form, no `w` on that term).
- F-CLIPScore (see `f_clip_score`) lowers CLIPScore by the flagged words' negative attributions,
  weighted by `penalty` (the attribution scale is encoder-specific: pipelines.scorer fits it).
- `RawPair.explanation` flags words at a threshold and computes a pair's scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CLIP_WEIGHT = 2.5  # CLIPScore's w (torchmetrics uses 100: keep `weight` a parameter)
DEFAULT_THRESHOLD = 5e-5  # CLIP4DM's epsilon: flag words with attribution < -threshold
DEFAULT_LAYERS = 3  # CLIP4DM's L: the last L text layers
# F-CLIPScore's weight on (1 - s) * sum of flagged attributions. 1 is the reference code's implicit
# weight (naver-ai/CLIP4DM); packages carry one fitted on held-out pairs for their encoder.
DEFAULT_PENALTY = 1.0


@dataclass(frozen=True)
class PairScores:
    clip_score: float  # w * max(cos, 0)
    ref_clip_score: (
        float | None
    )  # harmonic mean of clip_score and max(max_ref cos, 0); None without refs
    fine_grained_score: float  # FILIP text->image: mean over word tokens of max patch similarity
    f_clip_score: float  # CLIP4DM F-CLIPScore: clip_score lowered by flagged negative attributions


@dataclass(frozen=True)
class WordScore:
    word: str
    span: tuple[int, int]  # character span [start, end) in the ORIGINAL text
    attribution: float  # CLIP4DM attribution (sub-word tokens averaged); negative = contradicted
    similarity: float  # best late-interaction similarity of the word (its tokens' mean) to a patch
    best_patch: int  # index into the patch grid (row-major)
    misaligned: bool  # attribution < -threshold


@dataclass(frozen=True)
class Explanation:
    words: list[WordScore]
    scores: PairScores
    heatmap: np.ndarray  # float32 (n_words, grid_h, grid_w): word-patch similarities
    cosine: float = 0.0  # the raw pair cosine s (CLIPScore before weighting and clamping)


@dataclass(frozen=True, eq=False)  # array fields
class RawPair:
    """Threshold-free results for one pair; `explanation` applies a threshold."""

    text: str
    spans: tuple[tuple[int, int], ...]  # per word, its span in `text`
    cosine: float  # pair cosine s
    fine_grained: float  # FILIP text->image score over word tokens
    attributions: np.ndarray  # (n_words,) CLIP4DM attributions (signed)
    positive: np.ndarray  # (n_words,) the same with G*A clamped to >= 0 (ablation)
    heat: np.ndarray  # (n_words, N) word-patch similarities
    ref_cosine: float | None  # best reference cosine; None without references

    @property
    def similarities(self) -> np.ndarray:
        """(n_words,) each word's best patch similarity."""
        return self.heat.max(axis=1) if len(self.heat) else np.zeros(0, np.float32)

    def explanation(
        self,
        threshold: float,
        weight: float = CLIP_WEIGHT,
        positive_only: bool = False,
        penalty: float = DEFAULT_PENALTY,
        f_threshold: float | None = None,
    ) -> Explanation:
        """Returns: the Explanation with words flagged at `threshold` and scores from `weight`
        (CLIPScore's w), `penalty` (F-CLIPScore's weight on the flagged attributions) and
        `f_threshold` (the words F-CLIPScore counts; None: `threshold`)."""
        attributions = self.positive if positive_only else self.attributions
        clip = weight * max(self.cosine, 0.0)
        ref_clip = None
        if self.ref_cosine is not None:
            r = max(self.ref_cosine, 0.0)
            ref_clip = 2 * clip * r / (clip + r) if clip + r > 0 else 0.0
        n_patches = self.heat.shape[1]
        grid = math.isqrt(n_patches)
        shape = (grid, grid) if grid * grid == n_patches else (1, n_patches)
        words = [
            WordScore(
                self.text[s:e],
                (s, e),
                float(a),
                float(row.max()),
                int(row.argmax()),
                bool(a < -threshold),
            )
            for (s, e), a, row in zip(self.spans, attributions, self.heat, strict=True)
        ]
        f_eps = threshold if f_threshold is None else f_threshold
        f = f_clip_score(clip, self.cosine, attributions, f_eps, penalty)
        return Explanation(
            words,
            PairScores(clip, ref_clip, self.fine_grained, f),
            self.heat.reshape(-1, *shape),
            self.cosine,
        )


def f_clip_score(
    clip_score: float,
    cosine: float,
    attributions: Sequence[float] | np.ndarray,
    threshold: float,
    penalty: float = DEFAULT_PENALTY,
) -> float:
    """F-CLIPScore = CLIPScore + penalty * (1 - max(s, 0)) * sum of flagged attributions.

    Flagged words have a < -threshold, so the term is <= 0: each contradicted word lowers the
    score by its own (unnormalised) attribution, less so the better the whole pair already
    matches (the 1 - s head-room of naver-ai/CLIP4DM's `sum_negative_attribution * (1 - s)`).
    A share of the caption's total attribution (our first form) was measured worse: it is as
    large for a short aligned caption with one weakly negative word as for a contradiction.
    Without flagged words it equals CLIPScore.
    """
    a = np.asarray(attributions, dtype=np.float64)
    flagged = float(a[a < -threshold].sum()) if a.size else 0.0
    return float(clip_score + penalty * (1.0 - max(cosine, 0.0)) * flagged)
