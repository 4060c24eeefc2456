"""DDPM ancestral sampling (Ho et al. 2020), respaced: the posterior q(x_s | x_t, x0_hat) for any
s < t, so fewer steps than the training T work."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from concord.models.diffusion.sampling import noise_like, predict_x0
from concord.models.diffusion.schedule import NoiseSchedule


class DDPMSampler:
    name = "ddpm"

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
        ab_t, ab_s = schedule.alpha_bar_at(t), schedule.alpha_bar_at(s)
        alpha = ab_t / ab_s
        beta = 1.0 - alpha
        c0 = math.sqrt(ab_s) * beta / (1.0 - ab_t)
        ct = math.sqrt(alpha) * (1.0 - ab_s) / (1.0 - ab_t)
        var = beta * (1.0 - ab_s) / (1.0 - ab_t)
        return c0 * x0 + ct * x + math.sqrt(var) * noise_like(x, generators), x0
