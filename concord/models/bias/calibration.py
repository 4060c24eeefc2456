"""Calibrated probabilities for the bias classifier (pure torch, no I/O).

- P(biased) = sigmoid(logit / T): temperature scaling (Guo et al. 2017), T fitted on held-out
  logits by `fit_temperature`; it changes confidence, never the ranking or the 0-logit decision.
- P(inconsistent) for an image-text pair from the shared concord-encoder: a 1-D logistic map of
  the encoder's image-text cosine, fitted by `InconsistencyCalibration.fit` on pairs whose image
  does / does not contradict the text.
- `expected_calibration_error`: the report's before/after measure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


def biased_probability(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Returns: sigmoid(logits / temperature), same shape as `logits`."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return torch.sigmoid(logits.float() / temperature)


def fit_temperature(logits: Tensor, labels: Tensor, steps: int = 100) -> float:
    """The temperature minimising the binary NLL of `labels` (0/1) given `logits`.

    Fitted on log T (so T stays positive) with L-BFGS; clamped to [0.05, 20].
    """
    x = logits.detach().float().flatten()
    y = labels.detach().float().flatten()
    if x.numel() != y.numel() or x.numel() == 0:
        raise ValueError("logits and labels must be non-empty and the same size")
    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return min(max(t, 0.05), 20.0) if math.isfinite(t) else 1.0


def expected_calibration_error(probs: Tensor, labels: Tensor, bins: int = 10) -> float:
    """Top-label ECE of a binary classifier: the predicted class's confidence max(p, 1 - p)
    against how often that prediction is right, averaged over `bins` equal-width confidence
    bins weighted by their size."""
    p = probs.detach().float().flatten()
    y = labels.detach().float().flatten()
    if p.numel() != y.numel() or p.numel() == 0:
        raise ValueError("probs and labels must be non-empty and the same size")
    predicted = (p >= 0.5).float()
    confidence = torch.where(predicted == 1, p, 1 - p)
    correct = (predicted == y).float()
    edges = torch.linspace(0.5, 1.0, bins + 1)
    ece = 0.0
    for k in range(bins):
        lo, hi = float(edges[k]), float(edges[k + 1])
        inside = (confidence >= lo) & ((confidence < hi) if k < bins - 1 else (confidence <= hi))
        if inside.any():
            gap = (confidence[inside].mean() - correct[inside].mean()).abs()
            ece += float(gap) * float(inside.float().mean())
    return ece


@dataclass(frozen=True)
class InconsistencyCalibration:
    """P(inconsistent) = sigmoid(coef * cosine + intercept), cosine = the encoder's image-text
    similarity of the pair's pooled embeddings (coef < 0: less similar, more inconsistent)."""

    coef: float = -10.0
    intercept: float = 2.0
    threshold: float = 0.5  # P(inconsistent) above which the pair gets an inconsistency cue

    def probability(self, cosine: Tensor) -> Tensor:
        return torch.sigmoid(self.coef * cosine.float() + self.intercept)

    def to_dict(self) -> dict[str, Any]:
        return {
            "form": "logistic-cosine",
            "coef": self.coef,
            "intercept": self.intercept,
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InconsistencyCalibration:
        """Raises: ValueError for another form or non-numeric values."""
        if data.get("form", "logistic-cosine") != "logistic-cosine":
            raise ValueError(f"unknown inconsistency calibration form {data.get('form')!r}")
        values = (float(data["coef"]), float(data["intercept"]), float(data.get("threshold", 0.5)))
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"inconsistency calibration is not finite: {values}")
        return cls(*values)

    @classmethod
    def fit(
        cls, cosines: Tensor, inconsistent: Tensor, steps: int = 200
    ) -> InconsistencyCalibration:
        """Logistic regression of `inconsistent` (0/1) on the cosine (L-BFGS, tiny L2)."""
        x = cosines.detach().float().flatten()
        y = inconsistent.detach().float().flatten()
        if x.numel() != y.numel() or x.numel() == 0:
            raise ValueError("cosines and labels must be non-empty and the same size")
        mean, std = x.mean(), x.std().clamp(min=1e-6)
        w = torch.zeros(2, requires_grad=True)
        opt = torch.optim.LBFGS([w], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            z = w[0] * (x - mean) / std + w[1]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y) + 1e-4 * (
                w[0] ** 2
            )
            loss.backward()
            return loss

        opt.step(closure)
        w = w.detach()
        a, b = float(w[0] / std), float(w[1] - w[0] * mean / std)
        return cls(a, b)
