"""The ingest worker: consumes `concord.ingest` (events_pb2.IngestRequest) in a bus consumer
thread, encodes and upserts each item, then publishes `concord.indexed`.

Idempotent: the point id is the content hash in the collection's namespace (or the event's
id), so a replayed event rewrites the same point. Bad content (a corrupt image, an empty text)
raises InvalidArgument, which the bus dead-letters to `concord.ingest.dlq` with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from concord.bus import Bus, Delivery, Worker, topics
from concord.proto.v1 import events_pb2
from concord.wire import ImageData
from services.retrieval.convert import payload_dict
from services.retrieval.engine import Retrieval
from services.retrieval.events import IndexedPublisher
from services.retrieval.indexing import ItemIn

log = logging.getLogger(__name__)

INGEST_TOPIC = topics.INGEST


def item_from_event(event: events_pb2.IngestRequest) -> ItemIn:
    kind = event.item.WhichOneof("content")
    image = event.item.image
    return ItemIn(
        where="",
        text=event.item.text if kind == "text" else None,
        image=ImageData(image.data, image.media_type) if kind == "image" else None,
        payload=payload_dict(event.payload),
        id=event.id,
    )


class IngestWorker(Worker):
    """Owns one consumer-group member on the ingest topic.

    Args:
        engine: the retrieval engine (started: its blocking encoder client is used).
        events: publishes the Indexed events.
        bus: returns the process bus.
        topic: the topic to consume.
    """

    group = "retrieval"
    message_type = events_pb2.IngestRequest
    batched = True

    def __init__(
        self,
        engine: Retrieval,
        events: IndexedPublisher,
        bus: Callable[[], Bus],
        topic: str = INGEST_TOPIC,
    ) -> None:
        super().__init__(bus, topic)
        self._engine = engine
        self._events = events

    def handle_batch(self, batch: list[tuple[events_pb2.IngestRequest, Delivery]]) -> None:
        """Index a poll's events: one encoder request and one upsert per collection, one
        flush of the Indexed events. Raising hands the events to the bus one by one."""
        by_collection: dict[str, list[ItemIn]] = {}
        for event, _ in batch:
            by_collection.setdefault(event.collection, []).append(item_from_event(event))
        for collection, items in by_collection.items():
            done = self._engine.index_sync(items, collection, tokens=True)
            self._events.publish(done, flush=False)
        self._events.flush()
        log.debug("indexed %d events from %s", len(batch), self.topic)
