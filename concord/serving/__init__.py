"""Serving core: gRPC server bootstrap, interceptors, error mapping, metrics, dynamic batcher."""

from concord.serving.batcher import DynamicBatcher
from concord.serving.server import ServiceDefinition, ServiceServer

__all__ = ["DynamicBatcher", "ServiceDefinition", "ServiceServer"]
