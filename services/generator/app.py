"""Builds the generator service from settings (the `concord.services` entry point)."""

from __future__ import annotations

from concord.config import Settings
from concord.proto.v1 import generator_pb2_grpc
from concord.serving.definitions import define
from concord.serving.server import ServiceDefinition
from services.generator.servicer import GeneratorServicer


def build(settings: Settings) -> ServiceDefinition:
    return define("generator", GeneratorServicer(), generator_pb2_grpc)
