"""Typed clients of the encoder service: `EncoderClient` (blocking, for product teams and
bus workers) and `AsyncEncoderClient` (grpc.aio, for services that call it from a handler)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

import grpc
from PIL import Image

from concord.clients.convert import encoded_from_proto, error_from_rpc
from concord.clients.types import Encoded
from concord.proto.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc
from concord.wire import ImageData, ModelId, model_id

ImageInput: TypeAlias = bytes | ImageData | Image.Image | os.PathLike[str]
Metadata: TypeAlias = tuple[tuple[str, str], ...]


def image_proto(image: ImageInput) -> common_pb2.Image:
    """Returns: the wire Image for bytes, ImageData, a PIL image (sent as PNG) or a file path."""
    if isinstance(image, ImageData):
        return common_pb2.Image(data=image.data, media_type=image.media_type)
    if isinstance(image, bytes):
        return common_pb2.Image(data=image)
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return common_pb2.Image(data=buffer.getvalue(), media_type="image/png")
    return common_pb2.Image(data=Path(image).read_bytes())


def _options(include_tokens: bool, normalize: bool) -> encoder_pb2.EncodeOptions:
    return encoder_pb2.EncodeOptions(include_tokens=include_tokens, normalize=normalize)


def texts_request(
    texts: Sequence[str], include_tokens: bool, normalize: bool
) -> encoder_pb2.EncodeTextsRequest:
    return encoder_pb2.EncodeTextsRequest(
        texts=list(texts), options=_options(include_tokens, normalize)
    )


def images_request(
    images: Sequence[ImageInput], include_tokens: bool, normalize: bool
) -> encoder_pb2.EncodeImagesRequest:
    return encoder_pb2.EncodeImagesRequest(
        images=[image_proto(i) for i in images], options=_options(include_tokens, normalize)
    )


class EncoderClient:
    """Blocking encoder calls; failures raise the domain error the server raised.

    Args:
        channel: a channel to the encoder service.
        metadata: call metadata (the bearer token).
        timeout: seconds per call (None: no deadline).
    """

    def __init__(
        self, channel: grpc.Channel, metadata: Metadata = (), timeout: float | None = 60.0
    ) -> None:
        self._stub = encoder_pb2_grpc.EncoderServiceStub(channel)
        self._metadata = metadata
        self._timeout = timeout

    def encode_texts(
        self, texts: Sequence[str], *, include_tokens: bool = False, normalize: bool = True
    ) -> Encoded:
        """Encode texts into the shared space.

        Args:
            texts: the texts (non-empty each).
            include_tokens: also return token embeddings with token strings and spans.
            normalize: L2-normalise the pooled embeddings.
        Returns:
            One embedding per text, in order, with the model that served.
        """
        request = texts_request(texts, include_tokens, normalize)
        try:
            reply = self._stub.EncodeTexts(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        return encoded_from_proto(reply)

    def encode_images(
        self, images: Sequence[ImageInput], *, include_tokens: bool = False, normalize: bool = True
    ) -> Encoded:
        """Encode images (bytes, ImageData, PIL images or file paths); see `encode_texts`."""
        request = images_request(images, include_tokens, normalize)
        try:
            reply = self._stub.EncodeImages(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        return encoded_from_proto(reply)

    def model(self) -> ModelId | None:
        """Returns: the model the encoder serves, or None when it has none loaded."""
        try:
            info = self._stub.GetInfo(
                common_pb2.GetInfoRequest(), timeout=self._timeout, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        return model_id(info.models[0]) if info.ready and info.models else None


class AsyncEncoderClient:
    """The same calls on a grpc.aio channel (create it inside the running event loop)."""

    def __init__(
        self, channel: grpc.aio.Channel, metadata: Metadata = (), timeout: float | None = 60.0
    ) -> None:
        self._stub = encoder_pb2_grpc.EncoderServiceStub(channel)
        self._metadata = metadata
        self._timeout = timeout

    async def encode_texts(
        self, texts: Sequence[str], *, include_tokens: bool = False, normalize: bool = True
    ) -> Encoded:
        request = texts_request(texts, include_tokens, normalize)
        try:
            reply = await self._stub.EncodeTexts(
                request, timeout=self._timeout, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        return encoded_from_proto(reply)

    async def encode_images(
        self, images: Sequence[ImageInput], *, include_tokens: bool = False, normalize: bool = True
    ) -> Encoded:
        request = images_request(images, include_tokens, normalize)
        try:
            reply = await self._stub.EncodeImages(
                request, timeout=self._timeout, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        return encoded_from_proto(reply)

    async def model(self, timeout: float = 2.0) -> ModelId | None:
        try:
            info = await self._stub.GetInfo(
                common_pb2.GetInfoRequest(), timeout=timeout, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        return model_id(info.models[0]) if info.ready and info.models else None
