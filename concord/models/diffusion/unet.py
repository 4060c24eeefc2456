"""The denoiser: a small U-Net with timestep embedding, self-attention at low resolution and
cross-attention on text token states. With `config.layout` it is GCDP's joint denoiser: the
noisy layout y_t is embedded (3 channels) and concatenated to x_t, and a second head predicts
the clean layout's logits. The image-only baseline is the same network with layout off.
`config.patch` > 1 folds p x p pixels into channels first (pixel unshuffle): that is what makes
a 32x32 model trainable on two CPU cores."""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from concord.models.diffusion.config import GeneratorConfig


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of (B,) step indices -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch // 4) or 1, ch)


def _zero(conv: nn.Conv2d) -> None:
    """Zero-initialise a conv (weight and bias) so its block starts as the identity path."""
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the (time + pooled text) embedding added in between."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        _zero(self.conv2)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head attention of (B, N, C) queries over a context (itself when None)."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        cdim = context_dim or dim
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(cdim, dim, bias=False)
        self.to_v = nn.Linear(cdim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(
        self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None
    ) -> Tensor:
        ctx = x if context is None else context
        b, n, c = x.shape
        h = self.heads

        def split(z: Tensor) -> Tensor:
            return z.reshape(b, z.shape[1], h, c // h).transpose(1, 2)

        q, k, v = split(self.to_q(x)), split(self.to_k(ctx)), split(self.to_v(ctx))
        attn_mask = None if mask is None else mask.bool()[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.to_out(out.transpose(1, 2).reshape(b, n, c))


class CrossAttention(Attention):
    """Attention over text token states; LoRA (lora.py) targets its K and V projections."""

    lora_targets: tuple[str, ...] = ("to_k", "to_v")


class SpatialTransformer(nn.Module):
    """Self-attention, cross-attention on text, and an MLP over the pixels of a feature map."""

    def __init__(self, ch: int, heads: int, text_dim: int) -> None:
        super().__init__()
        self.norm = _norm(ch)
        self.proj_in = nn.Conv2d(ch, ch, 1)
        self.ln1, self.self_attn = nn.LayerNorm(ch), Attention(ch, heads)
        self.ln2, self.cross_attn = nn.LayerNorm(ch), CrossAttention(ch, heads, text_dim)
        self.ln3 = nn.LayerNorm(ch)
        self.ff = nn.Sequential(nn.Linear(ch, 4 * ch), nn.GELU(), nn.Linear(4 * ch, ch))
        self.proj_out = nn.Conv2d(ch, ch, 1)
        _zero(self.proj_out)

    def forward(self, x: Tensor, text: Tensor, mask: Tensor) -> Tensor:
        b, c, hh, ww = x.shape
        z = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)
        z = z + self.self_attn(self.ln1(z))
        z = z + self.cross_attn(self.ln2(z), text, mask)
        z = z + self.ff(self.ln3(z))
        return x + self.proj_out(z.transpose(1, 2).reshape(b, c, hh, ww))


class _Level(nn.Module):
    def __init__(self, blocks: list[ResBlock], attns: list[SpatialTransformer | None]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attns = nn.ModuleList([a or nn.Identity() for a in attns])


def _levels(modules: nn.ModuleList) -> list[_Level]:
    """The ModuleList's entries, typed: every one is a _Level (ModuleList is not generic)."""
    return [cast(_Level, m) for m in modules]


class UNet(nn.Module):
    """`forward(x_t, t, text, mask, y_t) -> (eps_hat, layout_logits | None)`."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = cfg = config
        base, emb_dim = cfg.base_channels, cfg.base_channels * 4
        self.time_mlp = nn.Sequential(
            nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.text_pool = nn.Linear(cfg.text_dim, emb_dim)
        # The unconditional "prompt" of classifier-free guidance.
        self.null_text = nn.Parameter(torch.randn(cfg.max_text_tokens, cfg.text_dim) * 0.02)
        self.layout_embed = (
            nn.Embedding(cfg.num_classes, cfg.layout_embed_dim) if cfg.layout else None
        )
        cin = (3 + (cfg.layout_embed_dim if cfg.layout else 0)) * cfg.patch**2
        self.conv_in = nn.Conv2d(cin, base, 3, padding=1)

        def st(ch: int, side: int) -> SpatialTransformer | None:
            return (
                SpatialTransformer(ch, cfg.heads, cfg.text_dim)
                if side in cfg.attn_resolutions
                else None
            )

        widths = [base * m for m in cfg.channel_mult]
        skips, ch, side = [base], base, cfg.image_size // cfg.patch
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for i, w in enumerate(widths):
            blocks, attns = [], []
            for _ in range(cfg.res_blocks):
                blocks.append(ResBlock(ch, w, emb_dim, cfg.dropout))
                attns.append(st(w, side))
                ch = w
                skips.append(ch)
            self.down.append(_Level(blocks, attns))
            last = i == len(widths) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(ch, ch, 3, 2, 1))
            if not last:
                skips.append(ch)
                side //= 2
        self.mid1 = ResBlock(ch, ch, emb_dim, cfg.dropout)
        self.mid_attn = SpatialTransformer(ch, cfg.heads, cfg.text_dim)
        self.mid2 = ResBlock(ch, ch, emb_dim, cfg.dropout)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            blocks, attns = [], []
            for _ in range(cfg.res_blocks + 1):
                blocks.append(ResBlock(ch + skips.pop(), w, emb_dim, cfg.dropout))
                attns.append(st(w, side))
                ch = w
            self.up.append(_Level(blocks, attns))
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
                side *= 2
            else:
                self.upsample.append(nn.Identity())
        p2 = cfg.patch**2
        out_norm, out_conv = _norm(ch), nn.Conv2d(ch, 3 * p2, 3, padding=1)
        _zero(out_conv)
        self.out = nn.Sequential(out_norm, nn.SiLU(), out_conv)
        self.layout_out = (
            nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, cfg.num_classes * p2, 3, padding=1))
            if cfg.layout
            else None
        )

    def null_condition(self, batch: int) -> tuple[Tensor, Tensor]:
        """The learned null text (B, L, D) and its all-ones mask (B, L)."""
        states = self.null_text[None].expand(batch, -1, -1)
        return states, torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)

    def forward(
        self, x: Tensor, t: Tensor, text: Tensor, mask: Tensor, y_t: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Predict the noise and (GCDP) the clean layout.

        Args:
            x: (B, 3, S, S) noisy image x_t in [-1, 1] scale.
            t: (B,) int step indices.
            text: (B, L, text_dim) token states; mask: (B, L) True for real tokens.
            y_t: (B, S, S) int64 noisy layout; required iff config.layout.
        Returns:
            (eps_hat (B, 3, S, S), layout logits (B, K, S, S) or None).
        """
        if (y_t is None) == (self.layout_embed is not None):
            raise ValueError("y_t must be given exactly when the model generates layouts")
        m = mask.to(text.dtype).unsqueeze(-1)
        pooled = (text * m).sum(1) / m.sum(1).clamp(min=1.0)
        emb = self.time_mlp(timestep_embedding(t, self.config.base_channels))
        emb = emb + self.text_pool(pooled)
        if self.layout_embed is not None:
            x = torch.cat([x, self.layout_embed(y_t).permute(0, 3, 1, 2)], dim=1)
        p = self.config.patch
        h = self.conv_in(F.pixel_unshuffle(x, p) if p > 1 else x)
        hs = [h]
        for level, down in zip(_levels(self.down), self.downsample, strict=True):
            for block, attn in zip(level.blocks, level.attns, strict=True):
                h = block(h, emb)
                h = attn(h, text, mask) if isinstance(attn, SpatialTransformer) else h
                hs.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb), text, mask), emb)
        for level, up in zip(_levels(self.up), self.upsample, strict=True):
            for block, attn in zip(level.blocks, level.attns, strict=True):
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
                h = attn(h, text, mask) if isinstance(attn, SpatialTransformer) else h
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        logits = self.layout_out(h) if self.layout_out is not None else None
        eps = self.out(h)
        if p > 1:
            eps = F.pixel_shuffle(eps, p)
            logits = F.pixel_shuffle(logits, p) if logits is not None else None
        return eps, logits
