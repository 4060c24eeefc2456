"""Safe image decoding: limits on bytes, pixels and formats before any pixel is trusted.

Every image that enters Concord over gRPC or Kafka passes through `decode_image`, which
rejects decompression bombs, truncated files and unexpected formats with an
InvalidArgument naming the request field. Out: `encode_png`, and `colour_layout`, which paints
a class-id layout with the one palette every tool (CLI, data sheets, training grids) uses.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from concord.errors import FieldViolation, InvalidArgument

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
# Distinct colours for layout class ids (id 0 = background: light grey); cycles beyond 16.
LAYOUT_PALETTE = np.array(
    [
        (230, 230, 230),
        (228, 26, 28),
        (55, 126, 184),
        (77, 175, 74),
        (152, 78, 163),
        (255, 127, 0),
        (255, 215, 0),
        (166, 86, 40),
        (247, 129, 191),
        (0, 128, 128),
        (90, 90, 90),
        (31, 31, 120),
        (128, 0, 0),
        (0, 200, 200),
        (120, 160, 20),
        (0, 0, 0),
    ],
    dtype=np.uint8,
)
LAYOUT_PALETTE.flags.writeable = False  # shared by every caller: nobody may repaint it


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024  # encoded size
    max_pixels: int = 4096 * 4096  # width * height after decoding
    max_side: int = 8192  # longest side in pixels
    formats: frozenset[str] = frozenset({"PNG", "JPEG", "WEBP"})  # PIL format names


DEFAULT_LIMITS = ImageLimits()
# Decoded pixels one request may hold at once: 4 images at the per-image maximum, about 200 MB
# of RGB. Without it, one 60 MB request of small-file, large-canvas PNGs could decode ~1,000
# images of 4096x4096 (~65 GB) before any limit applied.
MAX_REQUEST_PIXELS = 4 * 4096 * 4096


class PixelBudget:
    """The decoded pixels one request may use, spent image by image from their headers."""

    def __init__(self, limit: int = MAX_REQUEST_PIXELS) -> None:
        self.limit = limit
        self.spent = 0

    def charge(self, pixels: int, field: str) -> None:
        """Raises: InvalidArgument naming `field` when `pixels` more would exceed the limit."""
        if self.spent + pixels > self.limit:
            raise InvalidArgument(
                field,
                f"the request's images total more than {self.limit} pixels "
                f"({self.spent} before this one, which has {pixels})",
            )
        self.spent += pixels


def decode_image(
    data: bytes,
    media_type: str = "",
    *,
    field: str = "image",
    limits: ImageLimits = DEFAULT_LIMITS,
    budget: PixelBudget | None = None,
) -> Image.Image:
    """Decode untrusted bytes into an RGB PIL image.

    Args:
        data: the encoded file.
        media_type: the declared type ("image/png"); checked against the bytes when given.
        field: the request field path, used in error messages ("items[2].image").
        limits: size, pixel and format limits.
        budget: the request's decoded-pixel budget, charged from the header before decoding.
    Returns:
        A fully loaded RGB image.
    Raises:
        InvalidArgument: empty, too large, not an image, wrong or disallowed format,
            too many pixels, or truncated.
    """
    if not data:
        raise InvalidArgument(f"{field}.data", "is empty")
    if len(data) > limits.max_bytes:
        raise InvalidArgument(
            f"{field}.data", f"is {len(data)} bytes; the limit is {limits.max_bytes}"
        )
    try:
        # Image.open reads only the header: size is checked before pixels are decoded.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except MemoryError:
        raise
    except Exception:  # any decoder error on untrusted bytes is bad input
        # PIL's plugins raise what their parsers hit (SyntaxError for a bad PLTE length,
        # struct.error, EOFError, ValueError, ...): all of them mean "not a readable image".
        raise InvalidArgument(f"{field}.data", "is not a readable image") from None
    fmt = image.format or ""
    if fmt not in limits.formats:
        allowed = ", ".join(sorted(FORMATS[f] for f in limits.formats if f in FORMATS))
        raise InvalidArgument(
            f"{field}.data", f"format {fmt or 'unknown'} is not allowed ({allowed})"
        )
    if media_type and FORMATS.get(fmt) != media_type.lower():
        raise InvalidArgument(
            f"{field}.media_type",
            f"says {media_type[:64]!r} but the bytes are {FORMATS.get(fmt, fmt)}",
        )
    width, height = image.size
    if width < 1 or height < 1 or max(width, height) > limits.max_side:
        raise InvalidArgument(
            f"{field}.data", f"size {width}x{height} is outside 1..{limits.max_side}"
        )
    if width * height > limits.max_pixels:
        raise InvalidArgument(
            f"{field}.data",
            f"{width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}",
        )
    if budget is not None:
        budget.charge(width * height, f"{field}.data")
    try:
        image.load()  # truncated or corrupt data fails here, not later inside a model
        return image.convert("RGB")
    except MemoryError:
        raise
    except Exception as err:  # as above: a decoder error is bad input
        reason = str(err)[:200] or type(err).__name__
        raise InvalidArgument(f"{field}.data", f"is corrupt or truncated ({reason})") from None


def encode_png(image: Image.Image | np.ndarray) -> bytes:
    """Encode an image (PIL or HxWxC uint8 array) as PNG bytes without metadata."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


class EncodedImage(Protocol):
    """What `decode_images` reads: the wire `concord.v1.Image` has these fields."""

    data: bytes
    media_type: str


def decode_images(
    images: Sequence[EncodedImage], field: str = "images", budget: PixelBudget | None = None
) -> list[Image.Image]:
    """Decode every image safely, within one request's pixel budget (a new one by default).

    Raises:
        InvalidArgument: naming each bad one (`images[2].data`, `images[0].media_type`), all
            of them at once.
    """
    decoded: list[Image.Image] = []
    violations: list[FieldViolation] = []
    budget = budget if budget is not None else PixelBudget()
    for i, image in enumerate(images):
        try:
            decoded.append(
                decode_image(image.data, image.media_type, field=f"{field}[{i}]", budget=budget)
            )
        except InvalidArgument as err:
            violations.extend(err.violations)
    if violations:
        # The error's traceback keeps this frame alive until a gc cycle: drop the decoded
        # images now, or a refused request pins up to its whole pixel budget.
        decoded.clear()
        raise InvalidArgument.from_violations(violations)
    return decoded


def layout_colour(class_id: int) -> tuple[int, int, int]:
    """Returns: the RGB colour of one class id (e.g. for a legend swatch)."""
    r, g, b = (int(c) for c in LAYOUT_PALETTE[class_id % len(LAYOUT_PALETTE)])
    return r, g, b


def colour_layout(layout: np.ndarray) -> np.ndarray:
    """Paint a class-id layout with `LAYOUT_PALETTE`.

    Args:
        layout: (H, W) integer class ids (any integer array-like).

    Returns:
        uint8 (H, W, 3), each class id painted with its palette colour.
    """
    return LAYOUT_PALETTE[np.asarray(layout).astype(np.int64) % len(LAYOUT_PALETTE)]
