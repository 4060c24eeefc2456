"""Builds the retrieval service from settings (the `concord.services` entry point)."""

from __future__ import annotations

from concord.platform import Platform
from concord.proto.v1 import retrieval_pb2_grpc
from concord.serving.definitions import define
from concord.serving.server import ServiceDefinition
from services.retrieval.servicer import RetrievalServicer


def build(platform: Platform) -> ServiceDefinition:
    return define("retrieval", RetrievalServicer(), retrieval_pb2_grpc)
