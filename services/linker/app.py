"""Builds the linker service from settings (the `concord.services` entry point): on_start
opens the knowledge bases on the process's vector store, loads the linker package and, when it
loaded, starts the entity and align-job workers on the bus; on_stop reverses that."""

from __future__ import annotations

import asyncio

from concord.platform import Platform
from concord.proto.v1 import linker_pb2_grpc
from concord.serving.definitions import define
from concord.serving.reload import watch_model
from concord.serving.server import ServiceDefinition
from services.linker.convert import Limits
from services.linker.jobs import AlignJobs
from services.linker.kb import KnowledgeBases
from services.linker.servable import LinkerServable
from services.linker.servicer import LinkerServicer
from services.linker.worker import AlignWorker, EntityWorker


class _KnowledgeBasesHandle:
    """Opens the knowledge bases once, at start (the store is opened in a thread)."""

    def __init__(self, platform: Platform) -> None:
        self._platform = platform
        self.kbs: KnowledgeBases | None = None

    def __call__(self) -> KnowledgeBases:
        if self.kbs is None:
            self.kbs = KnowledgeBases(self._platform.vectors)
        return self.kbs

    async def start(self) -> None:
        await asyncio.to_thread(self)


def build(platform: Platform) -> ServiceDefinition:
    """Returns: the linker's ServiceDefinition on the process's shared platform."""
    settings = platform.settings
    limits = Limits.of(settings.linker)
    job_limits = Limits.of(settings.linker, job=True)
    kbs = _KnowledgeBasesHandle(platform)
    jobs = AlignJobs(settings.home / "linker" / "align-jobs")
    servable = LinkerServable(settings, lambda: platform.registry, kbs)
    entities = EntityWorker(servable, kbs, lambda: platform.bus, limits)
    aligner = AlignWorker(
        servable,
        jobs,
        lambda: platform.bus,
        job_limits,
        max_attempts=settings.kafka.max_retries + 1,
    )
    servicer = LinkerServicer(servable, kbs, jobs, lambda: platform.bus, limits, job_limits)
    definition = define("linker", servicer, linker_pb2_grpc)
    definition.model_ready = lambda: servable.ready
    # The workers need the model; the knowledge bases only the store.
    definition.on_start += [kbs.start, servable.start, entities.start, aligner.start]
    definition.on_stop += [aligner.stop, entities.stop, servable.stop]
    watch_model(definition, servable, lambda: platform.registry, settings.serving)
    return definition
