"""Token-level detection metrics over words (which words of a caption are misaligned)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from pipelines.evaluate.classification import average_precision, precision_recall_f1

WORD_RE = re.compile(r"[A-Za-z0-9']+")


@dataclass(frozen=True)
class TokenResult:
    precision: float
    recall: float
    f1: float
    ap: float  # over all words pooled
    n_words: int


def word_labels(text: str, spans: list[tuple[int, int]] | list[list[int]]) -> np.ndarray:
    """1 for each word of `text` that overlaps a character span, else 0."""
    out = [int(any(s < m.end() and m.start() < e for s, e in spans)) for m in WORD_RE.finditer(text)]
    return np.asarray(out, dtype=np.int64)


def token_metrics(labels: list[np.ndarray], scores: list[np.ndarray], threshold: float = 0.5) -> TokenResult:
    """Precision / recall / F1 at `threshold` and AP, pooled over every word of every caption.

    Args:
        labels: per caption, 0/1 per word.
        scores: per caption, a misalignment score per word (same lengths as labels).
    """
    if len(labels) != len(scores) or any(len(a) != len(b) for a, b in zip(labels, scores, strict=False)):
        raise ValueError("labels and scores must have the same captions and word counts")
    y = np.concatenate([np.asarray(a) for a in labels]) if labels else np.zeros(0)
    s = np.concatenate([np.asarray(b, dtype=np.float64) for b in scores]) if scores else np.zeros(0)
    p, r, f = precision_recall_f1(y, s >= threshold)
    return TokenResult(p, r, f, average_precision(y, s), len(y))
