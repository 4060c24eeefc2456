"""Proto <-> SDK result converters shared by every client: encodings, hits, collections, filters,
and gRPC errors back into domain errors. Tensors, payloads and model refs live in `concord.wire`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc
import numpy as np

from concord.clients.types import (
    CollectionSummary,
    Embedding,
    Encoded,
    Hit,
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
from concord.proto.v1 import encoder_pb2, retrieval_pb2
from concord.wire import MODALITY_NAMES, array_from_tensor, model_id, payload_to_dict

FilterSpec = Mapping[str, str | int | bool | Sequence[str]]


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
