"""Proto <-> SDK type converters shared by every client (and the services that answer them):
tensors, payloads, model refs, encodings, hits, and gRPC errors back into domain errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format, struct_pb2

from concord.clients.types import (
    CollectionSummary,
    Embedding,
    Encoded,
    Hit,
    ModelId,
    SearchResult,
    TokenVectors,
)
from concord.errors import (
    ConcordError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from concord.proto.v1 import common_pb2, encoder_pb2, retrieval_pb2

MODALITY_NAMES = {
    common_pb2.MODALITY_IMAGE: "image",
    common_pb2.MODALITY_TEXT: "text",
    common_pb2.MODALITY_UNSPECIFIED: "",
}
MODALITY_ENUMS = {name: enum for enum, name in MODALITY_NAMES.items()}

FilterSpec = Mapping[str, str | int | bool | Sequence[str]]


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


# ----------------------------------------------------------------------------- results


def embedding_from_proto(encoding: encoder_pb2.Encoding) -> Embedding:
    vector = np.asarray(encoding.embedding.values, dtype=np.float32)
    if not encoding.HasField("tokens"):
        return Embedding(vector)
    t = encoding.tokens
    tokens = TokenVectors(
        vectors=array_from_tensor(t.vectors, "tokens.vectors"),
        tokens=tuple(t.tokens),
        spans=tuple((s.start, s.end) for s in t.spans),
    )
    return Embedding(vector, tokens)


def encoded_from_proto(response: encoder_pb2.EncodeResponse) -> Encoded:
    return Encoded(
        embeddings=tuple(embedding_from_proto(e) for e in response.encodings),
        model=model_id(response.model),
        dim=response.dim,
    )


def hit_from_proto(hit: retrieval_pb2.Hit) -> Hit:
    return Hit(
        id=hit.id,
        score=float(hit.score),
        modality=MODALITY_NAMES.get(hit.modality, ""),  # type: ignore[arg-type]
        payload=payload_to_dict(hit.payload),
    )


def search_result_from_proto(response: retrieval_pb2.SearchResponse) -> SearchResult:
    return SearchResult(
        hits=tuple(hit_from_proto(h) for h in response.hits),
        model=model_id(response.model),
        collection=response.collection,
    )


def collection_from_proto(info: retrieval_pb2.CollectionInfo) -> CollectionSummary:
    return CollectionSummary(
        name=info.name,
        model=model_id(info.model),
        dim=info.dim,
        points=info.points,
        has_tokens=info.has_tokens,
    )


def filter_from_mapping(spec: FilterSpec | None) -> retrieval_pb2.Filter | None:
    """Equality filter: every key must match its value (a list of strings: any of them).

    Returns:
        The proto Filter, or None for no filter.
    """
    if not spec:
        return None
    conditions = []
    for key, value in spec.items():
        if isinstance(value, bool):
            conditions.append(retrieval_pb2.Condition(field=key, flag=value))
        elif isinstance(value, int):
            conditions.append(retrieval_pb2.Condition(field=key, integer=value))
        elif isinstance(value, str):
            conditions.append(retrieval_pb2.Condition(field=key, keyword=value))
        else:
            anyof = retrieval_pb2.AnyOf(keywords=[str(v) for v in value])
            conditions.append(retrieval_pb2.Condition(field=key, any=anyof))
    return retrieval_pb2.Filter(must=conditions)


# ----------------------------------------------------------------------------- errors


def error_from_rpc(error: grpc.RpcError) -> ConcordError:
    """Turn a failed call into the domain error the server raised (field violations kept).

    Returns:
        InvalidArgument, NotFound, FailedPrecondition, ResourceExhausted or Unavailable for
        those codes; a plain ConcordError (status INTERNAL, ...) otherwise.
    """
    from concord.serving.errors import field_violations

    code = error.code() if hasattr(error, "code") else None
    details = (error.details() if hasattr(error, "details") else "") or str(error)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        found = field_violations(error)
        violations = [FieldViolation(f, d) for f, d in found.items()]
        return InvalidArgument.from_violations(violations or [FieldViolation("", details)])
    simple: dict[grpc.StatusCode, type[ConcordError]] = {
        grpc.StatusCode.NOT_FOUND: NotFound,
        grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
        grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
        grpc.StatusCode.UNAVAILABLE: Unavailable,
    }
    cls = simple.get(code, ConcordError)  # type: ignore[arg-type]
    err = cls(details)
    if cls is ConcordError and code is not None:
        err.status = code.name  # e.g. DEADLINE_EXCEEDED, UNAUTHENTICATED, INTERNAL
    return err
