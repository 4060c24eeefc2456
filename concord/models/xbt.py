"""XBT (cross-modal backward-compatible training) parts: the projection psi that maps a new
encoder's embeddings into an old encoder's space, and the text-only stage's noise injection."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CompatibleProjection(nn.Module):
    """psi: new-space embeddings (..., new_dim) -> L2-normalised old-space embeddings (..., old_dim).

    Linear when `hidden_dim` is 0, else a residual-free 2-layer MLP (Linear-GELU-Linear).
    A linear psi between equal dimensions starts at the identity.
    """

    def __init__(self, new_dim: int, old_dim: int, hidden_dim: int = 0) -> None:
        super().__init__()
        self.new_dim, self.old_dim = new_dim, old_dim
        if hidden_dim:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(new_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, old_dim)
            )
        else:
            self.net = nn.Linear(new_dim, old_dim)
            if new_dim == old_dim:
                nn.init.eye_(self.net.weight)
            nn.init.zeros_(self.net.bias)

    def forward(self, new: Tensor) -> Tensor:
        """Map new embeddings into the old space.

        Args:
            new: (..., new_dim) embeddings from the new encoder.
        Returns:
            (..., old_dim) L2-normalised embeddings comparable with the old encoder's.
        """
        if new.shape[-1] != self.new_dim:
            raise ValueError(f"expected last dimension {self.new_dim}, got {tuple(new.shape)}")
        return F.normalize(self.net(new), dim=-1)


def add_modality_noise(
    embeddings: Tensor, std: float, generator: torch.Generator | None = None
) -> Tensor:
    """XBT stage 1: Gaussian noise on (text) embeddings so psi also fits image embeddings.

    Args:
        embeddings: (B, D) L2-normalised embeddings.
        std: noise standard deviation per dimension.
        generator: optional RNG for reproducible noise.
    Returns:
        (B, D) re-normalised noisy embeddings.
    """
    noise = torch.randn(
        embeddings.shape, generator=generator, device=embeddings.device, dtype=embeddings.dtype
    )
    return F.normalize(embeddings + std * noise, dim=-1)
