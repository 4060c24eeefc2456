"""Running a DualEncoder over datasets: batched image/text encoding, and the frozen-text-tower
cache (MiniLM outputs computed once per caption, the main CPU cost, then only projected)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from concord.models.dual_encoder import DualEncoder, Encoded
from concord.models.preprocess import TextTokenizer


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model's parameters are: its inputs go there."""
    return next(model.parameters()).device


@dataclass
class TextStateCache:
    """Frozen text-tower outputs per text: (pooled (D,), token states (L, D)), padding stripped.

    Valid for any model whose text tower is the same frozen backbone (unfrozen_layers=0), so one
    cache serves every frozen run in a process.
    """

    pooled: dict[str, Tensor] = field(default_factory=dict)
    states: dict[str, Tensor] = field(default_factory=dict)

    def __contains__(self, text: str) -> bool:
        return text in self.pooled

    def __len__(self) -> int:
        return len(self.pooled)

    @torch.no_grad()
    def add(
        self,
        model: DualEncoder,
        tokenizer: TextTokenizer,
        texts: Sequence[str],
        batch_size: int = 128,
        progress: bool = False,
    ) -> None:
        """Run the text tower over the texts not cached yet.

        Args:
            model: supplies the text tower; it must be frozen.
            texts: captions (duplicates are encoded once).
        """
        if model.config.text.unfrozen_layers:
            raise ValueError(
                "the text-state cache is only valid for a frozen text tower (unfrozen_layers=0)"
            )
        todo = sorted({t for t in texts if t not in self.pooled}, key=len)
        tower = model.text_tower
        steps = range(0, len(todo), batch_size)
        for s in tqdm(steps, desc="text tower", disable=not progress or not todo, leave=False):
            chunk = todo[s : s + batch_size]
            tok = tokenizer(chunk).to(model_device(model))
            pooled, states = tower(tok.input_ids, tok.attention_mask)
            for k, text in enumerate(chunk):
                n = int(tok.attention_mask[k].sum())
                self.pooled[text] = pooled[k].clone()
                self.states[text] = states[k, :n].clone()

    def batch(self, texts: Sequence[str]) -> tuple[Tensor, Tensor, Tensor]:
        """Returns: (pooled (B, D), states (B, L, D) zero-padded, mask (B, L) bool) for cached texts."""
        missing = [t for t in texts if t not in self.pooled]
        if missing:
            raise KeyError(f"{len(missing)} texts not in the cache, e.g. {missing[0]!r}")
        rows = [self.states[t] for t in texts]
        length = max(r.shape[0] for r in rows)
        device = rows[0].device  # the device of the model that filled the cache
        states = torch.zeros(len(rows), length, rows[0].shape[1], device=device)
        mask = torch.zeros(len(rows), length, dtype=torch.bool, device=device)
        for k, r in enumerate(rows):
            states[k, : r.shape[0]] = r
            mask[k, : r.shape[0]] = True
        return torch.stack([self.pooled[t] for t in texts]), states, mask


def project_text(model: DualEncoder, pooled: Tensor, states: Tensor, mask: Tensor) -> Encoded:
    """The text half of `DualEncoder.encode_text` after the tower: project, normalise, mask."""
    tokens = F.normalize(model.text_proj(states), dim=-1) * mask.unsqueeze(-1).to(states.dtype)
    return Encoded(F.normalize(model.text_proj(pooled), dim=-1), tokens, mask)


def encode_texts(
    model: DualEncoder,
    tokenizer: TextTokenizer,
    texts: Sequence[str],
    cache: TextStateCache | None = None,
) -> Encoded:
    """One batch of texts, through the cache when given (gradients flow into the projection)."""
    if cache is not None:
        return project_text(model, *cache.batch(texts))
    tok = tokenizer(texts).to(model_device(model))
    return model.encode_text(tok.input_ids, tok.attention_mask)


def _cat(parts: list[Encoded]) -> Encoded:
    length = max(p.tokens.shape[1] for p in parts)
    tokens = torch.cat([F.pad(p.tokens, (0, 0, 0, length - p.tokens.shape[1])) for p in parts])
    mask = torch.cat([F.pad(p.mask, (0, length - p.mask.shape[1])) for p in parts])
    return Encoded(torch.cat([p.pooled for p in parts]), tokens, mask)


@torch.no_grad()
def embed_images(model: DualEncoder, pixels: Tensor, batch_size: int = 256) -> Encoded:
    """Encode all images (eval mode is the caller's business) on the model's device, a batch
    at a time. Returns: Encoded (N, ...) on that device."""
    device = model_device(model)
    return _cat(
        [
            model.encode_image(pixels[s : s + batch_size].to(device))
            for s in range(0, len(pixels), batch_size)
        ]
    )


@torch.no_grad()
def embed_texts(
    model: DualEncoder,
    tokenizer: TextTokenizer,
    texts: Sequence[str],
    batch_size: int = 256,
    cache: TextStateCache | None = None,
) -> Encoded:
    """Encode all texts, tokens padded to the longest. Uses (and fills) `cache` when given."""
    if cache is not None:
        cache.add(model, tokenizer, texts)
    return _cat(
        [
            encode_texts(model, tokenizer, texts[s : s + batch_size], cache)
            for s in range(0, len(texts), batch_size)
        ]
    )
