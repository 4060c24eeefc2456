"""Proto <-> domain translation for the bias service: parses and validates requests, calls the
servable, builds responses. No ML logic; domain errors become gRPC codes in the interceptor."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from concord.proto.v1 import bias_pb2, bias_pb2_grpc, common_pb2
from concord.serving import requests
from concord.serving.definitions import servable_info
from services.bias import convert
from services.bias.convert import Unparsed
from services.bias.servable import BiasServable


class BiasServicer(bias_pb2_grpc.BiasServiceServicer):
    def __init__(self, servable: BiasServable) -> None:
        self.servable = servable

    async def Detect(
        self, request: bias_pb2.DetectRequest | Unparsed, context: grpc.aio.ServicerContext
    ) -> bias_pb2.DetectResponse:
        request = convert.parsed(request)
        s = self.servable
        # Bad input is named whether or not a model is loaded (limits come from settings).
        pairs = await asyncio.to_thread(
            convert.decode_pairs,
            request.pairs,
            s.max_pairs,
            s.max_text_chars,
            not request.labels_only,
        )
        loaded = s.require()
        requests.check_model(request.model, loaded.id, "bias service")
        verdicts = await s.detect(pairs, loaded)
        return convert.detect_response(verdicts, loaded.id)

    async def ProbeTextReliance(
        self, request: bias_pb2.ProbeRequest | Unparsed, context: grpc.aio.ServicerContext
    ) -> bias_pb2.ProbeResponse:
        request = convert.parsed(request)
        s = self.servable
        pair, texts = await asyncio.to_thread(
            convert.decode_probe, request, s.max_text_chars, s.max_counterfactuals
        )
        loaded = s.require()
        requests.check_model(request.model, loaded.id, "bias service")
        probe = await s.probe(pair, texts, loaded)
        return convert.probe_response(probe, loaded.id)

    async def GetInfo(
        self, request: common_pb2.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ServiceInfo:
        return servable_info(self.servable)


def add_to_server(servicer: BiasServicer, server: Any) -> None:
    """`add_BiasServiceServicer_to_server`, with request parsers that name a text that is not
    UTF-8 (`pairs[2].text`) instead of failing the call before the servicer sees it."""
    parsers = {
        "Detect": convert.request_parser(bias_pb2.DetectRequest),
        "ProbeTextReliance": convert.request_parser(bias_pb2.ProbeRequest),
    }
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name),
            request_deserializer=parsers.get(name, request.FromString),
            response_serializer=response.SerializeToString,
        )
        for name, request, response in (
            ("Detect", bias_pb2.DetectRequest, bias_pb2.DetectResponse),
            ("ProbeTextReliance", bias_pb2.ProbeRequest, bias_pb2.ProbeResponse),
            ("GetInfo", common_pb2.GetInfoRequest, common_pb2.ServiceInfo),
        )
    }
    service = bias_pb2.DESCRIPTOR.services_by_name["BiasService"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)
