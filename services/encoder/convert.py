"""Encoder wire <-> domain: request validation with field names, and ItemEncoding -> proto."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from concord.proto.v1 import common_pb2, encoder_pb2
from concord.wire import ModelId, model_ref, tensor_from_array
from services.encoder.servable import ItemEncoding


def encoding_proto(
    item: ItemEncoding, include_tokens: bool, normalize: bool
) -> encoder_pb2.Encoding:
    """The wire form of one result. The model's pooled output is unit length already;
    `normalize` re-normalises in float32 so callers can rely on it exactly."""
    pooled = item.pooled.astype(np.float32)
    if normalize:
        pooled = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
    encoding = encoder_pb2.Encoding(embedding=common_pb2.Embedding(values=pooled.tolist()))
    if include_tokens:
        encoding.tokens.CopyFrom(
            common_pb2.TokenEmbeddings(
                vectors=tensor_from_array(item.tokens),
                tokens=list(item.token_texts),
                spans=[common_pb2.Span(start=a, end=b) for a, b in item.spans],
            )
        )
    return encoding


def encode_response(
    items: Sequence[ItemEncoding], options: encoder_pb2.EncodeOptions, model: ModelId, dim: int
) -> encoder_pb2.EncodeResponse:
    return encoder_pb2.EncodeResponse(
        encodings=[encoding_proto(i, options.include_tokens, options.normalize) for i in items],
        model=model_ref(model),
        dim=dim,
    )
