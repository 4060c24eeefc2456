"""Image tower: a small pre-norm ViT trained from scratch (patch tokens + mean-pooled embedding).

Tokens come from a linear patch embedding or, with `stem="conv"`, from a small convolutional stem.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from concord.models.config import ImageTowerConfig


class Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, n, w = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, w))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def conv_stem(width: int, patch_size: int, cin: int = 3) -> nn.Sequential:
    """log2(patch_size) stride-2 3x3 convs (GroupNorm + GELU), widths doubling up to `width`,
    then a 1x1 projection: the same token grid as a patch_size patch embedding."""
    layers: list[nn.Module] = []
    n = patch_size.bit_length() - 1
    for i in range(n):
        cout = max(8, width // 2 ** (n - i))
        layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(1, cout), nn.GELU()]
        cin = cout
    layers.append(nn.Conv2d(cin, width, kernel_size=1))
    return nn.Sequential(*layers)


def _conv_gelu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(1, cout), nn.GELU()]


def cnn_stem(width: int, patch_size: int, cin: int = 3) -> nn.Sequential:
    """3x3 convolutions at full resolution, each stage ended by a 2x2 max-pool, widths doubling
    up to `width` (two convs per stage while the maps are large, one in the last), then one more
    3x3 conv on the patch grid: the same token grid as a patch_size patch embedding, but small
    shapes are seen before any downsampling."""
    layers: list[nn.Module] = []
    n = patch_size.bit_length() - 1
    for i in range(n):
        cout = max(16, width // 2 ** (n - 1 - i))
        convs = 2 if i < n - 1 else 1
        for _ in range(convs):
            layers += _conv_gelu(cin, cout)
            cin = cout
        layers.append(nn.MaxPool2d(2))
    layers += _conv_gelu(cin, width)
    return nn.Sequential(*layers)


STEM_BUILDERS = {"conv": conv_stem, "cnn": cnn_stem}


class AttentionPool(nn.Module):
    """Multihead attention pooling (SigLIP's MAP head): one learned query attends over the
    tokens, then a residual MLP; returns (B, width)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.zeros(1, 1, width))
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.attn(self.probe.expand(len(tokens), -1, -1), tokens, tokens, need_weights=False)[0]
        return (x + self.mlp(self.norm(x)))[:, 0]


def _coordinates(x: Tensor) -> Tensor:
    """(B, 2, H, W): each pixel's column and row, scaled to [-1, 1] (CoordConv's channels)."""
    b, _, h, w = x.shape
    cols = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype).expand(h, w)
    rows = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)[:, None].expand(h, w)
    return torch.stack([cols, rows]).expand(b, 2, h, w)


class ImageTower(nn.Module):
    """ViT over non-overlapping patches (or, with depth 0 and the "cnn" stem, a plain CNN);
    pooled = mean, channel-wise max (`cfg.pool == "max"`) or attention pooling
    (`cfg.pool == "attn"`) of the final (normed) tokens."""

    def __init__(self, cfg: ImageTowerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        cin = 5 if cfg.coords else 3  # RGB, then each pixel's x and y
        self.patch_embed: nn.Module = (
            STEM_BUILDERS[cfg.stem](cfg.width, cfg.patch_size, cin)
            if cfg.stem in STEM_BUILDERS
            else nn.Conv2d(cin, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        )
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches, cfg.width))
        self.blocks = nn.ModuleList(
            Block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.width)
        self.pool = (
            AttentionPool(cfg.width, cfg.heads, cfg.mlp_ratio) if cfg.pool == "attn" else None
        )
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.pool is not None:
            nn.init.trunc_normal_(self.pool.probe, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """Encode images.

        Args:
            pixels: float (B, 3, S, S) in [0, 1], S = cfg.image_size.
        Returns:
            (pooled (B, width), patch tokens (B, N, width)), N = (S / patch_size)^2.
        """
        size = self.cfg.image_size
        if pixels.ndim != 4 or pixels.shape[1:] != (3, size, size):
            raise ValueError(f"expected pixels (B, 3, {size}, {size}), got {tuple(pixels.shape)}")
        x = pixels * 2.0 - 1.0  # [0, 1] -> [-1, 1]
        if self.cfg.coords:
            x = torch.cat([x, _coordinates(x)], dim=1)
        x = self.patch_embed(x)
        x = x.flatten(2).transpose(1, 2) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        tokens = self.norm(x)
        if self.pool is not None:
            return self.pool(tokens), tokens
        pooled = tokens.amax(dim=1) if self.cfg.pool == "max" else tokens.mean(dim=1)
        return pooled, tokens
