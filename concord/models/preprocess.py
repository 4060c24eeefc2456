"""Model inputs from raw data: PIL images -> pixel tensors, texts -> token ids with per-token
strings and character offsets (for word-level attributions and token payloads)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def images_to_tensor(images: Sequence[Image.Image], size: int) -> Tensor:
    """Convert images to RGB, resize the shorter side to `size`, centre-crop to size x size.

    Args:
        images: PIL images (any mode PIL can convert to RGB).
        size: output side in pixels (the model's `image_size`).
    Returns:
        float32 (B, 3, size, size) in [0, 1].
    """
    if not images:
        raise ValueError("no images given")
    arrays = [np.asarray(_square(image.convert("RGB"), size), dtype=np.uint8) for image in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)


def _square(image: Image.Image, size: int) -> Image.Image:
    if image.size == (size, size):
        return image
    w, h = image.size
    scale = size / min(w, h)
    rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((rw, rh), Image.Resampling.BICUBIC)
    left, top = (rw - size) // 2, (rh - size) // 2
    return image.crop((left, top, left + size, top + size))


@dataclass(frozen=True, eq=False)  # tensor fields: compare with torch.equal
class TokenBatch:
    input_ids: Tensor  # (B, T) int64, right-padded to the longest text in the batch
    attention_mask: Tensor  # (B, T) int64, 1 for real tokens (special tokens included)
    tokens: list[list[str]]  # per text, the real tokens' strings (len = attention_mask[i].sum())
    offsets: list[
        list[tuple[int, int]]
    ]  # per text, character spans into the text; (0, 0) for specials

    def __len__(self) -> int:
        return len(self.tokens)

    def to(self, device: torch.device | str) -> TokenBatch:
        """Returns:
        A copy with the tensors on `device`.
        """
        return TokenBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.tokens, self.offsets
        )


class TextTokenizer:
    """Wraps a fast Hugging Face tokenizer: truncation to `max_length`, padding to the longest."""

    def __init__(self, hf_tokenizer: Any, max_length: int) -> None:
        if not getattr(hf_tokenizer, "is_fast", False):
            raise TypeError("TextTokenizer needs a fast (Rust) tokenizer for character offsets")
        self.hf_tokenizer = hf_tokenizer
        self.max_length = max_length

    def __call__(self, texts: Sequence[str]) -> TokenBatch:
        """Tokenize a batch of texts.

        Args:
            texts: non-empty strings (a bare str is rejected, not split into characters).
        Returns:
            TokenBatch with ids, mask, token strings and character offsets.
        """
        if isinstance(texts, str):
            raise TypeError("pass a sequence of texts, not a single str")
        if not texts:
            raise ValueError("no texts given")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"text {i} is empty or not a string: {text!r}")
        enc = self.hf_tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        ids = enc["input_ids"].tolist()
        spans = enc["offset_mapping"].tolist()
        tokens = [
            self.hf_tokenizer.convert_ids_to_tokens(row[:n])
            for row, n in zip(ids, lengths, strict=True)
        ]
        offsets = [
            [(int(a), int(b)) for a, b in row[:n]] for row, n in zip(spans, lengths, strict=True)
        ]
        return TokenBatch(enc["input_ids"], enc["attention_mask"], tokens, offsets)
