"""Proto <-> domain translation for the scorer service; RPCs not built yet answer UNIMPLEMENTED."""

from __future__ import annotations

import grpc

from concord.proto.v1 import common_pb2, scorer_pb2_grpc
from concord.serving.definitions import service_info


class ScorerServicer(scorer_pb2_grpc.ScorerServiceServicer):
    async def GetInfo(
        self, request: common_pb2.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ServiceInfo:
        return service_info("scorer")
