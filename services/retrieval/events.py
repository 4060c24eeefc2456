"""Publishes `concord.indexed` (events_pb2.Indexed, keyed by point id) for indexed items."""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.timestamp_pb2 import Timestamp

from concord.bus import Bus, topics
from concord.proto.v1 import events_pb2
from concord.wire import MODALITY_ENUMS, model_ref
from services.retrieval.engine import Indexed

INDEXED_TOPIC = topics.INDEXED


class IndexedPublisher:
    """Args: bus: returns the process bus (built on first publish)."""

    def __init__(self, bus: Callable[[], Bus], topic: str = INDEXED_TOPIC) -> None:
        self._bus = bus
        self.topic = topic

    def publish(self, done: Indexed, flush: bool = True) -> None:
        """Publish one event per point; wait for the acknowledgement unless `flush` is False
        (the caller then calls `flush()` once for many publishes)."""
        bus: Bus = self._bus()
        now = Timestamp()
        now.GetCurrentTime()
        for pid, modality in zip(done.ids, done.modalities, strict=True):
            event = events_pb2.Indexed(
                id=pid,
                collection=done.collection,
                modality=MODALITY_ENUMS[modality],
                model=model_ref(done.model),
                indexed_at=now,
            )
            bus.publish(self.topic, pid, event)
        if flush:
            bus.flush()

    def flush(self) -> None:
        self._bus().flush()
