"""ClipAdapter: a transformers CLIPModel (given to it) behind the DualEncoder interface, so a
public CLIP can stand in for our encoder (`encode_image` / `encode_text` -> Encoded)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from concord.models.dual_encoder import Encoded
from concord.models.preprocess import TextTokenizer


class ClipAdapter(nn.Module):
    """Pooled outputs equal CLIPModel.get_image_features / get_text_features, L2-normalised.

    Tokens: image = projected, post-layernormed patch tokens (class token excluded, mask all
    True); text = projected final states of every position (mask = attention_mask).
    """

    text_pooling: ClassVar[str] = "eos"  # the pooled text embedding: the EOS token's state
    mean: Tensor  # buffers, registered in __init__
    std: Tensor

    def __init__(
        self, clip: Any, tokenizer: TextTokenizer, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )

    @property
    def image_size(self) -> int:
        """Side in pixels that `encode_image` expects."""
        return int(self.clip.config.vision_config.image_size)

    @property
    def embed_dim(self) -> int:
        """Size of the pooled and token embeddings (CLIP's projection_dim)."""
        return int(self.clip.config.projection_dim)

    @property
    def logit_scale(self) -> Tensor:
        """CLIP's learned multiplier for cosine logits."""
        return self.clip.logit_scale.exp()

    @property
    def text_backbone(self) -> Any:
        """The transformers CLIP text model."""
        return self.clip.text_model

    @property
    def text_depth(self) -> int:
        """Number of transformer layers of the text model."""
        return len(self.clip.text_model.encoder.layers)

    def encode_image(self, pixels: Tensor) -> Encoded:
        """Encode images.

        Args:
            pixels: float (B, 3, S, S) in [0, 1], S = `image_size`; normalised here with CLIP's mean/std.
        Returns:
            Encoded with pooled (B, E), tokens (B, N, E) for N patches, mask all True.
        """
        size = self.image_size
        if pixels.ndim != 4 or pixels.shape[1:] != (3, size, size):
            raise ValueError(f"expected pixels (B, 3, {size}, {size}), got {tuple(pixels.shape)}")
        vision = self.clip.vision_model(
            pixel_values=(pixels - self.mean) / self.std, return_dict=True
        )
        pooled = self.clip.visual_projection(vision.pooler_output)
        patches = self.clip.visual_projection(
            self.clip.vision_model.post_layernorm(vision.last_hidden_state[:, 1:])
        )
        mask = torch.ones(patches.shape[:2], dtype=torch.bool, device=patches.device)
        return Encoded(F.normalize(pooled, dim=-1), F.normalize(patches, dim=-1), mask)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Encoded:
        """Encode token ids from `self.tokenizer`.

        Args:
            input_ids: (B, T) int64 token ids.
            attention_mask: (B, T), 1 for real tokens.
        Returns:
            Encoded with pooled (B, E), tokens (B, T, E) (zero at padding), mask = attention_mask as bool.
        """
        text = self.clip.text_model(
            input_ids=input_ids, attention_mask=attention_mask, return_dict=True
        )
        pooled = self.clip.text_projection(text.pooler_output)
        mask = attention_mask.bool()
        tokens = F.normalize(self.clip.text_projection(text.last_hidden_state), dim=-1)
        tokens = tokens * mask.unsqueeze(-1).to(tokens.dtype)
        return Encoded(F.normalize(pooled, dim=-1), tokens, mask)

    def encode_text_with_attentions(
        self, input_ids: Tensor, attention_mask: Tensor
    ) -> tuple[Encoded, tuple[Tensor, ...]]:
        """`encode_text` plus every text layer's attention probabilities (B, heads, T, T), as
        graph tensors when the text model runs eager attention (concord.models.alignment)."""
        out = self.clip.text_model(
            input_ids=input_ids, attention_mask=attention_mask, output_attentions=True
        )
        proj = self.clip.text_projection
        pooled, states = proj(out.pooler_output), out.last_hidden_state
        mask = attention_mask.bool()
        tokens = F.normalize(proj(states), dim=-1) * mask.unsqueeze(-1).to(states.dtype)
        return Encoded(F.normalize(pooled, dim=-1), tokens, mask), tuple(out.attentions)
