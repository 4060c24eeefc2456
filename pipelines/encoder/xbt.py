"""XBT (backward-compatible upgrade): train `CompatibleProjection` psi from a new encoder's space
into an old one's -- stage 1 on text only (noise-injected, no images), stage 2 adding a few image
pairs -- and measure new-query-vs-old-index R@1 against old->old and a full backfill (new->new)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from concord.models.xbt import CompatibleProjection, add_modality_noise
from pipelines.encoder.evaluate import Retrieval, Scores, retrieval
from pipelines.evaluate.report import MetricRow

OLD_OLD, BACKFILL = "old->old", "new->new (full backfill)"
DIRECTIONS = (("t2i", "text_to_image"), ("i2t", "image_to_text"))
# A backfill R@1 gain below this (4 of a 200-image gallery's queries) leaves no gain to share out:
# a share of it would divide by noise (measured: a -0.005 i2t "gain" gave shares of -5 to 41).
MIN_GAIN = 0.02


@dataclass(frozen=True)
class XbtConfig:
    text_steps: int = 600  # stage 1 optimizer steps (text only)
    pair_steps: int = 300  # stage 2 optimizer steps (text + image pairs)
    batch_size: int = 256  # pairs per contrastive batch
    lr: float = 2e-3  # AdamW learning rate
    noise: float = (
        0.1  # std of Gaussian noise added to new text embeddings (bridges the modality gap)
    )
    temperature: float = 0.05  # fixed softmax temperature of the contrastive terms
    seed: int = 0


@dataclass(frozen=True)
class Spaces:
    """Pooled, L2-normalised embeddings of the same items under the old and the new model."""

    old: torch.Tensor  # (N, E_old)
    new: torch.Tensor  # (N, E_new)


@dataclass(frozen=True)
class XbtResult:
    """new->old retrieval with psi beside the two reference points."""

    old_old: Retrieval  # the old model on both sides (what you have before upgrading)
    new_old: Retrieval  # new queries through psi against the old index (XBT, no backfill)
    new_new: Retrieval  # the new model on both sides (full backfill)


def _info_nce(query: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = F.normalize(query, dim=-1) @ F.normalize(target, dim=-1).T / temperature
    labels = torch.arange(len(query))
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def make_projection(
    new_dim: int, old_dim: int, seed: int = 0, hidden_dim: int = 0
) -> CompatibleProjection:
    """A fresh psi (linear, or a 2-layer MLP when hidden_dim > 0), initialised from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CompatibleProjection(new_dim, old_dim, hidden_dim)


def train_text_stage(proj: CompatibleProjection, text: Spaces, cfg: XbtConfig) -> list[float]:
    """Stage 1: psi(new_text + noise) -> old_text, contrastively. Returns: per-step losses."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(proj.parameters(), lr=cfg.lr, weight_decay=1e-4)
    losses = []
    proj.train()
    for _ in range(cfg.text_steps):
        idx = torch.randint(len(text.new), (min(cfg.batch_size, len(text.new)),), generator=gen)
        noisy = add_modality_noise(text.new[idx], cfg.noise, gen)
        loss = _info_nce(proj(noisy), text.old[idx], cfg.temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def train_pair_stage(
    proj: CompatibleProjection,
    text: Spaces | None,
    image: Spaces,
    image_text: Spaces,
    cfg: XbtConfig,
) -> list[float]:
    """Stage 2: cross-model terms on a few image-caption pairs (psi(new image) vs old caption,
    psi(new caption) vs old image), plus the stage-1 text term when `text` is given.

    Args:
        image: the pairs' images under both models; image_text: their captions, row-aligned.
    Returns:
        Per-step losses.
    """
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    opt = torch.optim.AdamW(proj.parameters(), lr=cfg.lr, weight_decay=1e-4)
    losses = []
    proj.train()
    n = len(image.new)
    for _ in range(cfg.pair_steps):
        idx = torch.randint(n, (min(cfg.batch_size, n),), generator=gen)
        loss = _info_nce(proj(image.new[idx]), image_text.old[idx], cfg.temperature) + _info_nce(
            proj(image_text.new[idx]), image.old[idx], cfg.temperature
        )
        if text is not None:
            tdx = torch.randint(len(text.new), (min(cfg.batch_size, len(text.new)),), generator=gen)
            noisy = add_modality_noise(text.new[tdx], cfg.noise, gen)
            loss = loss + _info_nce(proj(noisy), text.old[tdx], cfg.temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def apply_psi(proj: CompatibleProjection, new: torch.Tensor) -> torch.Tensor:
    """psi(new) in eval mode, without gradients (not normalised)."""
    proj.eval()
    return proj(new)


def evaluate_mapping(
    image: Spaces,
    text: Spaces,
    text_to_image: np.ndarray,
    to_old: Callable[[torch.Tensor], torch.Tensor],
) -> XbtResult:
    """Gallery and queries of a held-out split under both models, for any new -> old map (a
    trained psi, a Procrustes matrix).

    Args:
        image: (I, .) test images; text: (T, .) test captions; text_to_image: (T,) owner image.
        to_old: new-space embeddings (N, E_new) -> old-space embeddings (N, E_old).
    """

    def sim(t: torch.Tensor, i: torch.Tensor) -> np.ndarray:
        return (t.float() @ i.float().T).numpy()

    def mapped(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(to_old(x.float()), dim=-1)

    oo, nn = sim(text.old, image.old), sim(text.new, image.new)
    # New text queries against the old image index, and new image queries against old texts.
    t2i, i2t = sim(mapped(text.new), image.old), sim(text.old, mapped(image.new))
    old_old = retrieval(Scores(oo, oo), text_to_image)
    new_old = retrieval(Scores(t2i, i2t), text_to_image)
    new_new = retrieval(Scores(nn, nn), text_to_image)
    return XbtResult(old_old, new_old, new_new)


def evaluate_upgrade(
    image: Spaces, text: Spaces, text_to_image: np.ndarray, proj: CompatibleProjection
) -> XbtResult:
    """`evaluate_mapping` with a trained psi as the map."""
    return evaluate_mapping(image, text, text_to_image, partial(apply_psi, proj))


def procrustes(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Orthogonal Procrustes: the map W (new_dim, old_dim) with orthonormal rows or columns that
    minimises ||new @ W - old||_F over row-aligned items (training-free, fit on text alone).

    When the dimensions differ this is the square solution of both spaces zero-padded to the
    larger one, cut back to (new_dim, old_dim): W = U V^T from the thin SVD of new^T old.

    Args:
        new: (N, new_dim) new-model embeddings; old: (N, old_dim) the same items, old model.
    Returns:
        (new_dim, old_dim) W; new -> old is `normalize(new @ W)`.
    """
    if len(new) != len(old):
        raise ValueError(f"row-aligned items expected, got {len(new)} and {len(old)}")
    u, _, vh = torch.linalg.svd(new.double().T @ old.double(), full_matrices=False)
    return (u @ vh).to(new.dtype)


def retrieval_rows(
    r: Retrieval, method: str, baseline: str | None, prefix: str = ""
) -> list[MetricRow]:
    """R@1 and R@5 of both directions on the test split (metric names after `prefix`)."""
    out = []
    for short, attr in DIRECTIONS:
        res = getattr(r, attr)
        out += [
            MetricRow(f"{prefix}R@1", f"test {short}", method, res.r1, baseline),
            MetricRow(f"{prefix}R@5", f"test {short}", method, res.r5, baseline),
        ]
    return out


def backfill_share(res: XbtResult, attr: str) -> float:
    """The part of the backfill's R@1 gain over old->old that new->old recovers (nan where the
    backfill gains less than MIN_GAIN: then there is no gain to recover in that direction)."""
    gain = getattr(res.new_new, attr).r1 - getattr(res.old_old, attr).r1
    got = getattr(res.new_old, attr).r1 - getattr(res.old_old, attr).r1
    return got / gain if gain >= MIN_GAIN else float("nan")
