"""Gaussian noise schedule of the image diffusion: alpha-bar over T discrete steps, forward
noising q(x_t | x_0) and the conversions between eps, x_0 and x_t that samplers use."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def alpha_bars(kind: str, steps: int) -> Tensor:
    """Cumulative signal fraction alpha-bar_t for t = 1..T (index 0 is t = 1), float64.

    Args:
        kind: "cosine" (Nichol & Dhariwal, s = 0.008) or "linear" (DDPM betas 1e-4 .. 0.02).
        steps: T.
    """
    if kind == "cosine":
        s = 0.008
        t = torch.arange(steps + 1, dtype=torch.float64) / steps
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    elif kind == "linear":
        betas = torch.linspace(1e-4 * 1000 / steps, 0.02 * 1000 / steps, steps, dtype=torch.float64)
    else:
        raise ValueError(f"unknown schedule {kind!r}; known: cosine, linear")
    return torch.cumprod(1 - betas, dim=0)


class NoiseSchedule:
    """alpha-bar_t for t in 0..T-1 (t = 0 is the least noisy step) and the Gaussian algebra."""

    def __init__(self, kind: str = "cosine", steps: int = 1000) -> None:
        self.kind, self.steps = kind, steps
        self.alpha_bar = alpha_bars(kind, steps)  # (T,) float64

    def _ab(self, t: Tensor, like: Tensor) -> Tensor:
        ab = self.alpha_bar.to(like.device)[t.long()].to(like.dtype)
        return ab.view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps.

        Args:
            x0: (B, ...) clean data; t: (B,) int step indices; noise: like x0.
        """
        ab = self._ab(t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def predict_x0(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_0 implied by an eps prediction at step t."""
        ab = self._ab(t, xt)
        return (xt - (1 - ab).sqrt() * eps) / ab.sqrt()

    def predict_eps(self, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """eps implied by an x_0 estimate at step t (after clipping x_0)."""
        ab = self._ab(t, xt)
        return (xt - ab.sqrt() * x0) / (1 - ab).sqrt()

    def v_target(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """v = sqrt(ab_t) eps - sqrt(1 - ab_t) x_0 (the v-prediction target)."""
        ab = self._ab(t, x0)
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0

    def eps_from_v(self, xt: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """eps = sqrt(1 - ab_t) x_t + sqrt(ab_t) v."""
        ab = self._ab(t, xt)
        return (1 - ab).sqrt() * xt + ab.sqrt() * v

    def alpha_bar_at(self, t: int) -> float:
        """alpha-bar at step t; t = -1 means the clean data (1.0)."""
        return 1.0 if t < 0 else float(self.alpha_bar[t])
