"""Proto <-> domain translation for the generator service; RPCs not built yet answer UNIMPLEMENTED."""

from __future__ import annotations

import grpc

from concord.proto.v1 import common_pb2, generator_pb2_grpc
from concord.serving.definitions import service_info


class GeneratorServicer(generator_pb2_grpc.GeneratorServiceServicer):
    async def GetInfo(
        self, request: common_pb2.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ServiceInfo:
        return service_info("generator")
