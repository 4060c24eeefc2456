"""Builds the encoder service from settings (the `concord.services` entry point)."""

from __future__ import annotations

from concord.platform import Platform
from concord.proto.v1 import encoder_pb2_grpc
from concord.serving.definitions import define
from concord.serving.server import ServiceDefinition
from services.encoder.servicer import EncoderServicer


def build(platform: Platform) -> ServiceDefinition:
    return define("encoder", EncoderServicer(), encoder_pb2_grpc)
