"""Faults while consuming: a dependency that is down is waited out (records put back,
uncommitted, fetched again with backoff), never dead-lettered as if the content were bad;
bad content still goes to the DLQ at once; an outage longer than the bound dead-letters with
its own reason; a replacement member resumes within seconds of a SIGKILLed one.

Counted in every outage test: lost events (goal 0), valid events in the DLQ (goal 0) and
duplicated points (goal 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from concord.bus import Delivery, DlqHeaders, MemoryBus, MemoryLog, Reason, dlq_topic, topics
from concord.bus.consumer import dependency_down
from concord.bus.records import BusError
from concord.config import Settings
from concord.errors import (
    ConcordError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from concord.proto.v1 import common_pb2, events_pb2
from concord.proto.v1.events_pb2 import IngestRequest
from tests.fixtures.bus import Recorder, ingest_event
from tests.fixtures.media import png
from tests.fixtures.models import tiny_encoder
from tests.fixtures.serving import InProcessDeployment, free_ports
from tests.fixtures.waiting import wait_until as _wait_until

REPO = Path(__file__).resolve().parents[2]
WAIT = 60.0


def wait_until(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    _wait_until(cond, what, timeout, interval=0.05)


class _RpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def test_what_counts_as_a_dependency_outage() -> None:
    down = [
        Unavailable("encoder at 127.0.0.1:1 is down"),
        DeadlineExceeded("late"),
        ResourceExhausted("queue full"),
        BusError("publish not acknowledged"),
        ConnectionRefusedError(),
        _RpcError(grpc.StatusCode.UNAVAILABLE),
        _RpcError(grpc.StatusCode.DEADLINE_EXCEEDED),
    ]
    late = ConcordError("deadline")  # what error_from_rpc makes of DEADLINE_EXCEEDED
    late.status = "DEADLINE_EXCEEDED"
    down.append(late)
    bad = [
        InvalidArgument("item.image.data", "not an image"),
        FailedPrecondition("no model"),
        ValueError("boom"),
        _RpcError(grpc.StatusCode.INVALID_ARGUMENT),
        _RpcError(grpc.StatusCode.INTERNAL),
    ]
    assert [dependency_down(e) for e in down] == [True] * len(down)
    assert [dependency_down(e) for e in bad] == [False] * len(bad)


class FlakyDependency:
    """A handler whose dependency is down while `down` is set: it raises `error` then.
    Record `mbad` is bad content (InvalidArgument) whenever they are handled."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.down = threading.Event()
        self.handled = Recorder()
        self.failures = 0
        self.lock = threading.Lock()

    def __call__(self, message: IngestRequest, delivery: Delivery) -> None:
        if self.down.is_set():
            with self.lock:
                self.failures += 1
            raise self.error
        if message.id == "mbad":
            raise InvalidArgument("item.text", "is empty")
        self.handled(message, delivery)

    def batch(self, items: list[tuple[IngestRequest, Delivery]]) -> None:
        # Like the ingest worker: the whole batch is checked before any effect.
        if self.down.is_set():
            with self.lock:
                self.failures += 1
            raise self.error
        if any(message.id == "mbad" for message, _ in items):
            raise InvalidArgument("item.text", "is empty")
        for message, delivery in items:
            self(message, delivery)


@pytest.mark.parametrize("batched", [False, True], ids=["per-record", "batched"])
@pytest.mark.parametrize(
    "error",
    [Unavailable("encoder down"), _RpcError(grpc.StatusCode.DEADLINE_EXCEEDED)],
    ids=["unavailable", "deadline"],
)
def test_an_outage_is_waited_out_and_nothing_valid_is_dead_lettered(
    batched: bool, error: Exception
) -> None:
    bus = MemoryBus(partitions=3, max_retries=2, retry_backoff_seconds=0.02)
    dependency = FlakyDependency(error)
    topic = "ingest"
    dead: list[Delivery] = []
    dlq = bus.subscribe_raw(dlq_topic(topic), "dlq", lambda _, d: dead.append(d)).start()
    if batched:
        consumer = bus.subscribe_batch(topic, "w", dependency.batch, IngestRequest).start()
    else:
        consumer = bus.subscribe(topic, "w", dependency, IngestRequest).start()
    for i in range(10):
        bus.publish(topic, f"k{i}", ingest_event(i))
    wait_until(lambda: len(dependency.handled.ids()) == 10, "the first events")

    dependency.down.set()  # the outage: longer than the old 3 retries (~0.14 s here)
    for i in range(10, 40):
        bus.publish(topic, f"k{i}", ingest_event(i))
    bus.publish(topic, "kbad", ingest_event("bad"))
    wait_until(lambda: consumer.outage_waits >= 5, "the consumer to wait out the outage")
    time.sleep(0.5)
    assert dead == [] and len(dependency.handled.ids()) == 10
    dependency.down.clear()

    want = {f"m{i}" for i in range(40)}
    wait_until(lambda: set(dependency.handled.ids()) == want, "every valid event")
    wait_until(lambda: len(dead) == 1, "the bad event in the DLQ")
    assert consumer.stop() and dlq.stop()
    assert dependency.failures >= 5
    assert sorted(dependency.handled.ids()) == sorted(want)  # 0 lost, 0 handled twice
    assert dead[0].key == b"kbad"  # 0 valid events dead-lettered
    assert dead[0].headers[DlqHeaders.REASON] == Reason.HANDLER_FAILED
    assert dead[0].headers[DlqHeaders.ATTEMPTS] == "1"  # bad content: no retries
    assert bus.committed(topic, "w") == bus.end_offsets(topic)


def test_an_outage_longer_than_the_bound_dead_letters_with_its_own_reason() -> None:
    bus = MemoryBus(
        partitions=1, max_retries=3, retry_backoff_seconds=0.02, outage_retry_seconds=0.5
    )
    dependency = FlakyDependency(Unavailable("encoder at 127.0.0.1:1 is down"))
    dependency.down.set()
    dead: list[Delivery] = []
    dlq = bus.subscribe_raw(dlq_topic("t"), "dlq", lambda _, d: dead.append(d)).start()
    consumer = bus.subscribe("t", "w", dependency, IngestRequest).start()
    started = time.monotonic()
    for i in range(3):
        bus.publish("t", "k", ingest_event(i))
    wait_until(lambda: len(dead) == 3, "the records to give up on")
    waited = time.monotonic() - started
    assert consumer.stop() and dlq.stop()
    assert waited >= 0.5
    assert {d.headers[DlqHeaders.REASON] for d in dead} == {Reason.DEPENDENCY_UNAVAILABLE}
    assert dead[0].headers[DlqHeaders.EXCEPTION] == "concord.errors.Unavailable"


def test_a_stop_during_an_outage_leaves_the_record_uncommitted() -> None:
    bus = MemoryBus(partitions=1, retry_backoff_seconds=0.02)
    dependency = FlakyDependency(Unavailable("down"))
    dependency.down.set()
    consumer = bus.subscribe("t", "w", dependency, IngestRequest).start()
    for i in range(3):
        bus.publish("t", "k", ingest_event(i))
    wait_until(lambda: dependency.failures >= 2, "the outage")
    started = time.monotonic()
    assert consumer.stop(timeout=10)
    assert time.monotonic() - started < 6.0  # the backoff does not hold a stop
    assert bus.committed("t", "w") in ({}, {0: 0})
    dependency.down.clear()
    replacement = bus.subscribe("t", "w", dependency, IngestRequest).start()
    wait_until(lambda: len(dependency.handled.ids()) == 3, "the replacement")
    assert replacement.stop()
    assert dependency.handled.ids() == ["m0", "m1", "m2"]


# ---------------------------------------------------------------------- the real services


@pytest.fixture
def private_log(monkeypatch: pytest.MonkeyPatch) -> MemoryLog:
    """The embedded bus of the services under test, apart from other tests' events."""
    log = MemoryLog()
    monkeypatch.setattr("concord.bus.memory.EMBEDDED_LOG", log)
    return log


@pytest.fixture
def outage_settings(tmp_path_factory: pytest.TempPathFactory, private_log: MemoryLog) -> Settings:
    encoder, retrieval = free_ports(2)
    return Settings(
        home=tmp_path_factory.mktemp("faults") / "home",
        encoder_model=str(tiny_encoder(tmp_path_factory)),
        serving={"ports": {"encoder": encoder, "retrieval": retrieval}, "metrics_port": 0},
        kafka={"group_prefix": f"t{uuid.uuid4().hex[:8]}", "retry_backoff_seconds": 0.05},
    )


@pytest.fixture
def retrieval_only(outage_settings: Settings) -> Iterator[InProcessDeployment]:
    server = InProcessDeployment(["retrieval"], outage_settings)
    yield server
    server.close()


def _event(collection: str, i: int) -> events_pb2.IngestRequest:
    if i % 2:
        item = common_pb2.Item(text=f"caption number {i}")
    else:
        colour = (i * 37 % 256, i * 91 % 256, i * 53 % 256)
        item = common_pb2.Item(image=common_pb2.Image(data=png(colour, 16), media_type="image/png"))
    return events_pb2.IngestRequest(collection=collection, item=item)


@pytest.mark.slow
def test_encoder_down_during_ingest_loses_nothing_and_dead_letters_nothing_valid(
    outage_settings: Settings, private_log: MemoryLog, retrieval_only: InProcessDeployment
) -> None:
    """The issue's case: the encoder goes away for a few seconds while the retrieval service
    ingests; before, 20 of 80 valid events went to the DLQ after ~1.4 s of retries."""
    from concord.bus import make_bus

    collection = f"faults-{uuid.uuid4().hex[:8]}"
    lock = threading.Lock()
    indexed: list[str] = []
    dead: list[Delivery] = []

    def on_indexed(message: events_pb2.Indexed, _: Delivery) -> None:
        with lock:
            indexed.append(message.id)

    bus = make_bus(outage_settings)
    observers = [
        bus.subscribe(topics.INDEXED, "obs", on_indexed, events_pb2.Indexed).start(),
        bus.subscribe_raw(dlq_topic(topics.INGEST), "dlq", lambda _, d: dead.append(d)).start(),
    ]
    encoder = InProcessDeployment(["encoder"], outage_settings)
    try:
        for i in range(10):
            bus.publish(topics.INGEST, f"{collection}-{i}", _event(collection, i))
        wait_until(lambda: len(set(indexed)) == 10, "the events before the outage")
        encoder.close()  # the encoder's port closes: UNAVAILABLE

        for i in range(10, 40):
            bus.publish(topics.INGEST, f"{collection}-{i}", _event(collection, i))
        corrupt = events_pb2.IngestRequest(
            collection=collection,
            item=common_pb2.Item(image=common_pb2.Image(data=png((1, 2, 3))[:60])),
        )
        bus.publish(topics.INGEST, f"{collection}-corrupt", corrupt)
        # An outage of a few seconds: the old retries (3 here, 0.35 s) gave up far sooner.
        time.sleep(3.0)
        assert dead == [] and len(set(indexed)) == 10

        encoder = InProcessDeployment(["encoder"], outage_settings)  # the same port
        wait_until(lambda: len(set(indexed)) == 40, "every valid event after the outage")
        wait_until(lambda: len(dead) == 1, "the corrupt image in the DLQ")
        assert dead[0].key == f"{collection}-corrupt".encode()  # 0 valid events dead-lettered
        assert dead[0].headers[DlqHeaders.REASON] == Reason.HANDLER_FAILED
        from concord.clients import Concord

        with Concord(outage_settings) as sdk:
            points = sdk.retrieval.collection(collection).points
        assert points == 40  # 0 lost, 0 duplicated (ids are content hashes)
    finally:
        for observer in observers:
            observer.stop()
        encoder.close()
        bus.close()


# ---------------------------------------------------------------------- Kafka: session timeout

CHILD = """
import time
from concord.bus import make_bus
from concord.config import load_settings
from concord.proto.v1.events_pb2 import IngestRequest
def handler(msg, d):
    print("HANDLED", msg.id, flush=True)
    time.sleep(3600)
make_bus(load_settings()).subscribe("{topic}", "g", handler, IngestRequest).run()
"""


@pytest.mark.kafka
@pytest.mark.slow
def test_a_replacement_resumes_within_seconds_of_a_killed_member(kafka_broker) -> None:  # type: ignore[no-untyped-def]
    """kafka-python's default 45 s session kept a replacement idle for 48 s; the settings'
    session timeout (10 s by default, 2 s here) bounds it."""
    from concord.bus import make_bus
    from concord.bus.kafka import SESSION_TIMEOUT_MS

    prefix = f"t{uuid.uuid4().hex[:8]}"
    env = {
        "CONCORD_BUS": "kafka",
        "CONCORD_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        "CONCORD_KAFKA__GROUP_PREFIX": prefix,
        "CONCORD_KAFKA__SESSION_TIMEOUT_MS": "2000",
        "CONCORD_KAFKA__HEARTBEAT_INTERVAL_MS": "200",
    }
    settings = Settings(
        bus="kafka",
        kafka={
            "bootstrap_servers": kafka_broker.bootstrap,
            "group_prefix": prefix,
            "session_timeout_ms": 2000,
            "heartbeat_interval_ms": 200,
        },
    )
    assert Settings().kafka.session_timeout_ms == SESSION_TIMEOUT_MS == 10_000
    topic = f"resume-{uuid.uuid4().hex[:8]}"
    with make_bus(settings) as bus:
        bus.ensure_topics([topic], partitions=1)
        bus.publish(topic, "k", ingest_event(0))
        bus.publish(topic, "k", ingest_event(1))
        bus.flush(timeout=30)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD.format(topic=topic)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert child.stdout is not None
            output = []
            for line in child.stdout:  # blocks until the child handles m0 (then hangs in it)
                output.append(line)
                if line.startswith("HANDLED"):
                    break
            else:
                raise AssertionError("the member never handled m0:\n" + "".join(output))
        finally:
            child.send_signal(signal.SIGKILL)  # no commit, no LeaveGroup
            child.wait(30)
        killed = time.monotonic()
        rec = Recorder()
        replacement = bus.subscribe(topic, "g", rec, IngestRequest).start()
        try:
            wait_until(lambda: rec.ids() == ["m0", "m1"], "the replacement", timeout=30)
            resumed = time.monotonic() - killed
        finally:
            replacement.stop()
    assert resumed < 8.0, f"the replacement resumed after {resumed:.1f} s"


# ---------------------------------------------------------------------- Kafka: broker restart


@pytest.mark.kafka
@pytest.mark.slow
def test_a_broker_restart_during_ingest_loses_nothing_and_dead_letters_nothing(  # type: ignore[no-untyped-def]
    kafka_broker, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The broker goes down while the retrieval service ingests: its publishes of Indexed
    events fail (BusError) and are waited out like any dependency outage; every event is
    indexed once as a point, none reaches the DLQ."""
    from concord.bus import make_bus
    from concord.clients import Concord
    from concord.errors import NotFound

    encoder, retrieval = free_ports(2)
    settings = Settings(
        home=tmp_path_factory.mktemp("restart") / "home",
        encoder_model=str(tiny_encoder(tmp_path_factory)),
        serving={"ports": {"encoder": encoder, "retrieval": retrieval}, "metrics_port": 0},
        bus="kafka",
        kafka={
            "bootstrap_servers": kafka_broker.bootstrap,
            "group_prefix": f"t{uuid.uuid4().hex[:8]}",
            "retry_backoff_seconds": 0.05,
            "max_retries": 1,
            "session_timeout_ms": 3000,
            "heartbeat_interval_ms": 300,
        },
    )
    collection = f"restart-{uuid.uuid4().hex[:8]}"
    dlq = dlq_topic(topics.INGEST)
    server = InProcessDeployment(["encoder", "retrieval"], settings)
    bus = make_bus(settings)
    sdk = Concord(settings)

    def points() -> int:
        try:
            return sdk.retrieval.collection(collection).points
        except NotFound:
            return 0

    try:
        bus.ensure_topics([topics.INGEST, dlq])
        dlq_before = bus.end_offsets(dlq)
        for i in range(20):
            bus.publish(topics.INGEST, f"{collection}-{i}", _event(collection, i))
        bus.flush(timeout=60)
        wait_until(lambda: points() >= 5, "ingest to be under way")
        restart = threading.Thread(target=kafka_broker.restart)
        restart.start()  # the broker goes down while the worker ingests
        for i in range(20, 40):  # published into the outage: the producer holds them
            bus.publish(topics.INGEST, f"{collection}-{i}", _event(collection, i))
        restart.join(120)
        bus.flush(timeout=120)
        wait_until(lambda: points() == 40, "every event after the restart", 120)
        time.sleep(1.0)  # a late dead-letter would show up by now
        assert _keys_since(kafka_broker.bootstrap, dlq, dlq_before, collection) == []
        assert points() == 40  # 0 lost, 0 duplicated (ids are content hashes)
    finally:
        sdk.close()
        server.close()
        bus.close()


def _keys_since(bootstrap: str, topic: str, since: dict[int, int], prefix: str) -> list[bytes]:
    """Keys starting with `prefix` written to `topic` after the offsets `since` (read
    without a consumer group, so no rebalance can delay it)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(since)]
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, since[tp.partition])
        end = consumer.end_offsets(parts)
        keys: list[bytes] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end[tp] for tp in parts):
            assert time.monotonic() < deadline, "the DLQ could not be read"
            for records in consumer.poll(timeout_ms=500).values():
                keys += [r.key for r in records if (r.key or b"").startswith(prefix.encode())]
        return keys
    finally:
        consumer.close()
