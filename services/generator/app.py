"""Builds the generator service from settings (the `concord.services` entry point): on_start
loads the model (in a thread: it is seconds of I/O) and starts the job worker; on_stop stops
the worker."""

from __future__ import annotations

from concord.platform import Platform
from concord.proto.v1 import generator_pb2_grpc
from concord.serving.definitions import define
from concord.serving.reload import watch_model
from concord.serving.server import ServiceDefinition
from services.generator.jobs import JobTable
from services.generator.servable import GeneratorServable
from services.generator.servicer import GeneratorServicer
from services.generator.worker import JobWorker


def build(platform: Platform) -> ServiceDefinition:
    """Returns: the generator's ServiceDefinition on the process's shared platform."""
    settings = platform.settings
    servable = GeneratorServable(settings, lambda: platform.registry)
    jobs = JobTable()
    worker = JobWorker(
        servable,
        jobs,
        lambda: platform.bus,
        max_attempts=settings.kafka.max_retries + 1,
        settings=settings,
    )
    servicer = GeneratorServicer(servable, jobs, lambda: platform.bus, settings=settings)
    definition = define("generator", servicer, generator_pb2_grpc)
    definition.model_ready = lambda: servable.ready
    definition.on_start += [servable.start, worker.start]
    definition.on_stop += [worker.stop, servable.stop]
    watch_model(definition, servable, lambda: platform.registry, settings.serving)
    return definition
