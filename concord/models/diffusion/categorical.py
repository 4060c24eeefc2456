"""Multinomial (categorical) diffusion of the layout towards the uniform distribution over K
classes (Hoogeboom et al. 2021; GCDP's layout branch): forward marginals, the posterior
q(y_s | y_t, y_0) for any s < t, the KL training loss and posterior sampling. All in log space."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from concord.models.diffusion.schedule import alpha_bars

_EPS = 1e-30


def _log(x: Tensor) -> Tensor:
    return torch.log(x.clamp(min=_EPS))


class CategoricalDiffusion:
    """q(y_t | y_0) = Cat(ab_t onehot(y_0) + (1 - ab_t) / K); distributions live on dim 1.

    Tensors of probabilities/log-probabilities are (B, K, H, W); layouts are (B, H, W) int64.
    """

    def __init__(self, num_classes: int, kind: str = "cosine", steps: int = 1000) -> None:
        self.K, self.steps = num_classes, steps
        self.alpha_bar = alpha_bars(kind, steps)  # keep-probability, (T,) float64

    def _abv(self, t: Tensor) -> Tensor:
        """ab at per-sample steps t (B,), float64; t = -1 means 1.0 (no noise)."""
        ab = torch.cat([self.alpha_bar.new_ones(1), self.alpha_bar])
        return ab[t.long().cpu() + 1]

    def _ab(self, t: Tensor, like: Tensor) -> Tensor:
        return self._abv(t).to(like.device, like.dtype).view(-1, 1, 1, 1)

    def log_q_marginal(self, log_x0: Tensor, t: Tensor) -> Tensor:
        """log q(y_t | y_0) for a (possibly soft) y_0 given as log-probs; t = -1 gives y_0."""
        ab = self._ab(t, log_x0)
        return torch.logaddexp(log_x0 + _log(ab), _log((1 - ab) / self.K).expand_as(log_x0))

    def log_q_step(self, y_t: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """log q(y_t | y_s) as a function of y_s (B, K, H, W).

        Equals log(ab_{t|s} [y_s = y_t] + (1 - ab_{t|s}) / K) with ab_{t|s} = ab_t / ab_s.
        """
        a = (self._abv(t) / self._abv(s)).to(y_t.device, torch.float32).view(-1, 1, 1, 1)
        onehot = F.one_hot(y_t, self.K).permute(0, 3, 1, 2).float()
        return _log(a * onehot + (1 - a) / self.K)

    def log_posterior(
        self, log_x0: Tensor, y_t: Tensor, t: Tensor, s: Tensor | None = None
    ) -> Tensor:
        """log q(y_s | y_t, y_0) (normalised over K), s = t - 1 by default; s = -1 returns y_0.

        Args:
            log_x0: (B, K, H, W) log-probs of y_0 (one-hot truth or the model's prediction).
            y_t: (B, H, W) int64 current layout.
            t: (B,) current step; s: (B,) target step < t.
        """
        s = t - 1 if s is None else s
        logits = self.log_q_marginal(log_x0, s) + self.log_q_step(y_t, t, s)
        out = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        at_zero = (s < 0).view(-1, 1, 1, 1).to(out.device)
        return torch.where(at_zero, log_x0 - torch.logsumexp(log_x0, 1, keepdim=True), out)

    def q_sample(self, y0: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw y_t ~ q(y_t | y_0) for integer layouts y0 (B, H, W)."""
        log_x0 = _log(F.one_hot(y0, self.K).permute(0, 3, 1, 2).float())
        return sample_log_probs(self.log_q_marginal(log_x0, t), generator)

    def loss(self, y0: Tensor, y_t: Tensor, t: Tensor, logits: Tensor) -> Tensor:
        """Per-sample loss in bits per pixel: KL(q(y_{t-1}|y_t,y_0) || q(y_{t-1}|y_t,y0_hat)) for
        t > 0 and the decoder NLL -log p(y_0 | y0_hat) at t = 0.

        Args:
            y0: (B, H, W) truth; y_t: (B, H, W) noised; t: (B,); logits: (B, K, H, W) of y0_hat.
        Returns:
            (B,) losses.
        """
        log_true = _log(F.one_hot(y0, self.K).permute(0, 3, 1, 2).float())
        log_pred = F.log_softmax(logits, dim=1)
        q_true = self.log_posterior(log_true, y_t, t.clamp(min=1))
        q_pred = self.log_posterior(log_pred, y_t, t.clamp(min=1))
        kl = (q_true.exp() * (q_true - q_pred)).sum(1)
        nll = -(log_true.exp() * log_pred).sum(1)
        per_pixel = torch.where((t == 0).view(-1, 1, 1), nll, kl)
        return per_pixel.flatten(1).mean(1) / math.log(2)

    def prior_kl(self, y0: Tensor) -> Tensor:
        """KL(q(y_T | y_0) || uniform) per sample, bits per pixel (a constant; for reporting)."""
        log_x0 = _log(F.one_hot(y0, self.K).permute(0, 3, 1, 2).float())
        t = torch.full((y0.shape[0],), self.steps - 1, dtype=torch.long)
        lq = self.log_q_marginal(log_x0, t)
        kl = (lq.exp() * (lq + math.log(self.K))).sum(1)
        return kl.flatten(1).mean(1) / math.log(2)


def sample_log_probs(log_probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw one class per pixel from (B, K, H, W) log-probs by Gumbel-max; returns (B, H, W)."""
    # Drawn on the CPU (seeded CPU generators) and moved: the same draws on every device.
    u = torch.rand(log_probs.shape, generator=generator, dtype=log_probs.dtype)
    u = u.to(log_probs.device)
    gumbel = -torch.log(-torch.log(u.clamp(min=1e-20, max=1 - 1e-7)))
    return (log_probs + gumbel).argmax(dim=1)
