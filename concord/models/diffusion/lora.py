"""LoRA on the cross-attention K/V projections (the modules whose class names them in
`lora_targets`): W x + scale * B A x, A random, B zero-initialised so injection changes nothing."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a rank-r update; `scale` multiplies the update at run time."""

    def __init__(self, base: nn.Linear, rank: int, scale: float = 1.0) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.base, self.rank, self.scale = base, rank, scale
        self.down = nn.Linear(base.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)
        self.down.to(base.weight.device, base.weight.dtype)
        self.up.to(base.weight.device, base.weight.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.scale * self.up(self.down(x))

    def merged(self) -> nn.Linear:
        """A plain Linear whose weight includes the scaled update."""
        w = self.base.weight
        out = nn.Linear(
            self.base.in_features,
            self.base.out_features,
            bias=self.base.bias is not None,
            device=w.device,
            dtype=w.dtype,
        )
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.scale * self.up.weight @ self.down.weight)
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


def _targets(model: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    for name, module in model.named_modules():
        for attr in getattr(type(module), "lora_targets", ()):
            yield name, module, attr


def inject_lora(model: nn.Module, rank: int, scale: float = 1.0) -> list[Tensor]:
    """Wrap every LoRA target in a LoRALinear (idempotent: existing wrappers are kept).

    Returns:
        The LoRA parameters (the only ones a customization trains).
    """
    params: list[Tensor] = []  # nn.Parameter objects (torch types Linear.weight as Tensor)
    for _, module, attr in _targets(model):
        layer = getattr(module, attr)
        if not isinstance(layer, LoRALinear):
            layer = LoRALinear(layer, rank, scale)
            setattr(module, attr, layer)
        params += [layer.down.weight, layer.up.weight]
    if not params:
        raise ValueError(f"{type(model).__name__} has no LoRA targets")
    return params


def lora_state(model: nn.Module) -> dict[str, Tensor]:
    """The LoRA weights by name (`<module>.<attr>.down.weight` / `.up.weight`), detached copies."""
    state: dict[str, Tensor] = {}
    for name, module, attr in _targets(model):
        layer = getattr(module, attr)
        if isinstance(layer, LoRALinear):
            for part in ("down", "up"):
                w = getattr(layer, part).weight
                state[f"{name}.{attr}.{part}.weight"] = w.detach().clone()
    return state


def load_lora_state(model: nn.Module, state: dict[str, Tensor], scale: float = 1.0) -> None:
    """Inject LoRA with the rank found in `state` and copy its weights in; strict on names."""
    ranks = {v.shape[0] for k, v in state.items() if k.endswith(".down.weight")}
    if len(ranks) != 1:
        raise ValueError(f"a LoRA state needs one rank, found {sorted(ranks)}")
    inject_lora(model, ranks.pop(), scale)
    expected = set(lora_state(model))
    if expected != set(state):
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(
            f"LoRA state does not fit the model: missing {missing}, unexpected {extra}"
        )
    with torch.no_grad():
        for name, module, attr in _targets(model):
            layer = getattr(module, attr)
            layer.scale = scale
            for part in ("down", "up"):
                getattr(layer, part).weight.copy_(state[f"{name}.{attr}.{part}.weight"])


def set_lora_scale(model: nn.Module, scale: float) -> None:
    """Change every LoRA update's multiplier (0 = base model)."""
    for _, module, attr in _targets(model):
        layer = getattr(module, attr)
        if isinstance(layer, LoRALinear):
            layer.scale = scale


def remove_lora(model: nn.Module, merge: bool = False) -> None:
    """Unwrap every LoRALinear: restore the base Linear, or fold the update into it (merge)."""
    for _, module, attr in _targets(model):
        layer = getattr(module, attr)
        if isinstance(layer, LoRALinear):
            setattr(module, attr, layer.merged() if merge else layer.base)


@contextmanager
def lora_applied(model: nn.Module, state: dict[str, Tensor], scale: float = 1.0) -> Iterator[None]:
    """Run a block with a LoRA state loaded; the model is restored (unwrapped) afterwards."""
    load_lora_state(model, state, scale)
    try:
        yield
    finally:
        remove_lora(model)
