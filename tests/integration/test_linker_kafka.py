"""The linker's workers through the real broker: EntityEvents on `concord.entities` upsert and
delete knowledge-base entities (idempotent: a replay of the same events changes nothing), bad
entities go to `concord.entities.dlq` with the reason; an align job submitted over gRPC runs
from `concord.align.jobs`, publishes its states on `concord.aligned` and stores its result; a
malformed job published to the topic is marked FAILED and dead-lettered."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

from concord.bus import Delivery, DlqHeaders, dlq_topic, make_bus, topics
from concord.clients import Connection
from concord.config import Settings
from concord.proto.v1 import common_pb2, linker_pb2, linker_pb2_grpc
from tests.fixtures.serving import InProcessDeployment
from tests.fixtures.waiting import wait_until as _wait_until
from tests.unit.test_linker_service import (
    ENTITIES,
    MENTIONS,
    align_request,
    counts,
    link,
    linker_settings,
    ranking,
    tiny_linker,
)
from tools.kafka.broker import KafkaBroker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WAIT = 60.0


def wait_until(cond: Callable[[], bool], what: str) -> None:
    _wait_until(cond, what, WAIT, interval=0.05)


@pytest.fixture(scope="module")
def settings(own_kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    kafka = {
        "bootstrap_servers": own_kafka_broker.bootstrap,
        "group_prefix": f"t{uuid.uuid4().hex[:8]}",
        "max_retries": 1,
        "retry_backoff_seconds": 0.05,
    }
    return linker_settings(
        tmp_path_factory.mktemp("linker-kafka"),
        str(tiny_linker(tmp_path_factory)),
        bus="kafka",
        kafka=kafka,
    )


@pytest.fixture(scope="module")
def served(settings: Settings) -> Iterator[InProcessDeployment]:
    server = InProcessDeployment(["linker"], settings)
    yield server
    server.close()


@pytest.fixture(scope="module")
def stub(
    settings: Settings, served: InProcessDeployment
) -> Iterator[linker_pb2_grpc.LinkerServiceStub]:
    with Connection(settings.serving.address_for("linker")) as conn:
        yield linker_pb2_grpc.LinkerServiceStub(conn.channel)


def upserted(kb: str, entity: linker_pb2.Entity) -> linker_pb2.EntityEvent:
    return linker_pb2.EntityEvent(knowledge_base=kb, upserted=entity)


def deleted(kb: str, entity_id: str) -> linker_pb2.EntityEvent:
    return linker_pb2.EntityEvent(knowledge_base=kb, deleted_id=entity_id)


def test_entity_events_upsert_delete_replay_and_dead_letter(
    settings: Settings, served: InProcessDeployment, stub: linker_pb2_grpc.LinkerServiceStub
) -> None:
    kb = f"events-{uuid.uuid4().hex[:6]}"
    events = [upserted(kb, e) for e in ENTITIES] + [deleted(kb, ENTITIES[1].id)]
    no_content = upserted(kb, linker_pb2.Entity(id="empty"))
    corrupt = upserted(
        kb, linker_pb2.Entity(id="corrupt", name="x", images=[common_pb2.Image(data=b"\x89PNG..")])
    )
    lock = threading.Lock()
    dead: dict[bytes | None, Delivery] = {}

    def on_dead(_: bytes, delivery: Delivery) -> None:
        if delivery.key and delivery.key.startswith(kb.encode()):
            with lock:
                dead[delivery.key] = delivery

    def key(event: linker_pb2.EntityEvent) -> str:
        entity_id = event.upserted.id if event.HasField("upserted") else event.deleted_id
        return f"{event.knowledge_base}/{entity_id}"

    with make_bus(settings) as bus:
        observer = bus.subscribe_raw(dlq_topic(topics.ENTITIES), f"dlq-{kb}", on_dead).start()
        try:
            for event in [*events[:3], no_content, *events[3:], corrupt]:
                bus.publish(topics.ENTITIES, key(event), event)
            bus.flush()
            wait_until(lambda: counts(stub).get(kb) == len(ENTITIES) - 1, "5 entities in the KB")
            wait_until(lambda: len(dead) >= 2, "the two bad entities in the DLQ")
            empty = dead[f"{kb}/empty".encode()].headers
            assert empty[DlqHeaders.ERROR].startswith("upserted: has neither text")
            assert empty[DlqHeaders.EXCEPTION].endswith("InvalidArgument")
            assert (
                dead[f"{kb}/corrupt".encode()]
                .headers[DlqHeaders.ERROR]
                .startswith("upserted.images[0].data")
            )
            before = ranking(link(stub, kb, MENTIONS, top_k=10))
            assert all(
                ENTITIES[1].id not in [c.entity_id for c in x.candidates]
                for x in link(stub, kb, MENTIONS, top_k=10).links
            )

            # A replay of every event changes nothing.
            for event in events:
                bus.publish(topics.ENTITIES, key(event), event)
            bus.flush()
            end = bus.end_offsets(topics.ENTITIES)
            wait_until(
                lambda: all(
                    bus.committed(topics.ENTITIES, "linker").get(p, 0) >= e for p, e in end.items()
                ),
                "the linker to commit the replayed events",
            )
            assert counts(stub)[kb] == len(ENTITIES) - 1
            assert ranking(link(stub, kb, MENTIONS, top_k=10)) == before
        finally:
            observer.stop()


def test_align_job_states_on_kafka_and_failed_job_dead_lettered(
    settings: Settings, served: InProcessDeployment, stub: linker_pb2_grpc.LinkerServiceStub
) -> None:
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    bad_id = f"bad-{uuid.uuid4().hex[:8]}"
    lock = threading.Lock()
    states: dict[str, list[int]] = {}
    dead: dict[bytes | None, Delivery] = {}

    def on_status(status: linker_pb2.AlignJobStatus, _: Delivery) -> None:
        with lock:
            states.setdefault(status.job_id, []).append(status.state)

    def on_dead(_: bytes, delivery: Delivery) -> None:
        with lock:
            dead[delivery.key] = delivery

    request, truth, seeded = align_request()
    with make_bus(settings) as bus:
        observers = [
            bus.subscribe(
                topics.ALIGNED, f"obs-{job_id}", on_status, linker_pb2.AlignJobStatus
            ).start(),
            bus.subscribe_raw(dlq_topic(topics.ALIGN_JOBS), f"dlq-{job_id}", on_dead).start(),
        ]
        try:
            status = stub.SubmitAlignJob(
                linker_pb2.SubmitAlignJobRequest(graphs=request, job_id=job_id), timeout=30
            )
            assert status.state == linker_pb2.ALIGN_JOB_STATE_QUEUED
            wait_until(
                lambda: linker_pb2.ALIGN_JOB_STATE_SUCCEEDED in states.get(job_id, []),
                "the job's SUCCEEDED status on concord.aligned",
            )
            seen = states[job_id]
            assert seen[0] == linker_pb2.ALIGN_JOB_STATE_QUEUED, seen
            assert seen == sorted(seen), seen  # states only move forward
            assert linker_pb2.ALIGN_JOB_STATE_RUNNING in seen
            result = stub.GetAlignResult(
                linker_pb2.GetAlignResultRequest(job_id=job_id), timeout=30
            )
            assert len(result.pairs) == len(truth) - len(seeded)

            # A job published straight to the topic naming an unknown entity: FAILED + DLQ.
            bad, _, _ = align_request()
            bad.source.triples[0].head = "ghost"
            bus.publish(topics.ALIGN_JOBS, bad_id, linker_pb2.AlignJob(job_id=bad_id, request=bad))
            bus.flush()
            wait_until(lambda: bad_id.encode() in dead, "the malformed job in the DLQ")
            assert "source.triples[0].head" in dead[bad_id.encode()].headers[DlqHeaders.ERROR]
            failed = stub.GetAlignJob(linker_pb2.GetAlignJobRequest(job_id=bad_id), timeout=30)
            assert failed.state == linker_pb2.ALIGN_JOB_STATE_FAILED
            assert "source.triples[0].head" in failed.message
        finally:
            for observer in observers:
                observer.stop()
