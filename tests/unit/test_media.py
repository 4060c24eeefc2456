"""Safe decoding rejects what could hurt a service and names the field."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from concord.errors import InvalidArgument
from concord.media import (
    LAYOUT_PALETTE,
    ImageLimits,
    colour_layout,
    decode_image,
    encode_png,
    layout_colour,
)


def _png(width: int = 8, height: int = 6) -> bytes:
    rng = np.random.default_rng(0)
    return encode_png(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size: what a decompression bomb looks like."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_roundtrip_keeps_pixels() -> None:
    array = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    image = decode_image(encode_png(array), "image/png")
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), array)


def test_grayscale_becomes_rgb() -> None:
    buffer = io.BytesIO()
    Image.new("L", (3, 3), 7).save(buffer, format="PNG")
    assert decode_image(buffer.getvalue()).mode == "RGB"


@pytest.mark.parametrize(
    ("data", "media_type", "field", "needle"),
    [
        (b"", "", "items[0].image.data", "empty"),
        (b"not an image at all", "", "items[0].image.data", "not a readable image"),
        (_png(), "image/jpeg", "items[0].image.media_type", "image/png"),
        (_png()[:60], "", "items[0].image.data", "corrupt or truncated"),
    ],
)
def test_bad_bytes_name_the_field(data: bytes, media_type: str, field: str, needle: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_image(data, media_type, field="items[0].image")
    assert caught.value.violations[0].field == field
    assert needle in caught.value.violations[0].description


def test_decompression_bomb_rejected_before_decoding() -> None:
    bomb = _png_header_only(60000, 60000)
    with pytest.raises(InvalidArgument) as caught:
        decode_image(bomb)
    assert caught.value.violations[0].field == "image.data"


def test_limits_on_bytes_pixels_and_format() -> None:
    png = _png(40, 40)
    with pytest.raises(InvalidArgument, match="limit is 100"):
        decode_image(png, limits=ImageLimits(max_bytes=100))
    with pytest.raises(InvalidArgument, match="pixels"):
        decode_image(png, limits=ImageLimits(max_pixels=1000))
    gif = io.BytesIO()
    Image.new("RGB", (4, 4)).save(gif, format="GIF")
    with pytest.raises(InvalidArgument, match="format GIF is not allowed"):
        decode_image(gif.getvalue())


def test_png_encoding_is_deterministic() -> None:
    assert _png() == _png()


def test_one_layout_palette_paints_class_ids_and_cycles() -> None:
    layout = np.array([[0, 1], [2, len(LAYOUT_PALETTE) + 1]])
    rgb = colour_layout(layout)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] == LAYOUT_PALETTE[0]).all()
    assert (rgb[1, 1] == rgb[0, 1]).all()  # ids past the palette wrap around
    assert layout_colour(2) == tuple(int(c) for c in rgb[1, 0])
    assert len({tuple(c) for c in LAYOUT_PALETTE.tolist()}) == len(LAYOUT_PALETTE)
