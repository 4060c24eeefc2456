"""The ingest worker: consumes `concord.ingest` (events_pb2.IngestRequest) in a bus consumer
thread, encodes and upserts each item, then publishes `concord.indexed`.

Idempotent: the point id is the content hash in the collection's namespace (or the event's
id), so a replayed event rewrites the same point. Bad content (a corrupt image, an empty text)
raises InvalidArgument, which the bus dead-letters to `concord.ingest.dlq` with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from concord.bus import Bus, Consumer, Delivery
from concord.clients.convert import payload_to_dict
from concord.clients.types import ImageData
from concord.proto.v1 import events_pb2
from services.retrieval.engine import Retrieval
from services.retrieval.events import IndexedPublisher
from services.retrieval.indexing import ItemIn

log = logging.getLogger(__name__)

INGEST_TOPIC = "concord.ingest"
GROUP = "retrieval"


def item_from_event(event: events_pb2.IngestRequest) -> ItemIn:
    kind = event.item.WhichOneof("content")
    image = event.item.image
    return ItemIn(
        where="",
        text=event.item.text if kind == "text" else None,
        image=ImageData(image.data, image.media_type) if kind == "image" else None,
        payload=payload_to_dict(event.payload),
        id=event.id,
    )


class IngestWorker:
    """Owns one consumer-group member on the ingest topic.

    Args:
        engine: the retrieval engine (started: its blocking encoder client is used).
        events: publishes the Indexed events.
        bus: returns the process bus.
        topic: the topic to consume.
    """

    def __init__(
        self,
        engine: Retrieval,
        events: IndexedPublisher,
        bus: Callable[[], Bus],
        topic: str = INGEST_TOPIC,
    ) -> None:
        self._engine = engine
        self._events = events
        self._bus = bus
        self.topic = topic
        self.consumer: Consumer | None = None

    def handle(self, event: events_pb2.IngestRequest, delivery: Delivery) -> None:
        """Index one event; raising leaves it to the bus's retries and DLQ."""
        done = self._engine.index_sync([item_from_event(event)], event.collection, tokens=True)
        self._events.publish(done)
        log.debug(
            "indexed %s into %s from %s@%d",
            done.ids[0],
            done.collection,
            delivery.topic,
            delivery.offset,
        )

    async def start(self) -> None:
        # Subscribing may create topics on a broker: keep that off the event loop.
        def subscribe() -> Consumer:
            return (
                self._bus()
                .subscribe(self.topic, GROUP, self.handle, events_pb2.IngestRequest)
                .start()
            )

        self.consumer = await asyncio.to_thread(subscribe)

    async def stop(self) -> None:
        if self.consumer is not None:
            await asyncio.to_thread(self.consumer.stop)
            self.consumer = None
