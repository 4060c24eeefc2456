"""Builds the generator service from settings (the `concord.services` entry point)."""

from __future__ import annotations

from concord.platform import Platform
from concord.proto.v1 import generator_pb2_grpc
from concord.serving.definitions import define
from concord.serving.server import ServiceDefinition
from services.generator.servicer import GeneratorServicer


def build(platform: Platform) -> ServiceDefinition:
    return define("generator", GeneratorServicer(), generator_pb2_grpc)
