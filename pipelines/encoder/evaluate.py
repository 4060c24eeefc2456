"""Encoder evaluation: similarity matrices (global cosine, FILIP late interaction) -> R@1/5/10
in both directions and attribute-binding pair accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from concord.models.dual_encoder import Encoded
from concord.models.losses import filip_similarity
from pipelines.evaluate.retrieval import RetrievalResult, retrieval_metrics


@dataclass(frozen=True)
class Scores:
    """Text x image scores of one scorer; FILIP ranks each direction by its own similarity."""

    text_to_image: np.ndarray  # (T, I): rank images for a text by this
    image_to_text: np.ndarray  # (T, I): rank texts for an image by this


@dataclass(frozen=True)
class Retrieval:
    """R@K and ranks of one scorer on one split, both directions."""

    text_to_image: RetrievalResult
    image_to_text: RetrievalResult


def global_scores(text: Encoded, image: Encoded) -> Scores:
    """Cosine similarity of the pooled embeddings, the same matrix both ways."""
    sim = (text.pooled.float() @ image.pooled.float().T).numpy()
    return Scores(sim, sim)


@torch.no_grad()
def filip_scores(text: Encoded, image: Encoded) -> Scores:
    """FILIP token-wise late interaction (`concord.models.losses.filip_similarity`).

    text->image uses the mean over a text's tokens of the max over image patches;
    image->text the mean over an image's patches of the max over the text's tokens (the paper's
    asymmetric pair). Padding never counts.
    """
    sim = filip_similarity(image, text)
    return Scores(sim.text_to_image.T.float().numpy(), sim.image_to_text.T.float().numpy())


def retrieval(scores: Scores, text_to_image: np.ndarray) -> Retrieval:
    """R@1/5/10 both ways.

    Args:
        scores: text x image scores.
        text_to_image: (T,) index of each text's image (an image's relevant texts are all of its captions).
    """
    a = retrieval_metrics(scores.text_to_image, text_to_image)
    if scores.image_to_text is scores.text_to_image:
        return Retrieval(a["text_to_image"], a["image_to_text"])
    b = retrieval_metrics(scores.image_to_text, text_to_image)
    return Retrieval(a["text_to_image"], b["image_to_text"])


def binding_pair_accuracy(scores: Scores) -> tuple[float, float]:
    """Two-way choice on attribute-binding pairs, gallery laid out a0 b0 a1 b1 ..., text k of image k.

    Returns:
        (text->image: a caption scores its own image above its pair's other image,
         image->text: an image scores its own caption above the other caption).
    """
    t, i = np.asarray(scores.text_to_image), np.asarray(scores.image_to_text)
    if t.shape[0] != t.shape[1] or t.shape[0] % 2:
        raise ValueError(f"expected a square (2P, 2P) matrix, got {t.shape}")
    a = 2 * np.arange(t.shape[0] // 2)
    b = a + 1
    t2i = np.concatenate([t[a, a] > t[a, b], t[b, b] > t[b, a]])
    i2t = np.concatenate([i[a, a] > i[b, a], i[b, b] > i[a, b]])
    return float(t2i.mean()), float(i2t.mean())
