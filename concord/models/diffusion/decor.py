"""DECOR (arXiv 2412.09169): project the prompt's text embedding away from the subspace spanned
by unwanted tokens' embeddings, X' = X - alpha X V V^T, training-free, at inference."""

from __future__ import annotations

import torch
from torch import Tensor


def unwanted_directions(unwanted: Tensor, directions: int) -> Tensor:
    """The top right singular vectors of the unwanted tokens' embedding matrix.

    Args:
        unwanted: (n, D) embeddings of the unwanted tokens (rows).
        directions: k, how many singular vectors to keep (capped at the rank available).
    Returns:
        V: (D, k') orthonormal columns, k' = min(k, n, D).
    """
    if unwanted.dim() != 2 or unwanted.shape[0] == 0:
        raise ValueError(f"unwanted must be a non-empty (n, D) matrix, got {tuple(unwanted.shape)}")
    if directions < 1:
        raise ValueError(f"directions must be >= 1, got {directions}")
    _, _, vh = torch.linalg.svd(unwanted.double(), full_matrices=False)
    return vh[: min(directions, vh.shape[0])].T


def project_away(x: Tensor, unwanted: Tensor, alpha: float, directions: int = 1) -> Tensor:
    """X' = X - alpha X V V^T with V = `unwanted_directions(unwanted, directions)`.

    Args:
        x: (..., D) token states of the prompt (every row is projected).
        unwanted: (n, D) unwanted tokens' embeddings.
        alpha: projection degree in [0, 1]; 0 is the identity, 1 removes the subspace.
        directions: singular vectors kept.
    Returns:
        The projected states, same shape and dtype as x.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if alpha == 0.0:
        return x
    v = unwanted_directions(unwanted.to(x.device), directions)
    xd = x.double()
    return (xd - alpha * (xd @ v) @ v.T).to(x.dtype)
