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


# ------------------------------------------------ crafted and mutated files (issue 18)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _palette_png_with_bad_plte() -> bytes:
    """A paletted PNG whose PLTE length is not a multiple of 3: PIL raises SyntaxError in
    Image.open, before the guarded load()."""
    ihdr = struct.pack(">IIBBBBB", 4, 4, 8, 3, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"PLTE", b"\x00" * 7)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 20))
        + _chunk(b"IEND", b"")
    )


def _encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


CRAFTED = {
    "png with a bad PLTE length": _palette_png_with_bad_plte(),
    "webp magic then garbage": b"RIFF\x20\x00\x00\x00WEBPVP8 " + b"\xff" * 40,
    "bmp header only": b"BM" + b"\x00" * 60,
    "dds header": b"DDS " + b"\x7c\x00\x00\x00" + b"\xff" * 120,
    "png with a 2 MiB zTXt chunk": _png()[:-12] + _chunk(b"zTXt", b"k\x00\x00" + b"\x00" * (2 << 20))
    + _chunk(b"IEND", b""),
    "jpeg soi then eof": b"\xff\xd8\xff",
    "gif (not allowed)": _encoded("GIF"),
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_files_are_invalid_argument(name: str) -> None:
    """Each decodes or is refused with InvalidArgument naming the field; nothing else."""
    try:
        decode_image(CRAFTED[name], field="items[0].image")
    except InvalidArgument as err:
        assert err.violations[0].field.startswith("items[0].image")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_mutated_files_never_escape_invalid_argument(fmt: str) -> None:
    """1-4 byte mutations of valid files (a small seeded fuzz; `make fuzz` runs longer):
    they decode to an RGB image or raise InvalidArgument, never anything else."""
    base = _encoded(fmt)
    rng = np.random.default_rng(7)
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(300):
        data = bytearray(base)
        for _ in range(int(rng.integers(1, 5))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        try:
            image = decode_image(bytes(data))
            assert image.mode == "RGB"
            outcomes["decoded"] += 1
        except InvalidArgument:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0  # the mutations did reach the error paths


def test_a_request_pixel_budget_is_charged_from_headers() -> None:
    from concord.media import PixelBudget, decode_images

    class Encoded:
        def __init__(self, data: bytes) -> None:
            self.data, self.media_type = data, ""

    budget = PixelBudget(limit=3 * 8 * 6)
    images = [Encoded(_png()) for _ in range(4)]  # 4 images of 8x6: one over the budget
    with pytest.raises(InvalidArgument) as caught:
        decode_images(images, "images", budget)
    assert [v.field for v in caught.value.violations] == ["images[3].data"]
    assert "total more than 144 pixels" in caught.value.violations[0].description
    assert len(decode_images(images[:3], "images")) == 3  # the default budget is per call
