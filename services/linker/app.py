"""Builds the linker service from settings (the `concord.services` entry point)."""

from __future__ import annotations

from concord.platform import Platform
from concord.proto.v1 import linker_pb2_grpc
from concord.serving.definitions import define
from concord.serving.server import ServiceDefinition
from services.linker.servicer import LinkerServicer


def build(platform: Platform) -> ServiceDefinition:
    return define("linker", LinkerServicer(), linker_pb2_grpc)
