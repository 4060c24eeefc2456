"""Contrastive losses on `Encoded` batches: symmetric InfoNCE on pooled embeddings (CLIP/ALIGN)
and FILIP's token-wise late interaction (similarity and loss)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from concord.models.dual_encoder import Encoded

CHUNK_ELEMENTS = 1 << 26  # cap on Bi_chunk * Bt * N * T floats per token-similarity block


class FilipSimilarity(NamedTuple):
    image_to_text: Tensor  # (Bi, Bt): mean over image tokens of max over text tokens
    text_to_image: Tensor  # (Bi, Bt): mean over text tokens of max over image tokens


def contrastive_loss(
    image_pooled: Tensor, text_pooled: Tensor, logit_scale: Tensor | float
) -> Tensor:
    """Symmetric InfoNCE: pair i is the positive of row i and of column i.

    Args:
        image_pooled: (B, E) L2-normalised image embeddings.
        text_pooled: (B, E) L2-normalised text embeddings, row i paired with image i.
        logit_scale: multiplier for cosine logits (1 / temperature), e.g. `DualEncoder.logit_scale`.
    Returns:
        Scalar loss: mean of image->text and text->image cross-entropies.
    """
    if image_pooled.shape != text_pooled.shape:
        raise ValueError(
            f"paired batches differ: {tuple(image_pooled.shape)} vs {tuple(text_pooled.shape)}"
        )
    logits = logit_scale * image_pooled @ text_pooled.T
    return _symmetric_ce(logits, logits.T)


def filip_similarity(image: Encoded, text: Encoded) -> FilipSimilarity:
    """FILIP token-wise similarities between every image and every text, padding ignored.

    Args:
        image: Encoded images, tokens (Bi, N, E) and mask (Bi, N).
        text: Encoded texts, tokens (Bt, T, E) and mask (Bt, T).
    Returns:
        FilipSimilarity(image_to_text, text_to_image), both (Bi, Bt). For text->image retrieval
        rank by `text_to_image`; `(a + b) / 2` is a symmetric score.
    """
    n, t = image.tokens.shape[1], text.tokens.shape[1]
    step = max(1, CHUNK_ELEMENTS // max(1, len(text) * n * t))
    i2t, t2i = [], []
    for start in range(0, len(image), step):
        a, b = _filip_block(image[start : start + step], text)
        i2t.append(a)
        t2i.append(b)
    return FilipSimilarity(torch.cat(i2t), torch.cat(t2i))


def filip_loss(image: Encoded, text: Encoded, logit_scale: Tensor | float) -> Tensor:
    """FILIP loss: InfoNCE over image->text token similarities for each image, and over
    text->image similarities for each text, averaged.

    Args:
        image: Encoded images (B rows), image i paired with text i.
        text: Encoded texts (B rows).
        logit_scale: multiplier for the similarities (1 / temperature).
    Returns:
        Scalar loss.
    """
    if len(image) != len(text):
        raise ValueError(f"paired batches differ: {len(image)} images vs {len(text)} texts")
    sim = filip_similarity(image, text)
    return _symmetric_ce(logit_scale * sim.image_to_text, logit_scale * sim.text_to_image.T)


def foil_loss(
    image: Encoded,
    captions: Encoded,
    foils: Encoded,
    foil_mask: Tensor,
    logit_scale: Tensor | float,
    filip: bool = False,
) -> Tensor:
    """Hard text negatives (NegCLIP): each image must prefer its own caption to that caption's
    foils, the same words with one binding, object, relation or count made false. Only an
    image's own foils are its negatives here; the other captions are `contrastive_loss`'s job.
    The term is local to a batch shard, so data-parallel ranks add it without gathering.

    Args:
        image: B images; captions: their B captions, row i paired with image i.
        foils: B * K texts, row i * K + k the k-th foil of caption i.
        foil_mask: (B, K) bool, False where caption i has fewer than K foils (padding rows).
        logit_scale: multiplier for the similarities (1 / temperature).
        filip: score with FILIP's text->image late interaction instead of pooled cosines.
    Returns:
        Scalar: mean over images with at least one foil of the cross-entropy of choosing the
        caption among [caption, its foils]; 0 when no image has a foil.
    """
    b, k = foil_mask.shape
    if len(image) != b or len(captions) != b or len(foils) != b * k:
        raise ValueError(
            f"foil batch mismatch: {len(image)} images, {len(captions)} captions, "
            f"{len(foils)} foils for a {b}x{k} mask"
        )
    rows = foil_mask.any(dim=1)
    if k == 0 or not bool(rows.any()):
        return image.pooled.sum() * 0.0  # keeps the graph (DDP needs every rank to backward)
    if filip:
        positive = _paired_text_to_image(
            image.tokens, captions.tokens[:, None], captions.mask[:, None]
        )
        t, d = foils.tokens.shape[1:]
        negative = _paired_text_to_image(
            image.tokens, foils.tokens.view(b, k, t, d), foils.mask.view(b, k, t)
        )
        positive = positive[:, 0]
    else:
        positive = (image.pooled * captions.pooled).sum(-1)
        negative = torch.einsum("be,bke->bk", image.pooled, foils.pooled.view(b, k, -1))
    logits = logit_scale * torch.cat([positive[:, None], negative], dim=1)
    padding = torch.cat([torch.zeros_like(foil_mask[:, :1]), ~foil_mask], dim=1)
    logits = logits.masked_fill(padding, torch.finfo(logits.dtype).min)
    target = torch.zeros(b, dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits[rows], target[rows])


def separation_loss(texts: Tensor, foils: Tensor, foil_mask: Tensor, margin: float) -> Tensor:
    """Keeps a text apart from its foils in the joint space: the hinge max(0, cos - margin) per
    foil. The foil loss alone cannot part two texts that differ in one word when the images
    they are true of embed alike (a scene and its mirror image in one batch): each image pulls
    its own text towards the same point, the pulls cancel, and both the texts and the image
    side's gradient to tell them apart shrink together ("left of" and "right of" ended at
    cosine 0.9995). A margin holds the texts apart, so the image side has a direction to learn.

    Args:
        texts: (B, E) unit-norm pooled embeddings.
        foils: (B * K, E) unit-norm, row i * K + k the k-th foil of text i.
        foil_mask: (B, K) bool, False on padding rows.
        margin: the cosine above which a text and its foil are pushed apart.
    Returns:
        Scalar: mean hinge over real foils; 0 (with a graph) when there are none.
    """
    b, k = foil_mask.shape
    if len(texts) != b or len(foils) != b * k:
        raise ValueError(f"{len(texts)} texts and {len(foils)} foils for a {b}x{k} mask")
    cos = torch.einsum("be,bke->bk", texts, foils.view(b, k, -1))
    hinge = F.relu(cos - margin)[foil_mask]
    return hinge.mean() if hinge.numel() else texts.sum() * 0.0


def grounding_loss(
    image: Encoded,
    cells: Tensor,
    labels: Tensor,
    phrases: Tensor,
    logit_scale: Tensor | float,
) -> Tensor:
    """Phrase grounding (the region-phrase alignment of GLIP / RegionCLIP, on scenes whose
    objects we know): the image token under each object must pick that object's phrase ("a red
    circle") among every phrase of the vocabulary. A caption-level loss is satisfied as soon as
    colours and counts tell a batch's images apart; this term asks every token for the shape and
    colour *of the object it sits on*, so shape words must separate in the text tower and a
    token must hold colour and shape together (binding). Local to a batch shard: no gathering.

    Args:
        image: B encoded images; tokens (B, N, E) L2-normalised.
        cells: (B, K) int64 token index of each object's centre, -1 for padding.
        labels: (B, K) int64 index into `phrases` of each object's phrase (ignored at padding).
        phrases: (V, E) L2-normalised phrase embeddings (pooled text).
        logit_scale: multiplier for the similarities (1 / temperature).
    Returns:
        Scalar: mean over real objects of the cross-entropy of choosing the object's phrase;
        0 (graph kept) when the batch has no object.
    """
    if cells.shape != labels.shape or cells.shape[0] != len(image):
        raise ValueError(
            f"grounding batch mismatch: {len(image)} images, cells {tuple(cells.shape)}, "
            f"labels {tuple(labels.shape)}"
        )
    real = cells >= 0
    if not bool(real.any()):
        return image.tokens.sum() * 0.0  # keeps the graph (DDP needs every rank to backward)
    rows = torch.arange(len(image), device=cells.device)[:, None].expand_as(cells)
    tokens = image.tokens[rows[real], cells[real]]  # (M, E)
    return F.cross_entropy(logit_scale * tokens @ phrases.T, labels[real])


def _paired_text_to_image(image_tokens: Tensor, texts: Tensor, text_mask: Tensor) -> Tensor:
    """FILIP text->image similarity of image i with each of ITS texts only: (B, N, E) patches and
    (B, K, T, E) texts -> (B, K), the mean over real text tokens of the best patch."""
    sim = torch.einsum("bnd,bktd->bktn", image_tokens, texts)  # (B, K, T, N)
    return _masked_mean(sim.amax(dim=3), text_mask)


def _filip_block(image: Encoded, text: Encoded) -> tuple[Tensor, Tensor]:
    sim = torch.einsum("ind,jtd->ijnt", image.tokens, text.tokens)  # (Bi, Bt, N, T)
    lowest = torch.finfo(sim.dtype).min
    image_mask = image.mask[:, None, :]  # (Bi, 1, N)
    text_mask = text.mask[None, :, :]  # (1, Bt, T)
    best_text = sim.masked_fill(~text_mask[:, :, None, :], lowest).amax(dim=3)  # (Bi, Bt, N)
    best_image = sim.masked_fill(~image_mask[:, :, :, None], lowest).amax(dim=2)  # (Bi, Bt, T)
    return _masked_mean(best_text, image_mask), _masked_mean(best_image, text_mask)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    weights = mask.to(values.dtype)
    total = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return total.sum(dim=-1) / weights.sum(dim=-1).clamp(min=1.0)


def _symmetric_ce(per_image: Tensor, per_text: Tensor) -> Tensor:
    labels = torch.arange(per_image.shape[0], device=per_image.device)
    return (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels)) / 2
