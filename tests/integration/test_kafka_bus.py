"""The Kafka bus against a real broker: keyed partitions, groups, commit-after-success, crash
recovery (SIGKILLed consumer process), DLQ, clean stop, and a broker restart."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from concord.bus import Delivery, DlqHeaders, Reason, dlq_topic, make_bus
from concord.bus.kafka import KafkaBus
from concord.config import Settings
from concord.proto.v1.events_pb2 import Indexed, IngestRequest
from tests.fixtures.bus import Recorder, ingest_event
from tests.fixtures.waiting import wait_until as _wait_until
from tools.kafka.broker import KafkaBroker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
WAIT = 60.0  # bound for anything that crosses the broker; a hang fails with a message


def wait_until(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    _wait_until(cond, what, timeout)


# Short sessions so a dead member is noticed in seconds (the test broker allows >= 500 ms).
CONSUMER_CONFIG = {
    "session_timeout_ms": 3000,
    "heartbeat_interval_ms": 300,
    "fetch_max_wait_ms": 100,
}


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def bus(kafka_broker: KafkaBroker) -> Iterator[KafkaBus]:
    b = KafkaBus(
        kafka_broker.bootstrap,
        partitions=3,
        max_retries=2,
        retry_backoff_seconds=0.05,
        consumer_config=CONSUMER_CONFIG,
    )
    yield b
    b.close()


def test_keyed_records_keep_partition_and_order(bus: KafkaBus) -> None:
    topic = name("keys")
    for i in range(30):
        bus.publish(topic, f"k{i % 5}", ingest_event(i))
    bus.flush(timeout=30)
    rec = Recorder()
    c = bus.subscribe(topic, topic, rec, IngestRequest).start()
    wait_until(lambda: len(rec.ids()) >= 30, "30 deliveries")
    assert c.stop()
    by_key: dict[bytes | None, set[int]] = {}
    order: dict[bytes | None, list[int]] = {}
    for mid, d in rec.calls:
        by_key.setdefault(d.key, set()).add(d.partition)
        order.setdefault(d.key, []).append(int(mid[1:]))
    assert all(len(parts) == 1 for parts in by_key.values()), by_key
    assert set(bus.end_offsets(topic)) == {0, 1, 2}
    assert all(seq == sorted(seq) for seq in order.values()), order
    assert rec.calls[0][1].headers["concord.message-type"] == "concord.v1.IngestRequest"
    assert bus.committed(topic, topic) == {p: o for p, o in bus.end_offsets(topic).items() if o}


def test_two_groups_each_get_everything_via_make_bus(kafka_broker: KafkaBroker) -> None:
    settings = Settings(
        bus="kafka", kafka={"bootstrap_servers": kafka_broker.bootstrap, "group_prefix": "it"}
    )
    bus = make_bus(settings)
    assert isinstance(bus, KafkaBus)
    topic = name("groups")
    a, b = Recorder(), Recorder()
    ca = bus.subscribe(topic, "a", a, IngestRequest).start()
    cb = bus.subscribe(topic, "b", b, IngestRequest).start()
    want = {f"m{i}" for i in range(20)}
    for i in range(20):
        bus.publish(topic, f"k{i}", ingest_event(i))
    bus.flush(timeout=30)
    wait_until(lambda: set(a.ids()) == want and set(b.ids()) == want, "both groups")
    assert ca.stop() and cb.stop()
    end = {p: o for p, o in bus.end_offsets(topic).items() if o}
    assert bus.committed(topic, "a") == end and bus.committed(topic, "b") == end
    bus.close()


def test_failed_handler_is_retried_and_committed_once_done(bus: KafkaBus) -> None:
    topic = name("retry")
    attempts: dict[str, int] = {}

    def flaky(msg: IngestRequest, d: Delivery) -> None:
        attempts[msg.id] = attempts.get(msg.id, 0) + 1
        if attempts[msg.id] == 1:
            raise RuntimeError("transient")

    bus.publish(topic, "k", ingest_event(1))
    bus.flush(timeout=30)
    c = bus.subscribe(topic, topic, flaky, IngestRequest).start()
    end = {p: o for p, o in bus.end_offsets(topic).items() if o}
    wait_until(lambda: bus.committed(topic, topic) == end, "the commit")
    assert c.stop()
    assert attempts == {"m1": 2}
    assert c.handled == 1 and c.dead_lettered == 0
    assert not any(bus.end_offsets(dlq_topic(topic)).values())


def test_poison_and_hopeless_records_go_to_dlq(bus: KafkaBus) -> None:
    topic = name("poison")
    seen: list[str] = []

    def handler(msg: IngestRequest, d: Delivery) -> None:
        seen.append(msg.id)
        if msg.id == "bad":
            raise ValueError("cannot index this")

    bus.ensure_topics([topic], partitions=1)
    bus.send_raw(topic, b"k", b"\xff\xff\xff", {}, timeout=30)
    bus.publish(topic, "k", Indexed(id="other"))
    bus.publish(topic, "k", IngestRequest(id="bad"))
    bus.publish(topic, "k", IngestRequest(id="good"))
    bus.flush(timeout=30)
    c = bus.subscribe(topic, topic, handler, IngestRequest).start()
    dead: list[tuple[bytes, Delivery]] = []
    reader = bus.subscribe_raw(
        dlq_topic(topic), "dlq-reader", lambda raw, d: dead.append((raw, d))
    ).start()
    wait_until(lambda: "good" in seen and len(dead) == 3, "the DLQ and the next record")
    assert c.stop() and reader.stop()
    reasons = [d.headers[DlqHeaders.REASON] for _, d in dead]
    assert reasons == [Reason.UNDECODABLE, Reason.WRONG_TYPE, Reason.HANDLER_FAILED]
    (raw, undecodable), _, (_, failed) = dead
    assert raw == b"\xff\xff\xff" and undecodable.key == b"k"
    assert undecodable.headers[DlqHeaders.TOPIC] == topic
    assert undecodable.headers[DlqHeaders.OFFSET] == "0"
    assert failed.headers[DlqHeaders.EXCEPTION] == "builtins.ValueError"
    assert failed.headers[DlqHeaders.ATTEMPTS] == "3"
    assert seen == ["bad", "bad", "bad", "good"]
    assert bus.committed(topic, topic) == {0: 4}


CHILD = """
import sys, time
from concord.bus.kafka import KafkaBus
from concord.proto.v1.events_pb2 import IngestRequest
bootstrap, topic, group, block_on = sys.argv[1:5]
bus = KafkaBus(bootstrap, consumer_config=eval(sys.argv[5]))
def handler(msg, d):
    if msg.id == block_on:
        print("BLOCKED", msg.id, flush=True)
        time.sleep(3600)
    print("HANDLED", msg.id, flush=True)
bus.subscribe(topic, group, handler, IngestRequest).run()
"""


def test_sigkilled_consumer_loses_nothing(bus: KafkaBus) -> None:
    topic = name("crash")
    bus.ensure_topics([topic], partitions=1)
    for i in range(10):
        bus.publish(topic, "k", ingest_event(i))
    bus.flush(timeout=30)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            bus.bootstrap_servers,
            topic,
            topic,
            "m5",
            repr(CONSUMER_CONFIG),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in child.stdout or ()], daemon=True).start()
    first: list[str] = []
    output: list[str] = []
    try:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    "the consumer process never blocked; its output:\n" + "".join(output)
                ) from None
            output.append(line)
            word, _, mid = line.strip().partition(" ")
            if word == "BLOCKED":
                break
            if word == "HANDLED":
                first.append(mid)
    finally:
        child.send_signal(signal.SIGKILL)  # a crash: no commit, no LeaveGroup
        child.wait(30)
    assert first == [f"m{i}" for i in range(5)]
    second = Recorder()
    c = bus.subscribe(topic, topic, second, IngestRequest).start()
    wait_until(lambda: "m9" in second.ids(), "the replacement to finish")
    assert c.stop()
    # Everything is handled at least once; the one in flight at the crash by the replacement.
    assert set(first) | set(second.ids()) == {f"m{i}" for i in range(10)}
    assert "m5" in second.ids()
    assert bus.committed(topic, topic) == {0: 10}


def test_stop_mid_batch_commits_the_current_record_only(bus: KafkaBus) -> None:
    topic = name("stop")
    bus.ensure_topics([topic], partitions=1)
    for i in range(10):
        bus.publish(topic, "k", ingest_event(i))
    bus.flush(timeout=30)
    blocked, release = threading.Event(), threading.Event()
    first = Recorder()

    def slow(msg: IngestRequest, d: Delivery) -> None:
        if msg.id == "m4":
            blocked.set()
            assert release.wait(WAIT)
        first(msg, d)

    a = bus.subscribe(topic, topic, slow, IngestRequest).start()
    assert blocked.wait(WAIT), "the consumer never reached m4"
    stopping = threading.Thread(target=a.stop)
    stopping.start()
    release.set()
    stopping.join(WAIT)
    assert not a.running
    assert first.ids() == [f"m{i}" for i in range(5)]
    assert bus.committed(topic, topic) == {0: 5}
    second = Recorder()
    b = bus.subscribe(topic, topic, second, IngestRequest).start()
    wait_until(lambda: "m9" in second.ids(), "the replacement")
    assert b.stop()
    assert second.ids() == [f"m{i}" for i in range(5, 10)]


def test_broker_restart_is_survived(kafka_broker: KafkaBroker, bus: KafkaBus) -> None:
    topic = name("restart")
    rec = Recorder()
    c = bus.subscribe(topic, topic, rec, IngestRequest).start()
    for i in range(10):
        bus.publish(topic, f"k{i}", ingest_event(i))
    bus.flush(timeout=30)
    wait_until(lambda: len(set(rec.ids())) == 10, "the first half")
    kafka_broker.restart()
    for i in range(10, 20):
        bus.publish(topic, f"k{i}", ingest_event(i))
    bus.flush(timeout=60)
    wait_until(lambda: set(rec.ids()) == {f"m{i}" for i in range(20)}, "the second half")
    assert c.stop()
    assert c.error is None
    end = {p: o for p, o in bus.end_offsets(topic).items() if o}
    wait_until(lambda: bus.committed(topic, topic) == end, "commits after the restart")


def test_a_member_whose_join_never_ends_is_replaced_and_nothing_is_lost(bus: KafkaBus) -> None:
    """kafka-python can leave a join round in flight for good (heartbeats off, the broker
    evicts the member, which then waits on it forever). A member with no assignment long after
    a join began leaves and joins again as a new member, and the records still arrive."""
    topic = name("stuckjoin")
    rec = Recorder()
    c = bus.subscribe(topic, topic, rec, IngestRequest).start()
    for i in range(5):
        bus.publish(topic, f"k{i}", ingest_event(i))
    bus.flush(timeout=30)
    wait_until(lambda: len(set(rec.ids())) == 5, "the first 5 records")

    def stuck_then_replaced() -> bool:
        # As if a rebalance had revoked everything long ago and no assignment had followed.
        # Marked again whenever a join round that was still settling ends (its assignment clears
        # the mark); never once the member is being replaced (its new join sets its own time).
        if c.rejoins == 0 and c._joining_since is None:
            c._joining_since = time.monotonic() - c.join_stuck_seconds - 1
        return c.rejoins == 1

    wait_until(stuck_then_replaced, "the replacement member")
    for i in range(5, 10):
        bus.publish(topic, f"k{i}", ingest_event(i))
    bus.flush(timeout=30)
    wait_until(lambda: set(rec.ids()) == {f"m{i}" for i in range(10)}, "all 10 records")
    assert c.stop()
    assert c.rejoins == 1  # the new member's join ended in an assignment
    end = {p: o for p, o in bus.end_offsets(topic).items() if o}
    assert bus.committed(topic, topic) == end
