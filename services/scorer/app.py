"""Builds the scorer service from settings (the `concord.services` entry point)."""

from __future__ import annotations

from concord.platform import Platform
from concord.proto.v1 import scorer_pb2_grpc
from concord.serving.definitions import define
from concord.serving.server import ServiceDefinition
from services.scorer.servicer import ScorerServicer


def build(platform: Platform) -> ServiceDefinition:
    return define("scorer", ScorerServicer(), scorer_pb2_grpc)
