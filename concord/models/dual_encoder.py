"""The dual encoder: image and text towers projected into one L2-normalised space, plus a
learnable logit scale. Results are `Encoded` (pooled + token embeddings + token mask)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from concord.models.config import EncoderConfig
from concord.models.text_tower import TextTower, mean_pool
from concord.models.vit import ImageTower

MAX_LOGIT_SCALE = 100.0  # CLIP's clamp: temperature never goes below 0.01


@dataclass(frozen=True, eq=False)  # tensor fields: compare with torch.equal
class Encoded:
    pooled: Tensor  # (B, E) float, L2-normalised global embeddings
    tokens: Tensor  # (B, N, E) float, L2-normalised token embeddings; zero where mask is False
    mask: Tensor  # (B, N) bool, True for real tokens (all True for images)

    def __len__(self) -> int:
        return self.pooled.shape[0]

    def to(self, device: torch.device | str) -> Encoded:
        """Returns:
        A copy with every tensor on `device`.
        """
        return Encoded(self.pooled.to(device), self.tokens.to(device), self.mask.to(device))

    def __getitem__(self, index: int | slice | Tensor) -> Encoded:
        """Returns:
        The rows `index` (keeps the batch dimension for slices and index tensors).
        """
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Encoded(self.pooled[index], self.tokens[index], self.mask[index])


class DualEncoder(nn.Module):
    """ViT image tower + pretrained text tower, each with a linear projection to `embed_dim`.

    The same projection maps a tower's pooled output and its token states, so a text's pooled
    embedding is (before normalisation) the mean of its projected token states.
    """

    text_pooling: ClassVar[str] = "mean"  # the pooled text embedding: mean of real token states

    def __init__(self, config: EncoderConfig, text_backbone: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.image_tower = ImageTower(config.image)
        self.text_tower = TextTower(text_backbone, config.text)
        self.image_proj = nn.Linear(config.image.width, config.embed_dim, bias=False)
        self.text_proj = nn.Linear(self.text_tower.width, config.embed_dim, bias=False)
        nn.init.normal_(self.image_proj.weight, std=config.image.width**-0.5)
        nn.init.normal_(self.text_proj.weight, std=self.text_tower.width**-0.5)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))

    @property
    def image_size(self) -> int:
        """Side in pixels that `encode_image` expects."""
        return self.config.image.image_size

    @property
    def logit_scale(self) -> Tensor:
        """Scalar multiplier for cosine logits: exp(log_logit_scale) clamped to [1, 100].

        Differentiable (learnable through `log_logit_scale`) until it hits the clamp.
        """
        return self.log_logit_scale.clamp(0.0, math.log(MAX_LOGIT_SCALE)).exp()

    def encode_image(self, pixels: Tensor) -> Encoded:
        """Encode a batch of images.

        Args:
            pixels: float (B, 3, S, S) in [0, 1], S = `image_size` (see `preprocess.images_to_tensor`).
        Returns:
            Encoded with pooled (B, E), tokens (B, N, E) for N patches, mask all True.
        """
        pooled, tokens = self.image_tower(pixels)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return _project(self.image_proj, pooled, tokens, mask)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Encoded:
        """Encode a batch of token ids ([CLS]/[SEP] kept as tokens).

        Args:
            input_ids: (B, T) int64 token ids (see `preprocess.TextTokenizer`).
            attention_mask: (B, T), 1 for real tokens, 0 for padding.
        Returns:
            Encoded with pooled (B, E), tokens (B, T, E), mask = attention_mask as bool.
        """
        pooled, tokens = self.text_tower(input_ids, attention_mask)
        return _project(self.text_proj, pooled, tokens, attention_mask.bool())

    @property
    def text_backbone(self) -> Any:
        """The transformers (BERT-like) text model under the text tower."""
        return self.text_tower.backbone

    @property
    def text_depth(self) -> int:
        """Number of transformer layers of the text backbone."""
        return len(self.text_backbone.encoder.layer)

    def encode_text_with_attentions(
        self, input_ids: Tensor, attention_mask: Tensor
    ) -> tuple[Encoded, tuple[Tensor, ...]]:
        """`encode_text` plus every text layer's attention probabilities (B, heads, T, T), as
        graph tensors when the backbone runs eager attention (concord.models.alignment)."""
        out = self.text_backbone(
            input_ids=input_ids, attention_mask=attention_mask, output_attentions=True
        )
        states = out.last_hidden_state
        encoded = _project(
            self.text_proj, mean_pool(states, attention_mask), states, attention_mask.bool()
        )
        return encoded, tuple(out.attentions)

    def forward(
        self, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor
    ) -> tuple[Encoded, Encoded]:
        """Returns:
        (encode_image(pixels), encode_text(input_ids, attention_mask)), for DDP-style training.
        """
        return self.encode_image(pixels), self.encode_text(input_ids, attention_mask)


def _project(proj: nn.Linear, pooled: Tensor, tokens: Tensor, mask: Tensor) -> Encoded:
    pooled = F.normalize(proj(pooled), dim=-1)
    tokens = F.normalize(proj(tokens), dim=-1) * mask.unsqueeze(-1).to(tokens.dtype)
    return Encoded(pooled, tokens, mask)
