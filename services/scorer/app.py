"""Builds the scorer service from settings (the `concord.services` entry point)."""

from __future__ import annotations

from concord.config import Settings
from concord.proto.v1 import scorer_pb2_grpc
from concord.serving.definitions import define
from concord.serving.server import ServiceDefinition
from services.scorer.servicer import ScorerServicer


def build(settings: Settings) -> ServiceDefinition:
    return define("scorer", ScorerServicer(), scorer_pb2_grpc)
