"""Hypothesis strategies built from the proto descriptors: a random request message for any
RPC of Concord's services, plus raw bytes that may not parse at all.

Values lean towards the edges that broke services before (int64 bounds, NaN and infinity,
'²' and '①' as ids, filter paths such as `a[`, over-long texts, corrupt image files that
keep a valid header), but any value of the field's type can come out. Costly knobs (steps,
prompt counts) are bounded by the settings of the fuzzed deployment, not here, so a valid
request is as cheap as the models are tiny.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from typing import Any

import numpy as np
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st
from PIL import Image

MAX_DEPTH = 4  # message nesting (Struct -> Value -> Struct ...) beyond which fields stay unset
MAX_REPEATED = 3

# -------------------------------------------------------------------------------- scalars

_INT32_EDGES = [0, 1, -1, 2, 3, 7, 64, 2**31 - 1, -(2**31)]
_INT64_EDGES = [0, 1, -1, 2, 16, 2**32, 2**53, 2**63 - 1, 2**63 - 2, -(2**63)]
_UINT64_EDGES = [0, 1, 2, 2**32, 2**63, 2**64 - 1]
_FLOAT_EDGES = [0.0, -0.0, 0.5, 1.0, 3.0, -1.0, math.nan, math.inf, -math.inf, 1e300, 5e-324]
_TEXT_EDGES = [
    "",
    " ",
    "a red circle left of a blue square",
    "²",
    "①",
    "٣",
    "9" * 25,
    str(2**64),
    str(2**64 - 1),
    "6f1d3c1e-1c55-5b8e-9c7a-8a0f3e2d4b61",
    "a[",
    "a..b",
    'k"x',
    "a.b[0]",
    "\x00",
    "x" * 300,
    "zorv",
    "object",
    "models:/concord-encoder@production",
    "tiny-generator",
    "../../etc/passwd",
    "é" * 50,
]


def _ints(edges: list[int], lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def _floats(width: int) -> st.SearchStrategy[float]:
    edges = [f for f in _FLOAT_EDGES if width == 64 or not math.isfinite(f) or abs(f) < 1e38]
    return st.one_of(st.sampled_from(edges), st.floats(width=width))  # type: ignore[arg-type]


TEXT = st.one_of(st.sampled_from(_TEXT_EDGES), st.text(max_size=40))


# -------------------------------------------------------------------------------- images


def _encoded(fmt: str, size: int = 16) -> bytes:
    rng = np.random.default_rng(size)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_with_header(width: int, height: int, mode: int = 2, plte: bytes | None = None) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0)
    chunks = _chunk(b"IHDR", ihdr)
    if plte is not None:
        chunks += _chunk(b"PLTE", plte)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunks
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 20))
        + _chunk(b"IEND", b"")
    )


VALID_IMAGES = [_encoded("PNG"), _encoded("JPEG"), _encoded("WEBP"), _encoded("PNG", 40)]
CRAFTED_IMAGES = [
    _png_with_header(4, 4, mode=3, plte=b"\x00" * 7),  # PLTE length not a multiple of 3
    _png_with_header(100_000, 100_000),  # a decompression bomb by its header
    _png_with_header(0, 5),
    b"RIFF\x20\x00\x00\x00WEBPVP8 " + b"\xff" * 40,
    b"BM" + b"\x00" * 60,
    b"DDS " + b"\x7c\x00\x00\x00" + b"\xff" * 120,
    b"\xff\xd8\xff",
    _encoded("GIF"),
    _encoded("BMP"),
    VALID_IMAGES[0][:60],
]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID_IMAGES)))
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


IMAGE_BYTES = st.one_of(
    st.sampled_from(VALID_IMAGES),
    st.sampled_from(CRAFTED_IMAGES),
    _mutated(),
    st.binary(max_size=64),
)
MEDIA_TYPES = st.sampled_from(["", "image/png", "image/jpeg", "image/webp", "image/gif", "x/y"])


# -------------------------------------------------------------------------------- messages

_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_INT32: _ints(_INT32_EDGES, -(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: _ints(_INT32_EDGES, -(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: _ints(_INT32_EDGES, -(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: _ints(_INT64_EDGES, -(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: _ints(_INT64_EDGES, -(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: _ints(_INT64_EDGES, -(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: _ints([0, 1, 2, 2**32 - 1], 0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: _ints([0, 1, 2, 2**32 - 1], 0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: _ints(_UINT64_EDGES, 0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: _ints(_UINT64_EDGES, 0, 2**64 - 1),
    FieldDescriptor.TYPE_DOUBLE: _floats(64),
    FieldDescriptor.TYPE_FLOAT: _floats(32),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_STRING: TEXT,
}


# Plausible values by field name, drawn twice as often as the field type's generic ones, so
# that many requests get past the first check and reach the model, the store and the bus.
_CAPTIONS = st.sampled_from(
    ["a red circle", "two green stars left of a blue square", "a grey triangle", "zorv object"]
)
HINTS: dict[str, st.SearchStrategy[Any]] = {
    "collection": st.sampled_from(["", "fuzz", "fuzz-b"]),
    "name": st.sampled_from(["fuzz", "fuzz-b", "zorv"]),
    "text": _CAPTIONS,
    "texts": _CAPTIONS,
    "prompts": _CAPTIONS,
    "caption": _CAPTIONS,
    "concept": st.sampled_from(["", "zorv", "blick"]),
    "class_word": st.sampled_from(["", "object", "dog"]),
    "id": st.one_of(st.sampled_from(["", "7", str(2**64 - 1)]), st.uuids().map(str)),
    "ids": st.one_of(st.sampled_from(["7", "8"]), st.uuids().map(str)),
    "field": st.sampled_from(["colour", "rank", "a.b", "a[]", "tags[0]", '"k x"']),
    "keyword": st.sampled_from(["red", "blue"]),
    "steps": st.integers(1, 3),  # 0 (the default) comes from the generic integers
    "top_k": st.integers(0, 20),
    "page_size": st.integers(0, 5),
    "seed": st.one_of(st.integers(-5, 5), st.sampled_from([2**63 - 1, 2**63 - 2, -(2**63)])),
    # payload numbers (google.protobuf.Value): mostly ordinary, sometimes what JSON cannot hold
    "number_value": st.one_of(
        st.floats(-1e6, 1e6), st.floats(-1e6, 1e6), st.sampled_from([math.nan, math.inf])
    ),
    "guidance_scale": st.floats(0, 10),
    "width": st.sampled_from([0, 16]),
    "height": st.sampled_from([0, 16]),
    "preview_every": st.integers(0, 2),
    "alpha": st.floats(0, 1),
    "directions": st.integers(0, 2),
    "threshold": st.floats(0, 1),
    "data": st.sampled_from(VALID_IMAGES),
    "media_type": st.sampled_from(["", "image/png"]),
    "key": st.sampled_from(["colour", "rank", "tags", "a.b"]),  # payload keys
}


def _field_value(field: FieldDescriptor, depth: int, plausible: bool) -> st.SearchStrategy[Any]:
    hint = HINTS.get(field.name)
    if plausible and hint is not None and field.type != FieldDescriptor.TYPE_MESSAGE:
        return hint
    generic = _generic_value(field, depth, plausible)
    if hint is None or field.type == FieldDescriptor.TYPE_MESSAGE:
        return generic
    return st.one_of(hint, hint, generic)


def _generic_value(field: FieldDescriptor, depth: int, plausible: bool) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _build(field.message_type, depth + 1, plausible)
    if field.type == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        if plausible:
            return st.sampled_from(known)
        return st.one_of(st.sampled_from(known), st.integers(-3, 50))  # open enums
    if field.type == FieldDescriptor.TYPE_BYTES:
        return IMAGE_BYTES if field.name == "data" else st.binary(max_size=64)
    if field.name == "media_type":
        return st.one_of(MEDIA_TYPES, TEXT)
    return _SCALARS[field.type]


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _is_repeated(field: FieldDescriptor) -> bool:
    # `label` is deprecated in newer protobuf releases; `is_repeated` is missing in older ones.
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


@st.composite
def _build(draw: st.DrawFn, descriptor: Descriptor, depth: int, plausible: bool) -> Message:
    message = message_factory.GetMessageClass(descriptor)()
    if depth > MAX_DEPTH:
        return message
    chosen = {  # a plausible request sets one member of each oneof, others may set none
        oneof.name: draw(st.sampled_from([*([] if plausible else [None]), *oneof.fields]))
        for oneof in descriptor.oneofs
    }
    for field in descriptor.fields:
        oneof = field.containing_oneof
        if oneof is not None:
            if chosen[oneof.name] is not field:
                continue
        elif not draw(st.booleans()):
            continue  # left at its default, as most callers leave most fields
        if field.name == "model" and (plausible or draw(st.integers(0, 3))):
            continue  # a model named at random is FAILED_PRECONDITION before any work
        unhinted = field.name not in HINTS and field.type != FieldDescriptor.TYPE_MESSAGE
        if plausible and unhinted and draw(st.integers(0, 3)):
            continue  # a plausible request leaves most knobs it has no hint for alone
        target = getattr(message, field.name) if _is_repeated(field) else None
        if _is_map(field):
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            entries = draw(
                st.dictionaries(
                    _field_value(key_field, depth, plausible),
                    _field_value(value_field, depth, plausible),
                    max_size=MAX_REPEATED,
                )
            )
            for key, value in entries.items():
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    target[key].CopyFrom(value)  # type: ignore[index]
                else:
                    target[key] = value  # type: ignore[index]
        elif target is not None:
            size = (1 if plausible else 0, MAX_REPEATED)
            values = draw(
                st.lists(_field_value(field, depth, plausible), min_size=size[0], max_size=size[1])
            )
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for value in values:
                    target.add().CopyFrom(value)
            else:
                target.extend(values)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(message, field.name).CopyFrom(draw(_field_value(field, depth, plausible)))
        else:
            setattr(message, field.name, draw(_field_value(field, depth, plausible)))
    return message


def messages(descriptor: Descriptor, plausible: bool = False) -> st.SearchStrategy[Message]:
    """Random, well-formed messages of `descriptor`'s type (any field may be set or not).

    Args:
        plausible: draw only the hinted, realistic values where a field has them (and leave
            most other scalars unset), so most requests pass validation and reach the work.
    """
    return _build(descriptor, 0, plausible)


@st.composite
def _corrupted(draw: st.DrawFn, descriptor: Descriptor) -> bytes:
    data = bytearray(draw(messages(descriptor)).SerializeToString() or b"\x08\x01")
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


def request_bytes(method: MethodDescriptor) -> st.SearchStrategy[bytes]:
    """What a caller may put on the wire for `method`: mostly serialized random requests,
    sometimes a serialized request with bytes flipped, sometimes random bytes."""
    return st.one_of(
        messages(method.input_type).map(lambda m: m.SerializeToString()),
        messages(method.input_type).map(lambda m: m.SerializeToString()),
        _corrupted(method.input_type),
        st.binary(max_size=128),
    )
