"""Builds the scorer service from settings (the `concord.services` entry point): on_start
loads the scorer package and, when it loaded, starts the auditor of generated images on the
bus; on_stop reverses that."""

from __future__ import annotations

from concord.platform import Platform
from concord.proto.v1 import scorer_pb2_grpc
from concord.serving.definitions import define
from concord.serving.reload import watch_model
from concord.serving.server import ServiceDefinition
from services.scorer.servable import ScorerServable
from services.scorer.servicer import ScorerServicer
from services.scorer.worker import Auditor


def build(platform: Platform) -> ServiceDefinition:
    """Returns: the scorer's ServiceDefinition on the process's shared platform."""
    servable = ScorerServable(platform.settings, lambda: platform.registry)
    auditor = Auditor(servable, lambda: platform.bus)
    definition = define("scorer", ScorerServicer(servable), scorer_pb2_grpc)
    definition.model_ready = lambda: servable.ready
    definition.on_start += [servable.start, auditor.start]  # the auditor needs the model
    definition.on_stop += [auditor.stop, servable.stop]
    watch_model(definition, servable, lambda: platform.registry, platform.settings.serving)
    return definition
