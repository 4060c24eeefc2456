"""Encoder wire <-> domain: request validation with field names, and ItemEncoding -> proto."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from concord.proto.v1 import encoder_pb2
from concord.wire import ModelId, model_ref, tensor_from_array
from services.encoder.servable import ItemEncoding


def encoding_proto(
    item: ItemEncoding, include_tokens: bool, normalize: bool
) -> encoder_pb2.Encoding:
    """The wire form of one result. The model's pooled output is unit length already;
    `normalize` re-normalises in float32 so callers can rely on it exactly."""
    encoding = encoder_pb2.Encoding()
    fill_encoding(encoding, item, include_tokens, normalize)
    return encoding


def fill_encoding(
    encoding: encoder_pb2.Encoding, item: ItemEncoding, include_tokens: bool, normalize: bool
) -> None:
    """Write one result into `encoding` (a field of the response: no copy of a message)."""
    pooled = np.asarray(item.pooled, dtype=np.float32)
    if normalize:
        pooled = pooled / np.float32(max(float(np.linalg.norm(pooled)), 1e-12))
    encoding.embedding.values.extend(pooled.tolist())
    if include_tokens:
        tokens = encoding.tokens
        tokens.vectors.CopyFrom(tensor_from_array(item.tokens))
        tokens.tokens.extend(item.token_texts)
        for a, b in item.spans:
            tokens.spans.add(start=a, end=b)


def encode_response(
    items: Sequence[ItemEncoding], options: encoder_pb2.EncodeOptions, model: ModelId, dim: int
) -> encoder_pb2.EncodeResponse:
    response = encoder_pb2.EncodeResponse(model=model_ref(model), dim=dim)
    include_tokens, normalize = options.include_tokens, options.normalize
    for item in items:
        fill_encoding(response.encodings.add(), item, include_tokens, normalize)
    return response
