"""Training loss of the generator: eps (or v) MSE on the image plus (GCDP) the categorical KL on the
layout, with the text condition dropped to the null embedding for classifier-free guidance."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from concord.models.diffusion.categorical import CategoricalDiffusion
from concord.models.diffusion.schedule import NoiseSchedule
from concord.models.diffusion.unet import UNet


@dataclass(frozen=True)
class LossParts:
    total: Tensor  # scalar to backpropagate
    image: Tensor  # scalar, image MSE on eps or v (config.prediction)
    layout: Tensor  # scalar, layout negative-ELBO estimate in bits/pixel (0 without layout)


def drop_condition(
    unet: UNet, text: Tensor, mask: Tensor, p: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Replace each sample's text by the null embedding with probability p."""
    if p <= 0:
        return text, mask
    b = text.shape[0]
    drop = torch.rand(b, generator=generator) < p
    null, null_mask = unet.null_condition(b)
    d = drop.to(text.device)
    return (
        torch.where(d[:, None, None], null.to(text.dtype), text),
        torch.where(d[:, None], null_mask, mask.bool()),
    )


def diffusion_loss(
    unet: UNet,
    schedule: NoiseSchedule,
    cat: CategoricalDiffusion | None,
    x0: Tensor,
    text: Tensor,
    mask: Tensor,
    y0: Tensor | None = None,
    cond_drop: float | None = None,
    generator: torch.Generator | None = None,
) -> LossParts:
    """One training loss on a batch, t drawn uniformly in 0..T-1.

    Args:
        x0: (B, 3, S, S) images in [-1, 1]; y0: (B, S, S) int64 layouts (GCDP only).
        text, mask: (B, L, D) token states and (B, L) mask.
        cond_drop: probability of the null condition; None: the config's.
    """
    cfg = unet.config
    if cfg.layout and (y0 is None or cat is None):
        raise ValueError("a layout model needs y0 and the categorical diffusion")
    b = x0.shape[0]
    t = torch.randint(0, schedule.steps, (b,), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    xt = schedule.q_sample(x0, t, noise)
    y_t = None
    if cfg.layout:
        assert cat is not None and y0 is not None  # checked above
        y_t = cat.q_sample(y0, t, generator)
    p = cfg.cond_drop if cond_drop is None else cond_drop
    text, mask = drop_condition(unet, text, mask, p, generator)
    pred, logits = unet(xt, t, text, mask, y_t)
    target = noise if cfg.prediction == "eps" else schedule.v_target(x0, t, noise)
    img_loss = F.mse_loss(pred, target)
    if not cfg.layout:
        return LossParts(img_loss, img_loss.detach(), torch.zeros(()))
    # T x the per-step KL: the unbiased estimate of the layout's negative ELBO (bits/pixel), as
    # multinomial diffusion optimises it; the per-step term alone is ~1/T of it and too weak.
    assert cat is not None and y0 is not None and y_t is not None  # a layout model, as above
    lay = cat.loss(y0, y_t, t, logits).mean() * cat.steps
    return LossParts(img_loss + cfg.layout_loss_weight * lay, img_loss.detach(), lay.detach())
