"""Builds the encoder service from settings (the `concord.services` entry point): the
servable loads the model in on_start and stops its batchers in on_stop."""

from __future__ import annotations

from concord.platform import Platform
from concord.proto.v1 import encoder_pb2_grpc
from concord.serving.definitions import define
from concord.serving.reload import watch_model
from concord.serving.server import ServiceDefinition
from services.encoder.servable import EncoderServable
from services.encoder.servicer import EncoderServicer


def build(platform: Platform) -> ServiceDefinition:
    """Returns: the encoder's ServiceDefinition on the process's shared platform."""
    servable = EncoderServable(platform.settings, lambda: platform.registry)
    definition = define("encoder", EncoderServicer(servable), encoder_pb2_grpc)
    definition.model_ready = lambda: servable.ready
    definition.on_start.append(servable.start)
    definition.on_stop.append(servable.stop)
    watch_model(definition, servable, lambda: platform.registry, platform.settings.serving)
    return definition
