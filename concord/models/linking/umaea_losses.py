"""Losses and the CSLS retrieval score UMAEA uses (pure torch).

Every alignment loss here is the in-batch, cross-KG InfoNCE of the paper (tau = 0.1): the
seed pairs of a step are the batch, each source's positive is its counterpart and every
other counterpart in the batch is a negative, in both directions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def info_nce(a: Tensor, b: Tensor, tau: float, weights: Tensor | None = None,
             normalize: bool = True) -> Tensor:
    """Bidirectional in-batch InfoNCE between row-aligned embeddings `a` and `b` (S, D).

    `weights` (S,) scales each pair's term (ECIA's per-entity modality confidence); they
    are normalised to mean 1 so a confidence lowers a pair's share, not the loss scale.
    """
    if normalize:  # False: `a @ b.T` already is a bounded score (the fused query/key views)
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.t() / tau
    target = torch.arange(a.shape[0], device=a.device)
    per = 0.5 * (F.cross_entropy(logits, target, reduction="none")
                 + F.cross_entropy(logits.t(), target, reduction="none"))
    if weights is None:
        return per.mean()
    w = weights / weights.mean().clamp_min(1e-8)
    return (per * w).mean()


class UncertaintyWeights(nn.Module):
    """Learned loss weights (Kendall et al.): sum_i exp(-s_i) * L_i + s_i.

    A loss the model cannot drive down (e.g. the visual term when most images are noise)
    gets a larger s_i and so a smaller share, without a hand-tuned coefficient.
    """

    def __init__(self, n: int) -> None:
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(n))

    def forward(self, losses: list[Tensor]) -> Tensor:
        stacked = torch.stack(losses)
        return (torch.exp(-self.log_vars) * stacked + self.log_vars).sum()


def kl_softmax(pred: Tensor, target: Tensor) -> Tensor:
    """KL(softmax(target) || softmax(pred)) averaged over rows: the VAE's matching terms."""
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    return F.kl_div(F.log_softmax(pred, dim=-1), F.softmax(target, dim=-1), reduction="batchmean")


def _row_topk_mean(a: Tensor, b: Tensor, k: int, chunk: int) -> Tensor:
    """For each row of `a`, the mean of its k largest similarities (dot products) to `b`."""
    k = max(1, min(k, b.shape[0]))
    out = []
    for s in range(0, a.shape[0], chunk):
        out.append((a[s:s + chunk] @ b.t()).topk(k, dim=1).values.mean(dim=1))
    return torch.cat(out) if out else a.new_zeros(0)


def csls_topk(source: Tensor, target: Tensor, k: int, top: int,
              chunk: int = 2048) -> tuple[Tensor, Tensor]:
    """Top-`top` targets by CSLS for every source row (dot-product similarity).

    CSLS(i, j) = 2 s(i, j) - r_T(i) - r_S(j), with r the mean similarity of the k nearest
    neighbours on the other side: it penalises "hub" targets that are near everything,
    which plain cosine ranking over-selects. Computed in row chunks so memory stays
    O(chunk x N2) whatever the graph sizes.
    """
    n1, n2 = source.shape[0], target.shape[0]
    top = max(0, min(top, n2))
    if n1 == 0 or n2 == 0 or top == 0:
        return source.new_zeros((n1, top), dtype=torch.long), source.new_zeros((n1, top))
    r_t = _row_topk_mean(source, target, k, chunk)
    r_s = _row_topk_mean(target, source, k, chunk)
    idx, val = [], []
    for s in range(0, n1, chunk):
        scores = 2 * source[s:s + chunk] @ target.t() - r_t[s:s + chunk, None] - r_s[None, :]
        v, i = scores.topk(top, dim=1)
        idx.append(i)
        val.append(v)
    return torch.cat(idx), torch.cat(val)


def csls_matrix(source: Tensor, target: Tensor, k: int) -> Tensor:
    """The full CSLS matrix (N1, N2): for evaluation on test pairs, where both are small."""
    if source.shape[0] == 0 or target.shape[0] == 0:
        return source.new_zeros((source.shape[0], target.shape[0]))
    r_t = _row_topk_mean(source, target, k, 4096)
    r_s = _row_topk_mean(target, source, k, 4096)
    return 2 * source @ target.t() - r_t[:, None] - r_s[None, :]
