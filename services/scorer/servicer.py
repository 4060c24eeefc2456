"""Proto <-> domain translation for the scorer service: validates, calls the servable, builds
responses. No ML logic; domain errors become gRPC codes in the interceptor."""

from __future__ import annotations

import asyncio

import grpc

from concord.errors import InvalidArgument
from concord.media import decode_image
from concord.proto.v1 import common_pb2, scorer_pb2, scorer_pb2_grpc
from concord.serving import requests
from concord.serving.definitions import servable_info
from services.scorer import convert
from services.scorer.servable import ScorerServable


class ScorerServicer(scorer_pb2_grpc.ScorerServiceServicer):
    def __init__(self, servable: ScorerServable) -> None:
        self.servable = servable

    async def Score(
        self, request: scorer_pb2.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> scorer_pb2.ScoreResponse:
        loaded = self.servable.require()
        requests.check_model(request.model, loaded.id, "scorer")
        s = self.servable
        pairs = await asyncio.to_thread(
            convert.decode_pairs, request.pairs, s.max_pairs, s.max_text_chars, s.max_references
        )
        scored = await s.score(pairs, loaded)
        return convert.score_response(scored, loaded.id)

    async def ExplainMisalignment(
        self, request: scorer_pb2.ExplainRequest, context: grpc.aio.ServicerContext
    ) -> scorer_pb2.ExplainResponse:
        loaded = self.servable.require()
        text = requests.check_text(request.text, "text", self.servable.max_text_chars)
        if request.threshold < 0:
            raise InvalidArgument("threshold", "must be >= 0 (0 = the service default)")
        image = await asyncio.to_thread(
            decode_image, request.image.data, request.image.media_type, field="image"
        )
        explained = await self.servable.explain(image, text, request.threshold, loaded)
        return convert.explain_response(explained, loaded.id, request.include_heatmap)

    async def GetInfo(
        self, request: common_pb2.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ServiceInfo:
        return servable_info(self.servable)
