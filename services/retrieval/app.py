"""Builds the retrieval service (the `concord.services` entry point): on_start opens the
collections and the encoder client, then starts the ingest worker and the encoder-upgrade watch
(services.retrieval.upgrade); on_stop reverses that."""

from __future__ import annotations

from concord.platform import Platform
from concord.proto.v1 import retrieval_pb2_grpc
from concord.serving.definitions import define
from concord.serving.server import ServiceDefinition
from concord.wire import ModelId
from services.retrieval.engine import Retrieval
from services.retrieval.events import IndexedPublisher
from services.retrieval.servicer import RetrievalServicer
from services.retrieval.upgrade import Upgrades
from services.retrieval.worker import IngestWorker


def build(platform: Platform) -> ServiceDefinition:
    """Returns: the retrieval ServiceDefinition on the process's shared platform."""
    engine = Retrieval(platform.settings)
    upgrades = Upgrades(
        lambda: engine.collections, lambda: engine.encoder_sync, lambda: platform.registry
    )
    engine.upgrades = upgrades
    events = IndexedPublisher(lambda: platform.bus)
    worker = IngestWorker(engine, events, lambda: platform.bus)
    definition = define("retrieval", RetrievalServicer(engine, events), retrieval_pb2_grpc)

    async def start_engine() -> None:
        await engine.start(platform.vectors)

    async def served() -> ModelId | None:
        return await engine.encoder.model() if engine.encoder is not None else None

    async def start_upgrades() -> None:  # notices a new encoder version between queries too
        await upgrades.start(served, platform.settings.serving.reload_interval_seconds)

    definition.on_start += [start_engine, worker.start, start_upgrades]
    definition.on_stop += [upgrades.stop, worker.stop, engine.stop]
    definition.dependencies = engine.dependencies
    return definition
