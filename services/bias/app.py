"""Builds the bias service from settings (the `concord.services` entry point): on_start loads
the bias package and, when it loaded, starts the bus workers (generated images and pairs sent
straight to the detector -> verdicts); on_stop reverses that."""

from __future__ import annotations

from concord.platform import Platform
from concord.proto.v1 import bias_pb2_grpc
from concord.serving.definitions import define
from concord.serving.reload import watch_model
from concord.serving.server import ServiceDefinition
from services.bias.servable import BiasServable
from services.bias.servicer import BiasServicer, add_to_server
from services.bias.worker import GeneratedChecker, RequestChecker


def build(platform: Platform) -> ServiceDefinition:
    """Returns: the bias service's ServiceDefinition on the process's shared platform."""
    servable = BiasServable(platform.settings, lambda: platform.registry)
    workers = [
        GeneratedChecker(servable, lambda: platform.bus),
        RequestChecker(servable, lambda: platform.bus),
    ]
    definition = define("bias", BiasServicer(servable), bias_pb2_grpc)
    definition.add_to_server = add_to_server  # parsers that name a text that is not UTF-8
    definition.model_ready = lambda: servable.ready
    definition.on_start += [servable.start, *(w.start for w in workers)]  # workers need the model
    definition.on_stop += [*(w.stop for w in reversed(workers)), servable.stop]
    watch_model(definition, servable, lambda: platform.registry, platform.settings.serving)
    return definition
