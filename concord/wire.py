"""Wire types shared by the SDK (`concord.clients`) and the services that answer it: model ids,
image bytes, modality names, and proto conversions of tensors, payloads, model refs and samplers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
from google.protobuf import json_format, struct_pb2

from concord.errors import InvalidArgument
from concord.proto.v1 import common_pb2, generator_pb2

Modality: TypeAlias = Literal["image", "text", ""]  # "" when unknown

MODALITY_NAMES = {
    common_pb2.MODALITY_IMAGE: "image",
    common_pb2.MODALITY_TEXT: "text",
    common_pb2.MODALITY_UNSPECIFIED: "",
}
MODALITY_ENUMS = {name: enum for enum, name in MODALITY_NAMES.items()}


@dataclass(frozen=True)
class ModelId:
    """The model that served a call: registry name and version."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class ImageData:
    """Encoded image bytes with an optional declared media type ("image/png")."""

    data: bytes
    media_type: str = ""


# ----------------------------------------------------------------------------- tensors


def tensor_from_array(array: np.ndarray) -> common_pb2.Tensor:
    """Returns: a float32, row-major, little-endian Tensor of `array`."""
    data = np.ascontiguousarray(array, dtype="<f4")
    return common_pb2.Tensor(
        dtype=common_pb2.DTYPE_FLOAT32, shape=list(data.shape), data=data.tobytes()
    )


def array_from_tensor(tensor: common_pb2.Tensor, field: str = "tensor") -> np.ndarray:
    """Returns: the Tensor as a float32 numpy array. Raises: InvalidArgument (`field`)."""
    if tensor.dtype != common_pb2.DTYPE_FLOAT32:
        raise InvalidArgument(f"{field}.dtype", "only DTYPE_FLOAT32 is supported")
    shape = tuple(int(s) for s in tensor.shape)
    expected = int(np.prod(shape)) * 4 if shape else 0
    if len(tensor.data) != expected:
        raise InvalidArgument(
            f"{field}.data", f"{len(tensor.data)} bytes do not fit shape {list(shape)}"
        )
    return np.frombuffer(tensor.data, dtype="<f4").reshape(shape).astype(np.float32)


# ----------------------------------------------------------------------------- payloads


def _plain(value: Any) -> Any:
    # google.protobuf.Struct stores every number as a double; give integral ones back as int
    # so integer filters and equality behave as the caller wrote them.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def payload_to_dict(payload: common_pb2.Payload) -> dict[str, Any]:
    """Returns: the payload's fields as plain JSON values (integral numbers as int)."""
    return _plain(json_format.MessageToDict(payload.fields)) if payload.HasField("fields") else {}


def payload_from_dict(values: Mapping[str, Any]) -> common_pb2.Payload:
    """Returns: a Payload holding `values` (JSON-able: str, numbers, bools, lists, dicts)."""
    fields = struct_pb2.Struct()
    fields.update(dict(values))
    return common_pb2.Payload(fields=fields)


# ----------------------------------------------------------------------------- models


def model_id(ref: common_pb2.ModelRef) -> ModelId:
    return ModelId(ref.name, ref.version)


def model_ref(model: ModelId) -> common_pb2.ModelRef:
    return common_pb2.ModelRef(name=model.name, version=model.version)


# ----------------------------------------------------------------------------- samplers

SAMPLER_PREFIX = "SAMPLER_"


def sampler_value(name: str) -> int:
    """Returns: the proto `Sampler` enum value of a sampler name ("ddim" -> SAMPLER_DDIM).

    Raises:
        ValueError: the enum has no such sampler.
    """
    return generator_pb2.Sampler.Value(SAMPLER_PREFIX + name.upper())
