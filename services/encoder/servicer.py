"""Proto <-> domain translation for the encoder service: validates, calls the servable,
builds responses. No ML logic; domain errors become gRPC codes in the interceptor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from concord.errors import FieldViolation, InvalidArgument
from concord.media import decode_image, decode_images
from concord.proto.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc
from concord.serving import requests
from concord.serving.definitions import servable_info
from concord.wire import model_ref
from services.encoder import convert
from services.encoder.servable import EncoderServable, ItemEncoding

STREAM_WINDOW = 64  # stream items in flight at once (they coalesce in the batcher)


class EncoderServicer(encoder_pb2_grpc.EncoderServiceServicer):
    def __init__(self, servable: EncoderServable) -> None:
        self.servable = servable

    async def EncodeImages(
        self, request: encoder_pb2.EncodeImagesRequest, context: grpc.aio.ServicerContext
    ) -> encoder_pb2.EncodeResponse:
        loaded = self.servable.require()
        requests.check_model(request.options.model, loaded.id, "encoder")
        requests.check_count(len(request.images), "images", self.servable.max_items)
        # Always off the event loop: a few KiB of PNG can decode to tens of MB of pixels.
        images = await asyncio.to_thread(decode_images, request.images)
        items = await self.servable.encode_images(images, loaded)
        return convert.encode_response(items, request.options, loaded.id, loaded.embed_dim)

    async def EncodeTexts(
        self, request: encoder_pb2.EncodeTextsRequest, context: grpc.aio.ServicerContext
    ) -> encoder_pb2.EncodeResponse:
        loaded = self.servable.require()
        requests.check_model(request.options.model, loaded.id, "encoder")
        requests.check_count(len(request.texts), "texts", self.servable.max_items)
        texts = requests.check_texts(request.texts, "texts", self.servable.max_text_chars)
        items = await self.servable.encode_texts(texts, loaded)
        return convert.encode_response(items, request.options, loaded.id, loaded.embed_dim)

    async def EncodeStream(
        self,
        request_iterator: AsyncIterator[encoder_pb2.EncodeStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[encoder_pb2.EncodeStreamResponse]:
        # Items are submitted as they arrive (so they batch together) and answered in order.
        pending: asyncio.Queue[asyncio.Task[encoder_pb2.EncodeStreamResponse] | None] = (
            asyncio.Queue(STREAM_WINDOW)
        )

        async def read() -> None:
            try:
                index = 0
                async for request in request_iterator:
                    await pending.put(asyncio.create_task(self._stream_item(request, index)))
                    index += 1
            finally:
                await pending.put(None)

        reader = asyncio.create_task(read())
        try:
            while (task := await pending.get()) is not None:
                yield await task
            await reader  # surfaces a failed read
        finally:
            reader.cancel()
            while not pending.empty():
                leftover = pending.get_nowait()
                if leftover is not None:
                    leftover.cancel()

    async def _stream_item(
        self, request: encoder_pb2.EncodeStreamRequest, index: int
    ) -> encoder_pb2.EncodeStreamResponse:
        loaded = self.servable.require()
        requests.check_model(request.options.model, loaded.id, "encoder")
        item: ItemEncoding
        kind = request.item.WhichOneof("content")
        try:
            if kind == "text":
                text = requests.check_text(
                    request.item.text, "item.text", self.servable.max_text_chars
                )
                (item,) = await self.servable.encode_texts([text], loaded)
            elif kind == "image":
                image = request.item.image
                decoded = await asyncio.to_thread(
                    decode_image, image.data, image.media_type, field="item.image"
                )
                (item,) = await self.servable.encode_images([decoded], loaded)
            else:
                raise InvalidArgument("item", "needs an image or a text")
        except InvalidArgument as err:
            # One stream, many items: say which one (by id and position) was wrong.
            where = f" (message {index}, id {request.id!r})"
            raise InvalidArgument.from_violations(
                [FieldViolation(v.field, v.description + where) for v in err.violations]
            ) from None
        options = request.options
        return encoder_pb2.EncodeStreamResponse(
            id=request.id,
            encoding=convert.encoding_proto(item, options.include_tokens, options.normalize),
            model=model_ref(loaded.id),
        )

    async def GetInfo(
        self, request: common_pb2.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ServiceInfo:
        return servable_info(self.servable)
