"""Image-text alignment scores and word-level misalignment on a dual encoder (pure torch, no I/O).

- `spans`: the words of a caption and the tokens of each word (character spans of the ORIGINAL
  text; special tokens and punctuation carry no word).
- `attribution`: `AlignmentScorer`, CLIP4DM dense misalignment (Nam et al., AAAI 2025) and the
  FILIP fine-grained score on any encoder with `encode_text_with_attentions`
  (concord.models.dual_encoder.DualEncoder, concord.models.clip.ClipAdapter).
- `scores`: CLIPScore, RefCLIPScore, F-CLIPScore, and the threshold-free `RawPair` that
  `explanation` turns into flagged words and pair scores.
- `calibration`: `aligned_probability`, calibrated P(aligned) (logistic over the pair scores,
  fitted offline by pipelines.scorer).
"""

from __future__ import annotations

from concord.models.alignment.attribution import AlignmentScorer
from concord.models.alignment.calibration import CALIBRATION_FEATURES, aligned_probability
from concord.models.alignment.scores import (
    CLIP_WEIGHT,
    DEFAULT_LAYERS,
    DEFAULT_PENALTY,
    DEFAULT_THRESHOLD,
    Explanation,
    PairScores,
    RawPair,
    WordScore,
    f_clip_score,
)
from concord.models.alignment.spans import WORD_RE, group_words, word_spans

__all__ = [
    "CALIBRATION_FEATURES",
    "CLIP_WEIGHT",
    "DEFAULT_LAYERS",
    "DEFAULT_PENALTY",
    "DEFAULT_THRESHOLD",
    "WORD_RE",
    "AlignmentScorer",
    "Explanation",
    "PairScores",
    "RawPair",
    "WordScore",
    "aligned_probability",
    "f_clip_score",
    "group_words",
    "word_spans",
]
