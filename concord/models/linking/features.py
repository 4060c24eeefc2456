"""What M3EL reads: frozen encoder features of mentions (token states + globals, image patches
+ globals) and of KB entities (global vectors only, so a KB is a set of vectors in Qdrant).

The encoder is `concord-encoder` (a `DualEncoder` or a public CLIP adapter): both expose
`encode_text` / `encode_image` returning `Encoded(pooled, tokens, mask)`. Featurising runs
under `torch.no_grad()`: M3EL trains on top of the frozen encoder, never through it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

CHUNK = 64  # texts / images per encoder call: bounds memory, not results
PATCH_GRID = 4  # image patch tokens are average-pooled to at most a 4x4 grid (16 tokens)


@dataclass(frozen=True, eq=False)  # tensor fields: compare with torch.equal
class MentionFeatures:
    """B mentions: the sentence (span marked) as token states and a global, and the image."""

    text_tokens: Tensor  # (B, L, Dt) float token states of the sentence (span marked)
    text_mask: Tensor  # (B, L) bool, True for real tokens
    text_global: Tensor  # (B, Dt)
    image_patches: Tensor  # (B, P, Di), zeros where has_image is False
    image_global: Tensor  # (B, Di), zeros where has_image is False
    has_image: Tensor  # (B,) bool

    def __len__(self) -> int:
        return self.text_global.shape[0]

    def to(self, device: torch.device | str) -> MentionFeatures:
        """Returns: a copy with every tensor on `device`."""
        return MentionFeatures(*(t.to(device) for t in self._fields()))

    def __getitem__(self, index: slice | Tensor) -> MentionFeatures:
        """Returns: the rows `index` (a slice or an index / bool tensor)."""
        return MentionFeatures(*(t[index] for t in self._fields()))

    def _fields(self) -> tuple[Tensor, ...]:
        return (
            self.text_tokens,
            self.text_mask,
            self.text_global,
            self.image_patches,
            self.image_global,
            self.has_image,
        )

    @staticmethod
    def cat(parts: Sequence[MentionFeatures]) -> MentionFeatures:
        """Concatenate batches (token states padded to the longest)."""
        length = max(p.text_tokens.shape[1] for p in parts)
        tokens = torch.cat([_pad_to(p.text_tokens, length) for p in parts])
        mask = torch.cat([_pad_to(p.text_mask, length) for p in parts])
        return MentionFeatures(
            tokens,
            mask,
            torch.cat([p.text_global for p in parts]),
            torch.cat([p.image_patches for p in parts]),
            torch.cat([p.image_global for p in parts]),
            torch.cat([p.has_image for p in parts]),
        )


@dataclass(frozen=True, eq=False)
class EntityFeatures:
    """N entities: global vectors only (what a Qdrant point of the KB holds)."""

    text_global: Tensor  # (N, Dt)
    image_global: Tensor  # (N, Di), zeros where has_image is False (mean of its images)
    has_image: Tensor  # (N,) bool

    def __len__(self) -> int:
        return self.text_global.shape[0]

    def to(self, device: torch.device | str) -> EntityFeatures:
        """Returns: a copy with every tensor on `device`."""
        return EntityFeatures(
            self.text_global.to(device), self.image_global.to(device), self.has_image.to(device)
        )

    def __getitem__(self, index: slice | Tensor) -> EntityFeatures:
        """Returns: the rows `index` (a slice or an index / bool tensor)."""
        return EntityFeatures(
            self.text_global[index], self.image_global[index], self.has_image[index]
        )

    @staticmethod
    def cat(parts: Sequence[EntityFeatures]) -> EntityFeatures:
        """Concatenate entity sets (e.g. Qdrant pages)."""
        return EntityFeatures(
            torch.cat([p.text_global for p in parts]),
            torch.cat([p.image_global for p in parts]),
            torch.cat([p.has_image for p in parts]),
        )


def entity_text(name: str, description: str, attributes: Mapping[str, Any] | None = None) -> str:
    """The one text an entity is read as (KB upsert, training and the report all use it).

    Args:
        name: the entity's name (may be shared with other entities).
        description: free text; may be empty.
        attributes: key -> value, listed after the description in key order.
    Returns:
        "Name. Description. key: value; key: value" without empty parts.
    """
    parts = [p.strip().rstrip(".") for p in (name, description) if p and p.strip()]
    text = ". ".join(parts)
    if attributes:
        listed = "; ".join(f"{k}: {attributes[k]}" for k in sorted(attributes))
        text = f"{text}. {listed}" if text else listed
    return text


def mention_text(text: str, span: tuple[int, int], separator: str = "[SEP]") -> str:
    """The span marked the way M3EL's inputs mark it: "SPAN [SEP] SENTENCE" (MIMIC's form).

    Args:
        text: the sentence.
        span: (start, end) character offsets of the mention, 0 <= start < end <= len(text).
        separator: the tokenizer's separator token (BERT's [SEP] for MiniLM).
    """
    start, end = span
    if not 0 <= start < end <= len(text):
        raise ValueError(f"span {span} is outside the text of {len(text)} characters")
    return f"{text[start:end]} {separator} {text}"


@torch.no_grad()
def featurize_mentions(
    encoder: Any,
    tokenizer: Any,
    texts: Sequence[str],
    spans: Sequence[tuple[int, int]],
    pixels: Sequence[Tensor | None],
    device: torch.device | str = "cpu",
    patch_grid: int | None = PATCH_GRID,
) -> MentionFeatures:
    """Frozen features of B mentions.

    Args:
        encoder: the loaded encoder (`LoadedModel.torch_model()`), in eval mode.
        tokenizer: its `TextTokenizer` (`LoadedModel.tokenizer`).
        texts: the sentences.
        spans: (start, end) of each mention in its sentence.
        pixels: per mention a (3, S, S) float tensor in [0, 1]
            (`concord.models.preprocess.images_to_tensor(...)[0]`) or None (no image).
        device: where the encoder runs; the features are returned there.
        patch_grid: a square grid of more than patch_grid**2 patches is average-pooled to
            patch_grid x patch_grid tokens (the card's 16-token patch grid; M3EL's fine and
            cross-modal matchers cost linear in the token count). None keeps every patch.
    Returns:
        MentionFeatures with B rows.
    """
    if not (len(texts) == len(spans) == len(pixels)):
        raise ValueError("texts, spans and pixels must have the same length")
    if not texts:
        raise ValueError("no mentions given")
    separator = getattr(getattr(tokenizer, "hf_tokenizer", None), "sep_token", None) or "|"
    marked = [
        mention_text(t, (int(s[0]), int(s[1])), separator)
        for t, s in zip(texts, spans, strict=True)
    ]
    parts = []
    for i in range(0, len(marked), CHUNK):
        batch = tokenizer(marked[i : i + CHUNK]).to(device)
        encoded = encoder.encode_text(batch.input_ids, batch.attention_mask)
        parts.append((encoded.tokens.float(), encoded.mask.bool(), encoded.pooled.float()))
    length = max(p[0].shape[1] for p in parts)
    text_tokens = torch.cat([_pad_to(p[0], length) for p in parts])
    text_mask = torch.cat([_pad_to(p[1], length) for p in parts])
    text_global = torch.cat([p[2] for p in parts])

    has_image = torch.tensor([p is not None for p in pixels], dtype=torch.bool)
    present = [p for p in pixels if p is not None]
    if present:
        globals_, patches = _encode_images(encoder, torch.stack(present), device)
        patches = pool_patches(patches, patch_grid)
    else:  # no image at all: the image tower's shape from a probe image
        image_size = int(getattr(encoder, "image_size", 64))
        probe = torch.zeros(1, 3, image_size, image_size)
        globals_, patches = _encode_images(encoder, probe, device)
        globals_, patches = globals_[:0], pool_patches(patches, patch_grid)[:0]
    image_global = torch.zeros(len(pixels), globals_.shape[-1], device=globals_.device)
    image_patches = torch.zeros(len(pixels), *patches.shape[1:], device=patches.device)
    index = has_image.nonzero().squeeze(1).to(globals_.device)
    image_global[index] = globals_
    image_patches[index] = patches
    return MentionFeatures(
        text_tokens, text_mask, text_global, image_patches, image_global, has_image.to(device)
    )


@torch.no_grad()
def featurize_entities(
    encoder: Any,
    tokenizer: Any,
    texts: Sequence[str],
    pixels: Sequence[Tensor | Sequence[Tensor] | None],
    device: torch.device | str = "cpu",
) -> EntityFeatures:
    """Frozen global features of N entities.

    Args:
        encoder: the loaded encoder, in eval mode.
        tokenizer: its `TextTokenizer`.
        texts: each entity's text (`entity_text(...)`).
        pixels: per entity its images: a (k, 3, S, S) tensor, a list of (3, S, S) tensors, or
            None / empty (no image). The image vector is the renormalised mean of their globals.
        device: where the encoder runs.
    Returns:
        EntityFeatures with N rows.
    """
    if len(texts) != len(pixels):
        raise ValueError("texts and pixels must have the same length")
    if not texts:
        raise ValueError("no entities given")
    text_global = torch.cat(
        [
            encoder.encode_text(b.input_ids, b.attention_mask).pooled.float()
            for b in (
                tokenizer(list(texts[i : i + CHUNK])).to(device)
                for i in range(0, len(texts), CHUNK)
            )
        ]
    )
    stacks = [_as_stack(p) for p in pixels]
    counts = [0 if s is None else s.shape[0] for s in stacks]
    has_image = torch.tensor([c > 0 for c in counts], dtype=torch.bool)
    image_global = torch.zeros(len(texts), _image_dim(encoder, text_global, stacks, device))
    image_global = image_global.to(text_global.device)
    if any(counts):
        flat = torch.cat([s for s in stacks if s is not None and s.shape[0]])
        globals_, _ = _encode_images(encoder, flat, device)
        owner = torch.repeat_interleave(torch.arange(len(texts)), torch.tensor(counts))
        summed = torch.zeros_like(image_global).index_add_(0, owner.to(globals_.device), globals_)
        image_global = F.normalize(summed, dim=-1) * has_image.to(summed.device).unsqueeze(1)
    return EntityFeatures(text_global, image_global, has_image.to(device))


def pool_patches(patches: Tensor, grid: int | None) -> Tensor:
    """(B, P, D) patch tokens of a square s x s grid -> (B, grid*grid, D) by average pooling;
    unchanged when `grid` is None, P is not a square, or s <= grid."""
    side = math.isqrt(patches.shape[1])
    if grid is None or side * side != patches.shape[1] or side <= grid:
        return patches
    b, _, d = patches.shape
    square = patches.transpose(1, 2).reshape(b, d, side, side)
    return F.adaptive_avg_pool2d(square, grid).reshape(b, d, grid * grid).transpose(1, 2)


def _encode_images(
    encoder: Any, pixels: Tensor, device: torch.device | str
) -> tuple[Tensor, Tensor]:
    globals_, patches = [], []
    for i in range(0, pixels.shape[0], CHUNK):
        encoded = encoder.encode_image(pixels[i : i + CHUNK].to(device))
        globals_.append(encoded.pooled.float())
        patches.append(encoded.tokens.float())
    return torch.cat(globals_), torch.cat(patches)


def _image_dim(
    encoder: Any, text_global: Tensor, stacks: Sequence[Tensor | None], device: torch.device | str
) -> int:
    config = getattr(encoder, "config", None)
    dim = getattr(config, "embed_dim", None)
    if isinstance(dim, int):
        return dim
    probe = next((s[:1] for s in stacks if s is not None and s.shape[0]), None)
    if probe is None:
        return int(text_global.shape[-1])  # a dual encoder's towers share one space
    return int(_encode_images(encoder, probe, device)[0].shape[-1])


def _as_stack(pixels: Tensor | Sequence[Tensor] | None) -> Tensor | None:
    if pixels is None:
        return None
    if isinstance(pixels, Tensor):
        return pixels.unsqueeze(0) if pixels.dim() == 3 else pixels
    return torch.stack(list(pixels)) if len(pixels) else None


def _pad_to(x: Tensor, length: int) -> Tensor:
    """Right-pad dim 1 with zeros (False for bool) to `length`."""
    missing = length - x.shape[1]
    if missing <= 0:
        return x
    pad = torch.zeros(x.shape[0], missing, *x.shape[2:], dtype=x.dtype, device=x.device)
    return torch.cat([x, pad], dim=1)
