"""Builds the bias service from settings (the `concord.services` entry point)."""

from __future__ import annotations

from concord.platform import Platform
from concord.proto.v1 import bias_pb2_grpc
from concord.serving.definitions import define
from concord.serving.server import ServiceDefinition
from services.bias.servicer import BiasServicer


def build(platform: Platform) -> ServiceDefinition:
    return define("bias", BiasServicer(), bias_pb2_grpc)
