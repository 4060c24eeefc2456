"""Image thumbnails kept in a point's payload (opt-in at Index, always on the ingest worker):
the pixels a search with `explain` sends to the scorer, since the vectors alone cannot be
turned back into an image. PNG, longest side <= MAX_SIDE, base64 under THUMBNAIL_KEY."""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Mapping
from typing import Any

from PIL import Image

from concord.media import decode_image
from concord.wire import ImageData

THUMBNAIL_KEY = "thumbnail"  # reserved payload key (indexing.RESERVED_PAYLOAD)
MAX_SIDE = 224  # pixels: CLIP-size inputs keep all they need; 64 px scenes stay lossless
MEDIA_TYPE = "image/png"


def make(image: ImageData, field: str = "image") -> str:
    """Returns: the base64 PNG thumbnail of an image. Raises: InvalidArgument (`field`.data)
    when the bytes are not a safe image (the encoder refuses those first)."""
    picture = decode_image(image.data, image.media_type, field=field)
    if max(picture.size) > MAX_SIDE:
        picture.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def read(payload: Mapping[str, Any] | None) -> ImageData | None:
    """Returns: the thumbnail stored in a hit's payload, or None when it has none."""
    value = (payload or {}).get(THUMBNAIL_KEY)
    if not isinstance(value, str) or not value:
        return None
    try:
        return ImageData(base64.b64decode(value, validate=True), MEDIA_TYPE)
    except (binascii.Error, ValueError):
        return None


def strip(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Returns: the payload without the thumbnail (hits never return it)."""
    return {k: v for k, v in payload.items() if k != THUMBNAIL_KEY}
