"""Proto <-> domain translation for the bias service; RPCs not built yet answer UNIMPLEMENTED."""

from __future__ import annotations

import grpc

from concord.proto.v1 import bias_pb2_grpc, common_pb2
from concord.serving.definitions import service_info


class BiasServicer(bias_pb2_grpc.BiasServiceServicer):
    async def GetInfo(
        self, request: common_pb2.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ServiceInfo:
        return service_info("bias")
