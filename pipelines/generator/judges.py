"""Judges for the generator's evaluation: a small CNN that reads a picture's per-pixel shape class
and colour, trained on ground-truth Concord Scenes renders, plus how its reading becomes a list of
(colour, shape) objects and a feature vector for a Fréchet distance.

The module is pure torch; data making, training and caching live in `judge_train.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor, nn

from pipelines.data.vocab import CLASS_NAMES, COLOURS

COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)  # colour head class k + 1 is COLOUR_NAMES[k]
N_SHAPES = len(CLASS_NAMES)  # shape head classes: vocab layout ids, 0 = background
N_COLOURS = len(COLOUR_NAMES) + 1  # colour head classes: 0 = background (no object)
MIN_PIXELS = 15  # a detection needs this many connected pixels (a medium cross at 32 px: ~30)
MAX_AREA = 0.35  # ... and covers at most this share of the image (a large one at 32 px: ~0.2)
MIN_FILL = 0.3  # ... and fills this share of its bounding box (every vocab shape fills > 0.45)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.SiLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.SiLU())


class JudgeNet(nn.Module):
    """A two-level U-Net with a shape head and a colour head (both per pixel).

    `features` (global mean and max of the bottleneck) is the Fréchet-distance embedding: it is
    the layer right before the per-pixel decoders, trained only on real renders, so it plays
    the part Inception's pool layer plays in FID.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.enc1 = _block(3, w)
        self.enc2 = _block(w, 2 * w)
        self.mid = _block(2 * w, 3 * w)
        self.up2 = nn.ConvTranspose2d(3 * w, 2 * w, 2, stride=2)
        self.dec2 = _block(4 * w, 2 * w)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = _block(2 * w, w)
        self.shape_head = nn.Conv2d(w, N_SHAPES, 1)
        self.colour_head = nn.Conv2d(w, N_COLOURS, 1)
        self.feature_dim = 6 * w

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B,3,H,W) in [0,1], H and W divisible by 4 -> shape logits (B,11,H,W),
        colour logits (B,10,H,W), features (B, feature_dim)."""
        h1 = self.enc1(x * 2 - 1)
        h2 = self.enc2(nn.functional.avg_pool2d(h1, 2))
        m = self.mid(nn.functional.avg_pool2d(h2, 2))
        feats = torch.cat([m.mean((2, 3)), m.amax((2, 3))], dim=1)
        d2 = self.dec2(torch.cat([self.up2(m), h2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), h1], dim=1))
        return self.shape_head(d1), self.colour_head(d1), feats


@dataclass(frozen=True)
class Detection:
    colour: str  # a name in COLOURS
    shape: str  # a name in CLASS_NAMES[1:]
    pixels: int


@dataclass(frozen=True)
class Reading:
    shapes: np.ndarray  # (B,H,W) uint8 class ids (CLASS_NAMES)
    colours: np.ndarray  # (B,H,W) uint8 colour-head ids (0 none, k+1 = COLOUR_NAMES[k])
    features: np.ndarray  # (B,F) float64
    images: np.ndarray  # (B,H,W,3) uint8, what was read


def to_tensor(images: np.ndarray) -> Tensor:
    """uint8 (B,H,W,3) -> float (B,3,H,W) in [0,1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def read(net: JudgeNet, images: np.ndarray, batch: int = 256) -> Reading:
    """Run the judge over uint8 images (B,H,W,3)."""
    net.eval()
    shapes, colours, feats = [], [], []
    for i in range(0, len(images), batch):
        s, c, f = net(to_tensor(images[i : i + batch]))
        shapes.append(s.argmax(1).to(torch.uint8).numpy())
        colours.append(c.argmax(1).to(torch.uint8).numpy())
        feats.append(f.double().numpy())
    return Reading(np.concatenate(shapes), np.concatenate(colours), np.concatenate(feats),
                   np.asarray(images))


_VOCAB_RGB = np.asarray([COLOURS[c] for c in COLOUR_NAMES], dtype=np.float64)


def nearest_colour(rgb: np.ndarray) -> str:
    """The vocab colour nearest (Euclidean in RGB) to a mean colour."""
    return COLOUR_NAMES[int(np.argmin(((_VOCAB_RGB - rgb) ** 2).sum(1)))]


def detections(reading: Reading, i: int, colour_mode: str = "head",
               min_pixels: int = MIN_PIXELS) -> list[Detection]:
    """Objects in image i: connected foreground regions, each named by its majority shape class
    and a colour (objects in the generator's scenes never touch, so a region is one object).
    Regions too small, too large or too ragged to be one object are not counted.

    Args:
        colour_mode: "head" (majority vote of the colour head over the region) or "mean"
            (the region's mean pixel colour mapped to the nearest vocab colour).
    """
    if colour_mode not in ("head", "mean"):
        raise ValueError(f"colour_mode must be 'head' or 'mean', got {colour_mode!r}")
    shapes = reading.shapes[i]
    labels, n = ndimage.label(shapes > 0)
    out = []
    for k in range(1, n + 1):
        region = labels == k
        size = int(region.sum())
        rows, cols = np.nonzero(region)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        if size < min_pixels or size > MAX_AREA * region.size or size < MIN_FILL * box:
            continue  # specks, and the ragged sprawl the judge may paint on noise
        cls = int(np.bincount(shapes[region], minlength=N_SHAPES)[1:].argmax()) + 1
        if colour_mode == "head":
            votes = np.bincount(reading.colours[i][region], minlength=N_COLOURS)[1:]
            colour = COLOUR_NAMES[int(votes.argmax())]
        else:
            colour = nearest_colour(reading.images[i][region].astype(np.float64).mean(0))
        out.append(Detection(colour, CLASS_NAMES[cls], size))
    return out


def present(dets: list[Detection], colour: str | None, shape: str) -> bool:
    """Whether a (colour, shape) object was detected; colour None matches any colour."""
    return any(d.shape == shape and (colour is None or d.colour == colour) for d in dets)
