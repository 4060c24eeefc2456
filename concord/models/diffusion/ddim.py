"""DDIM sampling (Song et al. 2021): x_s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s - sigma^2) eps_hat
+ sigma z; eta = 0 makes the image path deterministic given x_T."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from concord.models.diffusion.sampling import noise_like, predict_x0
from concord.models.diffusion.schedule import NoiseSchedule


class DDIMSampler:
    name = "ddim"

    def __init__(self, eta: float = 0.0) -> None:
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.eta = eta

    def step(
        self,
        schedule: NoiseSchedule,
        x: Tensor,
        t: int,
        s: int,
        eps: Tensor,
        generators: Sequence[torch.Generator],
    ) -> tuple[Tensor, Tensor]:
        x0 = predict_x0(schedule, x, t, eps)
        if s < 0:
            return x0, x0
        tt = torch.full((x.shape[0],), t, dtype=torch.long)
        eps = schedule.predict_eps(x, tt, x0)  # consistent with the clipped x0
        ab_t, ab_s = schedule.alpha_bar_at(t), schedule.alpha_bar_at(s)
        sigma = self.eta * math.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))
        out = math.sqrt(ab_s) * x0 + math.sqrt(max(1 - ab_s - sigma**2, 0.0)) * eps
        if sigma > 0:
            out = out + sigma * noise_like(x, generators)
        return out, x0
