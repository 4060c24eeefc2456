"""Shape masks as implicit functions of object-local coordinates.

`u, v` run over [-1, 1] across the object's bounding box (v grows downwards, like image
rows); every mask fits in that box, which is what placement relies on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipelines.data.vocab import NOVEL_SHAPE, SHAPES

MaskFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 1.0


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Slightly inset so a square's area is close to a circle's of the same size word.
    return (np.abs(u) <= 0.86) & (np.abs(v) <= 0.86)


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (v <= 0.8) & (v >= -1.0 + 1.8 / 0.98 * np.abs(u))


def _diamond(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.abs(u) + np.abs(v) <= 1.0


def _hexagon(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    s3 = np.sqrt(3.0)
    return (np.abs(v) <= s3 / 2) & (s3 * np.abs(u) + np.abs(v) <= s3)


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r = np.hypot(u, v)
    # Angle measured from "up" so one tip points to the top of the image.
    theta = np.arctan2(u, -v)
    frac = (theta / (2 * np.pi / 5)) % 1.0
    tip = 1.0 - np.abs(2.0 * frac - 1.0)  # 0 between tips, 1 at a tip
    return r <= 0.42 + 0.58 * tip**1.6


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.32) & (av <= 0.95)) | ((av <= 0.32) & (au <= 0.95))


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x = u * 1.2
    y = -v * 1.25 + 0.2
    return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0


def _crescent(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u * u + v * v <= 1.0) & ((u - 0.45) ** 2 + (v + 0.1) ** 2 > 0.78**2)


MASKS: dict[str, MaskFn] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "diamond": _diamond,
    "hexagon": _hexagon,
    "star": _star,
    "cross": _cross,
    "heart": _heart,
    "crescent": _crescent,
}
assert tuple(MASKS) == SHAPES


def blob_mask(params: tuple[float, ...]) -> MaskFn:
    """A star-convex procedural shape: radius = base + sum_k a_k cos(k * theta + phi_k).

    Args:
        params: flat (a_2, phi_2, a_3, phi_3, ...) harmonic amplitudes and phases.
    Returns:
        A mask function over local coordinates.
    """
    pairs = [(params[i], params[i + 1]) for i in range(0, len(params), 2)]
    amp = sum(abs(a) for a, _ in pairs)
    base = 1.0 - amp  # keeps the outline inside the unit box

    def mask(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        theta = np.arctan2(v, u)
        edge = np.full_like(u, base)
        for k, (a, phi) in enumerate(pairs, start=2):
            edge = edge + a * np.cos(k * theta + phi)
        return np.hypot(u, v) <= edge

    return mask


def mask_fn(shape: str, params: tuple[float, ...] = ()) -> MaskFn:
    """The mask function of a named shape (`blob` needs `params`)."""
    if shape == NOVEL_SHAPE:
        if not params:
            raise ValueError("a blob shape needs its harmonic params")
        return blob_mask(params)
    try:
        return MASKS[shape]
    except KeyError:
        raise ValueError(f"unknown shape {shape!r}") from None
