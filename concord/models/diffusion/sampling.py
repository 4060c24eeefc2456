"""What every sampler shares: the `Sampler` protocol, the timestep grid, per-sample noise, the
clipped x0 estimate, and the layout step (every sampler draws y_s from the categorical
posterior q(y_s | y_t, y0_hat)). The algorithms live one per file (ddpm.py, ddim.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from concord.models.diffusion.categorical import CategoricalDiffusion, sample_log_probs
from concord.models.diffusion.schedule import NoiseSchedule


class Sampler(Protocol):
    """Moves x_t to x_s (s < t, s = -1 is clean) from an eps prediction."""

    name: str

    def step(
        self,
        schedule: NoiseSchedule,
        x: Tensor,
        t: int,
        s: int,
        eps: Tensor,
        generators: Sequence[torch.Generator],
    ) -> tuple[Tensor, Tensor]:
        """One denoising step.

        Args:
            x: (B, 3, S, S) x_t; t, s: current and target step indices.
            eps: (B, 3, S, S) the guided noise prediction at t.
            generators: one per sample, for any fresh noise (sample i uses generators[i] only).
        Returns:
            (x_s, x0_hat clipped to [-1, 1]).
        """
        ...


def timesteps(train_steps: int, steps: int) -> list[tuple[int, int]]:
    """Evenly spaced (t, s) pairs from T - 1 down to -1 (the clean image), `steps` of them."""
    if not 1 <= steps <= train_steps:
        raise ValueError(f"steps must be in 1..{train_steps}, got {steps}")
    ts = np.unique(np.round(np.linspace(0, train_steps - 1, steps)).astype(int))[::-1].tolist()
    return list(zip(ts, [*ts[1:], -1], strict=True))


def noise_like(x: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
    """Standard normal noise shaped like x, row i drawn from generators[i] alone."""
    if len(generators) != x.shape[0]:
        raise ValueError(f"{len(generators)} generators for a batch of {x.shape[0]}")
    rows = [torch.randn(x.shape[1:], generator=g, dtype=x.dtype) for g in generators]
    return torch.stack(rows).to(x.device)


def predict_x0(schedule: NoiseSchedule, x: Tensor, t: int, eps: Tensor) -> Tensor:
    """The clipped clean-image estimate at step t."""
    tt = torch.full((x.shape[0],), t, dtype=torch.long)
    return schedule.predict_x0(x, tt, eps).clamp(-1.0, 1.0)


def layout_step(
    cat: CategoricalDiffusion,
    logits: Tensor,
    y: Tensor,
    t: int,
    s: int,
    generators: Sequence[torch.Generator],
) -> Tensor:
    """Draw y_s ~ q(y_s | y_t, y0_hat) per sample; at s = -1 return argmax y0_hat.

    Args:
        logits: (B, K, S, S) guided clean-layout logits; y: (B, S, S) y_t.
    """
    log_x0 = F.log_softmax(logits, dim=1)
    if s < 0:
        return log_x0.argmax(dim=1)
    b = y.shape[0]
    tt = torch.full((b,), t, dtype=torch.long)
    post = cat.log_posterior(log_x0, y, tt, torch.full((b,), s, dtype=torch.long))
    return torch.cat([sample_log_probs(post[i : i + 1], g) for i, g in enumerate(generators)])
