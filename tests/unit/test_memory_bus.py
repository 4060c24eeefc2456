"""The embedded memory bus keeps the bus contract: keyed partitions, consumer groups,
commit-after-success, retries, `<topic>.dlq`, clean stop and crash recovery."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from concord.bus import (
    Delivery,
    DlqHeaders,
    MemoryBus,
    Reason,
    Worker,
    dlq_topic,
    make_bus,
    topics,
)
from concord.bus.memory import EMBEDDED_LOG
from concord.config import Settings
from concord.errors import InvalidArgument
from concord.proto.v1.events_pb2 import Indexed, IngestRequest
from tests.fixtures.bus import Recorder, ingest_event
from tests.fixtures.waiting import wait_until as _wait_until

WAIT = 10.0  # generous bound for in-process delivery; tests never sleep to assert


def wait_until(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    _wait_until(cond, what, timeout)


@pytest.fixture
def bus() -> MemoryBus:
    return MemoryBus(partitions=3, max_retries=2, retry_backoff_seconds=0.01)


def test_same_key_same_partition_in_order(bus: MemoryBus) -> None:
    for i in range(30):
        bus.publish("t", f"k{i % 5}", ingest_event(i))
    rec = Recorder()
    c = bus.subscribe("t", "g", rec, IngestRequest).start()
    wait_until(lambda: len(rec.ids()) == 30, "30 deliveries")
    c.stop()
    by_key: dict[bytes | None, set[int]] = {}
    order: dict[bytes | None, list[int]] = {}
    for mid, d in rec.calls:
        by_key.setdefault(d.key, set()).add(d.partition)
        order.setdefault(d.key, []).append(int(mid[1:]))
    assert all(len(parts) == 1 for parts in by_key.values()), by_key
    assert len({p for parts in by_key.values() for p in parts}) > 1  # keys do spread
    assert all(seq == sorted(seq) for seq in order.values()), order
    assert rec.calls[0][1].headers["concord.message-type"] == "concord.v1.IngestRequest"


def test_each_group_gets_everything_members_split_it(bus: MemoryBus) -> None:
    a, b1, b2 = Recorder(), Recorder(), Recorder()
    consumers = [
        bus.subscribe("t", "a", a, IngestRequest).start(),
        bus.subscribe("t", "b", b1, IngestRequest).start(),
        bus.subscribe("t", "b", b2, IngestRequest).start(),
    ]
    want = {f"m{i}" for i in range(60)}
    for i in range(60):
        bus.publish("t", f"k{i}", ingest_event(i))
    wait_until(lambda: set(a.ids()) == want, "group a to see all")
    wait_until(lambda: set(b1.ids()) | set(b2.ids()) == want, "group b to see all")
    for c in consumers:
        assert c.stop()
    assert sorted(a.ids()) == sorted(want)  # exactly once without failures
    assert sorted(b1.ids() + b2.ids()) == sorted(want)
    assert bus.committed("t", "a") == bus.end_offsets("t")
    assert bus.committed("t", "b") == bus.end_offsets("t")


def test_new_group_reads_from_the_start(bus: MemoryBus) -> None:
    for i in range(5):
        bus.publish("t", "k", ingest_event(i))
    first = Recorder()
    c = bus.subscribe("t", "first", first, IngestRequest).start()
    wait_until(lambda: len(first.ids()) == 5, "first group")
    c.stop()
    late = Recorder()
    c = bus.subscribe("t", "late", late, IngestRequest).start()
    wait_until(lambda: len(late.ids()) == 5, "late group")
    c.stop()
    assert late.ids() == [f"m{i}" for i in range(5)]


def test_failed_handler_is_retried_then_committed(bus: MemoryBus) -> None:
    attempts: dict[str, int] = {}

    def flaky(msg: IngestRequest, d: Delivery) -> None:
        attempts[msg.id] = attempts.get(msg.id, 0) + 1
        if attempts[msg.id] == 1:
            raise RuntimeError("transient")

    bus.publish("t", "k", ingest_event(1))
    c = bus.subscribe("t", "g", flaky, IngestRequest).start()
    wait_until(
        lambda: bus.committed("t", "g") == {p: o for p, o in bus.end_offsets("t").items() if o},
        "commit",
    )
    c.stop()
    assert attempts == {"m1": 2}
    assert c.handled == 1 and c.dead_lettered == 0
    assert bus.end_offsets(dlq_topic("t")) == dict.fromkeys(range(3), 0)


def test_poison_and_hopeless_records_go_to_dlq_and_consumer_moves_on(bus: MemoryBus) -> None:
    calls: list[str] = []

    def handler(msg: IngestRequest, d: Delivery) -> None:
        calls.append(msg.id)
        if msg.id == "bad":
            raise ValueError("cannot index this")

    bus.log.append("t", b"k", b"\xff\xff\xff", {})  # not an IngestRequest
    bus.publish("t", "k", Indexed(id="other"))  # valid bytes, wrong type (header says so)
    bus.publish("t", "k", IngestRequest(id="bad"))
    bus.publish("t", "k", IngestRequest(id="good"))
    c = bus.subscribe("t", "g", handler, IngestRequest).start()
    wait_until(lambda: "good" in calls, "the record after the poison")
    c.stop()
    dlq = bus.log.records(dlq_topic("t"))
    reasons = [r.headers[DlqHeaders.REASON] for r in dlq]
    assert reasons == [Reason.UNDECODABLE, Reason.WRONG_TYPE, Reason.HANDLER_FAILED]
    undecodable, _, failed = dlq
    assert undecodable.value == b"\xff\xff\xff" and undecodable.key == b"k"
    assert undecodable.headers[DlqHeaders.ATTEMPTS] == "0"
    assert undecodable.headers[DlqHeaders.TOPIC] == "t"
    assert failed.headers[DlqHeaders.EXCEPTION] == "builtins.ValueError"
    assert failed.headers[DlqHeaders.ERROR] == "cannot index this"
    assert failed.headers[DlqHeaders.ATTEMPTS] == "3"  # 1 + max_retries
    assert failed.headers[DlqHeaders.OFFSET] == "2"
    assert calls == ["bad", "bad", "bad", "good"]
    assert sum(bus.committed("t", "g").values()) == 4  # all four done, DLQ'd ones included


class Blocker:
    """Handler that records calls and blocks on one id until released (first time only)."""

    def __init__(self, block_on: str) -> None:
        self.rec = Recorder()
        self.block_on = block_on
        self.blocked = threading.Event()
        self.release = threading.Event()

    def __call__(self, msg: IngestRequest, d: Delivery) -> None:
        if msg.id == self.block_on and not self.blocked.is_set():
            self.blocked.set()
            assert self.release.wait(WAIT), "test never released the handler"
        self.rec(msg, d)


def test_aborted_consumer_loses_nothing() -> None:
    bus = MemoryBus(partitions=1)
    for i in range(10):
        bus.publish("t", "k", ingest_event(i))
    first = Blocker("m4")
    a = bus.subscribe("t", "g", first, IngestRequest).start()
    assert first.blocked.wait(WAIT)
    aborting = threading.Thread(target=a.abort)
    aborting.start()  # abort waits for the handler, like a crash mid-call would lose it
    first.release.set()
    aborting.join(WAIT)
    assert not a.running
    second = Recorder()
    b = bus.subscribe("t", "g", second, IngestRequest).start()
    wait_until(lambda: "m9" in second.ids(), "the replacement to finish")
    b.stop()
    # m0..m3 were committed before the crash; m4 (in flight) and the rest go to the new member.
    assert first.rec.ids()[:4] == ["m0", "m1", "m2", "m3"]
    assert second.ids() == [f"m{i}" for i in range(4, 10)]
    assert bus.committed("t", "g") == {0: 10}


def test_stop_finishes_current_record_and_commits_it() -> None:
    bus = MemoryBus(partitions=1)
    for i in range(10):
        bus.publish("t", "k", ingest_event(i))
    first = Blocker("m4")
    a = bus.subscribe("t", "g", first, IngestRequest).start()
    assert first.blocked.wait(WAIT)
    stopping = threading.Thread(target=a.stop)
    stopping.start()
    first.release.set()
    stopping.join(WAIT)
    assert not a.running
    assert first.rec.ids() == [f"m{i}" for i in range(5)]  # m4 finished, nothing after it
    assert bus.committed("t", "g") == {0: 5}
    second = Recorder()
    b = bus.subscribe("t", "g", second, IngestRequest).start()
    wait_until(lambda: "m9" in second.ids(), "the replacement to finish")
    b.stop()
    assert second.ids() == [f"m{i}" for i in range(5, 10)]


def test_partitions_move_to_a_new_member_only_after_release(bus: MemoryBus) -> None:
    for i in range(30):
        bus.publish("t", f"k{i}", ingest_event(i))
    first = Blocker("m0")
    a = bus.subscribe("t", "g", first, IngestRequest).start()
    assert first.blocked.wait(WAIT)
    second = Recorder()
    b = bus.subscribe("t", "g", second, IngestRequest).start()
    wait_until(lambda: bus.log.members("g", "t") == 2, "the second member to join")
    first.release.set()  # the first member finishes its batch, then gives partitions away
    for i in range(30, 60):
        bus.publish("t", f"k{i}", ingest_event(i))
    want = {f"m{i}" for i in range(60)}
    wait_until(lambda: set(first.rec.ids()) | set(second.ids()) == want, "all 60")
    a.stop()
    b.stop()
    assert second.ids(), "the new member never got a partition"
    assert len(first.rec.ids()) + len(second.ids()) == 60  # no record was handled twice
    assert bus.committed("t", "g") == bus.end_offsets("t")


def test_make_bus_embedded_shares_one_log() -> None:
    settings = Settings(bus="memory", kafka={"group_prefix": "svc", "max_retries": 5})
    one, two = make_bus(settings), make_bus(settings)
    assert isinstance(one, MemoryBus) and one.log is EMBEDDED_LOG and two.log is EMBEDDED_LOG
    assert one.max_retries == 5 and one.group_id("encoder") == "svc.encoder"


def test_bad_content_is_dead_lettered_without_retries(bus: MemoryBus) -> None:
    calls: list[str] = []

    def handler(msg: IngestRequest, d: Delivery) -> None:
        calls.append(msg.id)
        if msg.id == "corrupt":
            raise InvalidArgument("item.image.data", "is not a readable image")

    bus.publish("t", "k", IngestRequest(id="corrupt"))
    bus.publish("t", "k", IngestRequest(id="fine"))
    c = bus.subscribe("t", "g", handler, IngestRequest).start()
    wait_until(lambda: "fine" in calls, "the record after the bad one")
    c.stop()
    (dead,) = bus.log.records(dlq_topic("t"))
    assert dead.headers[DlqHeaders.REASON] == Reason.HANDLER_FAILED
    assert dead.headers[DlqHeaders.ATTEMPTS] == "1"
    assert "item.image.data" in dead.headers[DlqHeaders.ERROR]
    assert calls == ["corrupt", "fine"]


def test_batch_handler_takes_whole_polls_and_isolates_bad_records(bus: MemoryBus) -> None:
    batches: list[list[str]] = []
    lock = threading.Lock()

    def handler(items: list[tuple[IngestRequest, Delivery]]) -> None:
        ids = [m.id for m, _ in items]
        with lock:
            batches.append(ids)
        if "bad" in ids:
            raise InvalidArgument("item.text", "is empty")

    for i in range(6):
        bus.publish("t", "k", ingest_event(i))  # one key: one partition, one ordered poll
    bus.publish("t", "k", IngestRequest(id="bad"))
    bus.publish("t", "k", ingest_event(6))
    c = bus.subscribe_batch("t", "g", handler, IngestRequest).start()
    wait_until(lambda: sum(bus.committed("t", "g").values()) == 8, "all eight records committed")
    c.stop()
    handled_alone = [b for b in batches if len(b) == 1]
    assert max(len(b) for b in batches) > 1, f"no batch was formed: {batches}"
    # The failed batch was retried record by record: every record handled, only 'bad' dead.
    assert {i for b in batches for i in b} == {f"m{i}" for i in range(7)} | {"bad"}
    assert ["bad"] in handled_alone
    (dead,) = bus.log.records(dlq_topic("t"))
    assert IngestRequest.FromString(dead.value).id == "bad"


def test_topic_names_are_the_documented_wire_names() -> None:
    """Every service, test and benchmark reads concord.bus.topics; these are the names the
    README, the chart and other consumers of Concord's events know."""
    assert topics.INGEST == "concord.ingest"
    assert topics.INDEXED == "concord.indexed"
    assert topics.GENERATION_JOBS == "concord.generation.jobs"
    assert topics.GENERATED == "concord.generated"
    assert topics.AUDIT == "concord.audit"
    assert dlq_topic(topics.INGEST) == "concord.ingest.dlq"


def test_worker_base_consumes_in_its_group_and_stops_idempotently() -> None:
    class Counting(Worker):
        group = "counting"
        message_type = IngestRequest

        def __init__(self, bus: MemoryBus) -> None:
            super().__init__(lambda: bus, "t")
            self.rec = Recorder()

        def handle(self, message: IngestRequest, delivery: Delivery) -> None:
            self.rec(message, delivery)

    class Batching(Counting):
        group = "batching"
        batched = True

        def handle_batch(self, batch: list[tuple[IngestRequest, Delivery]]) -> None:
            for message, delivery in batch:
                self.rec(message, delivery)

    async def scenario() -> None:
        bus = MemoryBus(partitions=1)
        for i in range(5):
            bus.publish("t", "k", ingest_event(i))
        for worker in (Counting(bus), Batching(bus)):
            await worker.stop()  # never started: a no-op
            await worker.start()
            consumer = worker.consumer
            await worker.start()  # already running: the same consumer
            assert worker.consumer is consumer and worker.running
            await asyncio.to_thread(wait_until, lambda w=worker: len(w.rec.ids()) == 5, "5")
            await worker.stop()
            await worker.stop()
            assert not worker.running
            assert bus.committed("t", worker.group) == {0: 5}

    asyncio.run(scenario())


def test_a_worker_waiting_for_its_model_starts_when_it_arrives_and_loses_nothing() -> None:
    """A scorer or bias worker whose model is registered after start-up (the model watcher
    loads it later) leaves events queued, then consumes all of them; stop cancels the wait."""

    class Waiting(Worker):
        group = "waiting"
        message_type = IngestRequest

        def __init__(self, bus: MemoryBus) -> None:
            super().__init__(lambda: bus, "t")
            self.rec = Recorder()
            self.model = False

        async def start(self) -> None:
            await self.start_when_ready(lambda: self.model, poll_seconds=0.01)

        def handle(self, message: IngestRequest, delivery: Delivery) -> None:
            self.rec(message, delivery)

    async def scenario() -> None:
        bus = MemoryBus(partitions=1)
        for i in range(3):
            bus.publish("t", "k", ingest_event(i))
        worker = Waiting(bus)
        await worker.start()
        await asyncio.sleep(0.1)
        assert not worker.running and worker.rec.ids() == []  # no model: nothing consumed
        worker.model = True
        await asyncio.to_thread(wait_until, lambda: len(worker.rec.ids()) == 3, "3")
        assert worker.running
        await worker.stop()
        never = Waiting(bus)
        await never.start()
        await never.stop()  # the wait is cancelled; nothing left running
        assert not never.running

    asyncio.run(scenario())
