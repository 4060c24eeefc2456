"""Builds the linker service from settings (the `concord.services` entry point)."""

from __future__ import annotations

from concord.config import Settings
from concord.proto.v1 import linker_pb2_grpc
from concord.serving.definitions import define
from concord.serving.server import ServiceDefinition
from services.linker.servicer import LinkerServicer


def build(settings: Settings) -> ServiceDefinition:
    return define("linker", LinkerServicer(), linker_pb2_grpc)
