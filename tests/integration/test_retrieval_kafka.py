"""Kafka ingest through the real broker: the retrieval worker indexes `concord.ingest`
events with the real encoder service, emits `concord.indexed`, ignores replays (idempotent
ids) and dead-letters a corrupt image to `concord.ingest.dlq`."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

from concord.bus import Delivery, DlqHeaders, dlq_topic, make_bus, topics
from concord.clients import Concord
from concord.config import Settings
from concord.proto.v1 import common_pb2, events_pb2
from concord.wire import payload_from_dict
from tests.fixtures.media import png
from tests.fixtures.models import tiny_encoder
from tests.fixtures.serving import InProcessDeployment, encoder_settings
from tests.fixtures.waiting import wait_until as _wait_until
from tools.kafka.broker import KafkaBroker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WAIT = 60.0


def wait_until(cond: Callable[[], bool], what: str) -> None:
    _wait_until(cond, what, WAIT, interval=0.05)


@pytest.fixture
def settings(own_kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    kafka = {
        "bootstrap_servers": own_kafka_broker.bootstrap,
        "group_prefix": f"t{uuid.uuid4().hex[:8]}",
        "max_retries": 1,
        "retry_backoff_seconds": 0.05,
    }
    return encoder_settings(
        tmp_path_factory.mktemp("kafka"),
        str(tiny_encoder(tmp_path_factory)),
        bus="kafka",
        kafka=kafka,
    )


@pytest.fixture
def served(settings: Settings) -> Iterator[InProcessDeployment]:
    server = InProcessDeployment(["encoder", "retrieval"], settings)
    yield server
    server.close()


def ingest_events(collection: str) -> list[events_pb2.IngestRequest]:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (90, 90, 90)]
    events = [
        events_pb2.IngestRequest(
            collection=collection,
            item=common_pb2.Item(image=common_pb2.Image(data=png(c), media_type="image/png")),
            payload=payload_from_dict({"uri": f"/data/{i}.png", "n": i}),
        )
        for i, c in enumerate(colours)
    ]
    events.append(
        events_pb2.IngestRequest(
            collection=collection, item=common_pb2.Item(text="a red circle left of a blue square")
        )
    )
    return events


def test_kafka_ingest_indexes_emits_and_ignores_replays(
    settings: Settings, served: InProcessDeployment
) -> None:
    collection = f"kafka-{uuid.uuid4().hex[:8]}"
    events = ingest_events(collection)
    corrupt = events_pb2.IngestRequest(
        collection=collection,
        item=common_pb2.Item(image=common_pb2.Image(data=png((1, 2, 3))[:60])),
    )
    lock = threading.Lock()
    indexed: list[events_pb2.Indexed] = []
    dead: list[Delivery] = []

    def on_indexed(message: events_pb2.Indexed, _: Delivery) -> None:
        if message.collection == collection:
            with lock:
                indexed.append(message)

    def on_dead(_: bytes, delivery: Delivery) -> None:
        if delivery.key == f"{collection}-corrupt".encode():
            with lock:
                dead.append(delivery)

    with make_bus(settings) as bus:
        observers = [
            bus.subscribe(
                topics.INDEXED, f"obs-{collection}", on_indexed, events_pb2.Indexed
            ).start(),
            bus.subscribe_raw(dlq_topic(topics.INGEST), f"dlq-{collection}", on_dead).start(),
        ]
        try:
            for i, event in enumerate(events):
                bus.publish(topics.INGEST, f"{collection}-{i}", event)
            bus.publish(topics.INGEST, f"{collection}-corrupt", corrupt)
            bus.flush()
            wait_until(lambda: len(indexed) >= len(events), "the first Indexed events")
            wait_until(lambda: bool(dead), "the corrupt image in the DLQ")
            first_ids = sorted({e.id for e in indexed})
            assert len(first_ids) == len(events)
            assert dead[0].headers[DlqHeaders.REASON] == "handler-failed"
            assert dead[0].headers[DlqHeaders.ERROR].startswith("item.image.data: ")

            with Concord(settings) as sdk:
                info = sdk.retrieval.collection(collection)
                assert info.points == len(events) and info.has_tokens
                hit = sdk.search_text(
                    "a red circle left of a blue square", collection=collection, exact=True
                ).hits[0]
                assert hit.modality == "text" and hit.id in first_ids
                image_hit = sdk.search_image(
                    png((0, 0, 255)), collection=collection, target="image", exact=True
                ).hits[0]
                assert image_hit.payload == {"uri": "/data/2.png", "n": 2}

                for i, event in enumerate(events):  # a replay of the same content
                    bus.publish(topics.INGEST, f"{collection}-{i}", event)
                bus.flush()
                wait_until(lambda: len(indexed) >= 2 * len(events), "the replayed events")
                assert sorted({e.id for e in indexed}) == first_ids
                assert sdk.retrieval.collection(collection).points == len(events)
        finally:
            for observer in observers:
                observer.stop()
