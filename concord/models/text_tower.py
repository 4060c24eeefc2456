"""Text tower: a pretrained BERT-style backbone (all-MiniLM-L6-v2) given to it, mean-pooled,
frozen except for its top `unfrozen_layers` transformer layers."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from concord.models.config import TextTowerConfig


def mean_pool(states: Tensor, attention_mask: Tensor) -> Tensor:
    """Average token states over real tokens (sentence-transformers' mean pooling).

    Args:
        states: (B, T, D) token states.
        attention_mask: (B, T), 1/True for real tokens.
    Returns:
        (B, D) pooled states.
    """
    mask = attention_mask.to(states.dtype).unsqueeze(-1)
    return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class TextTower(nn.Module):
    """Wraps a transformers BertModel; `(input_ids, attention_mask) -> (pooled, token states)`.

    Frozen parts have `requires_grad=False` and stay in eval mode (no dropout) even when the
    tower is put in train mode.
    """

    def __init__(self, backbone: nn.Module, cfg: TextTowerConfig) -> None:
        super().__init__()
        layers = _encoder_layers(backbone)
        if cfg.unfrozen_layers > len(layers):
            raise ValueError(
                f"unfrozen_layers={cfg.unfrozen_layers} but the backbone has {len(layers)} layers"
            )
        self.cfg = cfg
        self.backbone = backbone
        config: Any = backbone.config  # a transformers config (checked by _encoder_layers)
        self.width: int = int(config.hidden_size)
        backbone.requires_grad_(False)
        self._trainable = layers[len(layers) - cfg.unfrozen_layers :] if cfg.unfrozen_layers else []
        for layer in self._trainable:
            layer.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> TextTower:
        super().train(False)
        for layer in self._trainable:
            layer.train(mode)
        self.training = mode
        return self

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Encode token ids.

        Args:
            input_ids: (B, T) int64 token ids.
            attention_mask: (B, T), 1 for real tokens, 0 for padding.
        Returns:
            (mean-pooled (B, D), token states (B, T, D)), D = backbone hidden size (384).
        """
        states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(states, attention_mask), states

    @property
    def frozen_depth(self) -> int:
        """How many backbone layers are frozen: the states after them never change in training."""
        return len(_encoder_layers(self.backbone)) - len(self._trainable)

    @torch.no_grad()
    def frozen_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The token states entering the first trainable layer (the last hidden state when the
        whole tower is frozen): what a training loop can compute once per caption.

        Returns:
            (B, T, D) states, `frozen_depth` layers deep.
        """
        out = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
        )
        return out.hidden_states[self.frozen_depth]

    def top(self, states: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Finish `forward` from `frozen_states`: the trainable layers, then mean pooling.

        Returns:
            (pooled (B, D), token states (B, T, D)), equal to `forward` on the same tokens.
        """
        # The additive mask BERT's eager and SDPA attention both accept: 0 keep, min drop.
        keep = attention_mask[:, None, None, :].to(states.dtype)
        additive = (1.0 - keep) * torch.finfo(states.dtype).min
        for layer in self._trainable:
            out = layer(states, attention_mask=additive)
            states = out[0] if isinstance(out, tuple) else out  # a tuple before transformers 5
        return mean_pool(states, attention_mask), states


def _encoder_layers(backbone: nn.Module) -> list[Any]:
    encoder = getattr(backbone, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None or not hasattr(backbone, "config"):
        raise TypeError(
            f"expected a BertModel-like backbone (.config, .encoder.layer), got {type(backbone).__name__}"
        )
    return list(layers)
