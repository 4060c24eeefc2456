"""The embedded, in-process bus: Kafka's semantics (partitioned logs, consumer groups, committed
offsets, at-least-once, retries, `<topic>.dlq`) without a broker. Thread-safe.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import Message

from concord.bus.base import Bus
from concord.bus.consumer import Consumer, T
from concord.bus.decoding import protobuf_decoder, raw_decoder
from concord.bus.records import (
    BusError,
    Delivery,
    Handler,
    M,
    RawHandler,
    RawRecord,
    dlq_topic,
    encode_key,
    event_headers,
)


@dataclass
class _Group:
    members: list[str] = field(default_factory=list)  # join order decides the assignment
    owners: dict[int, str] = field(default_factory=dict)  # partition -> member holding it


class MemoryLog:
    """The in-process "broker": per-topic partition logs, committed offsets, group membership.

    Records are kept for the life of the process, so a new group reads a topic from the start.
    A partition moves to a new member only after its old owner released it (having committed
    what it finished), as in Kafka's rebalance: one owner per partition at any time.

    Args:
        partitions: partition count of topics created implicitly.
    """

    def __init__(self, partitions: int = 3) -> None:
        self.default_partitions = partitions
        self._cond = threading.Condition()
        self._topics: dict[str, list[list[RawRecord]]] = {}
        self._committed: dict[tuple[str, str, int], int] = {}  # (group, topic, partition)
        self._groups: dict[tuple[str, str], _Group] = {}
        self._round_robin = itertools.count()

    def ensure(self, topic: str, partitions: int | None = None) -> int:
        """Create `topic` if missing; return its partition count."""
        with self._cond:
            logs = self._topics.get(topic)
            if logs is None:
                count = partitions or self.default_partitions
                logs = self._topics[topic] = [[] for _ in range(count)]
            return len(logs)

    def append(
        self, topic: str, key: bytes | None, value: bytes | None, headers: dict[str, str]
    ) -> RawRecord:
        """Append one record; same key -> same partition (crc32, stable across processes)."""
        n = self.ensure(topic)
        with self._cond:
            partition = next(self._round_robin) % n if key is None else zlib.crc32(key) % n
            plog = self._topics[topic][partition]
            record = RawRecord(
                topic, partition, len(plog), key, value, dict(headers), int(time.time() * 1000)
            )
            plog.append(record)
            self._cond.notify_all()
            return record

    def join(self, group: str, topic: str) -> str:
        """Add a member to `group` on `topic`; return its id."""
        self.ensure(topic)
        member = uuid.uuid4().hex
        with self._cond:
            self._groups.setdefault((group, topic), _Group()).members.append(member)
            self._cond.notify_all()  # current owners give up partitions at their next poll
        return member

    def leave(self, group: str, topic: str, member: str) -> None:
        """Remove a member; its partitions become free for the others."""
        with self._cond:
            g = self._groups.get((group, topic))
            if g is None:
                return
            if member in g.members:
                g.members.remove(member)
            for p in [p for p, owner in g.owners.items() if owner == member]:
                del g.owners[p]
            self._cond.notify_all()

    def sync(
        self, group: str, topic: str, member: str, finished: dict[int, int]
    ) -> tuple[set[int], dict[int, int]]:
        """Rebalance step for one member: commit `finished` for partitions it must give up,
        release them, take free partitions meant for it.

        Returns:
            (partitions it owns now, {newly taken partition: committed offset to start from}).
        """
        with self._cond:
            g = self._groups[(group, topic)]
            n = len(self._topics[topic])
            index = g.members.index(member)
            mine = {p for p in range(n) if p % len(g.members) == index}
            for p in [p for p, owner in g.owners.items() if owner == member and p not in mine]:
                if p in finished:
                    self._committed[(group, topic, p)] = finished[p]
                del g.owners[p]
                self._cond.notify_all()
            taken = {}
            for p in mine:
                if p not in g.owners:
                    g.owners[p] = member
                    taken[p] = self._committed.get((group, topic, p), 0)
            owned = {p for p, owner in g.owners.items() if owner == member}
            return owned, taken

    def fetch(
        self, topic: str, positions: dict[int, int], max_records: int, timeout: float
    ) -> list[RawRecord]:
        """Return records at or after `positions`, waiting up to `timeout` for the first."""
        with self._cond:
            logs = self._topics[topic]

            def ready() -> bool:
                return any(pos < len(logs[p]) for p, pos in positions.items())

            self._cond.wait_for(ready, timeout)
            out: list[RawRecord] = []
            for p, pos in sorted(positions.items()):
                out.extend(logs[p][pos : pos + max_records - len(out)])
            return out

    def commit(self, group: str, topic: str, member: str, offsets: dict[int, int]) -> None:
        """Commit offsets of partitions the member still owns (others moved on: dropped)."""
        with self._cond:
            g = self._groups.get((group, topic))
            for p, offset in offsets.items():
                if g is not None and g.owners.get(p) == member:
                    self._committed[(group, topic, p)] = offset

    def members(self, group: str, topic: str) -> int:
        """How many members `group` has on `topic` now."""
        with self._cond:
            g = self._groups.get((group, topic))
            return len(g.members) if g else 0

    def committed(self, group: str, topic: str) -> dict[int, int]:
        with self._cond:
            return {p: o for (g, t, p), o in self._committed.items() if g == group and t == topic}

    def end_offsets(self, topic: str) -> dict[int, int]:
        with self._cond:
            return {p: len(plog) for p, plog in enumerate(self._topics.get(topic, []))}

    def records(self, topic: str) -> list[RawRecord]:
        """Every record of `topic`, partition by partition (for tools and tests)."""
        with self._cond:
            return [r for plog in self._topics.get(topic, []) for r in plog]


class MemoryConsumer(Consumer[T]):
    """A group member on a MemoryLog; commits after every batch."""

    def __init__(
        self,
        log: MemoryLog,
        topic: str,
        group: str,
        handler: Callable[[T, Delivery], None],
        decode: Callable[[RawRecord], T],
        *,
        max_retries: int,
        retry_backoff_seconds: float,
        outage_retry_seconds: float = 300.0,
        max_poll_records: int = 100,
    ) -> None:
        super().__init__(
            topic,
            group,
            handler,
            decode,
            max_retries=max_retries,
            retry_backoff_seconds=retry_backoff_seconds,
            outage_retry_seconds=outage_retry_seconds,
        )
        self._log = log
        self._member: str | None = None
        self._positions: dict[int, int] = {}
        self._finished: dict[int, int] = {}
        self._max_poll_records = max_poll_records

    def _open(self) -> None:
        self._member = self._log.join(self.group, self.topic)

    def _poll(self, timeout: float) -> Sequence[RawRecord]:
        assert self._member is not None
        owned, taken = self._log.sync(self.group, self.topic, self._member, self._finished)
        for p in list(self._positions):
            if p not in owned:  # revoked: its finished offset was committed by sync
                self._positions.pop(p)
                self._finished.pop(p, None)
        self._positions.update(taken)
        batch = self._log.fetch(self.topic, self._positions, self._max_poll_records, timeout)
        for r in batch:
            self._positions[r.partition] = r.offset + 1
        return batch

    def _mark_done(self, record: RawRecord) -> None:
        self._finished[record.partition] = record.offset + 1

    def _commit(self) -> None:
        if self._member is not None and self._finished:
            self._log.commit(self.group, self.topic, self._member, self._finished)
            self._finished.clear()

    def _rewind(self, records: Sequence[RawRecord]) -> None:
        for r in records:
            self._positions[r.partition] = min(self._positions[r.partition], r.offset)

    def _send_to_dlq(self, record: RawRecord, headers: dict[str, str]) -> None:
        self._log.append(dlq_topic(record.topic), record.key, record.value, headers)

    def _close(self, commit: bool) -> None:
        if self._member is None:
            return
        if commit:
            self._commit()
        self._log.leave(self.group, self.topic, self._member)
        self._member = None


# The bus every embedded service in this process shares (make_bus hands it out).
EMBEDDED_LOG = MemoryLog()


class MemoryBus(Bus):
    """The embedded bus; `MemoryBus()` gets a private log, `MemoryBus(EMBEDDED_LOG)` the shared one.

    Args:
        log: where records live (a fresh MemoryLog when None).
        partitions: partition count for topics this bus creates.
        group_prefix, max_retries, retry_backoff_seconds, outage_retry_seconds: see Bus.
    """

    def __init__(
        self,
        log: MemoryLog | None = None,
        *,
        partitions: int = 3,
        group_prefix: str = "",
        max_retries: int = 3,
        retry_backoff_seconds: float = 0.2,
        outage_retry_seconds: float = 300.0,
    ) -> None:
        super().__init__(
            group_prefix=group_prefix,
            max_retries=max_retries,
            retry_backoff_seconds=retry_backoff_seconds,
            outage_retry_seconds=outage_retry_seconds,
        )
        self.log = log if log is not None else MemoryLog(partitions)
        self.partitions = partitions
        self._closed = False

    def publish(
        self,
        topic: str,
        key: str | bytes,
        message: Message,
        headers: dict[str, str] | None = None,
    ) -> None:
        if self._closed:
            raise BusError("bus is closed")
        self.log.ensure(topic, self.partitions)
        # Serialised now, so later changes to `message` do not reach the consumers.
        self.log.append(
            topic, encode_key(key), message.SerializeToString(), event_headers(message, headers)
        )

    def flush(self, timeout: float | None = None) -> None:
        return None  # every publish is already in the log

    def _consumer(
        self,
        topic: str,
        group: str,
        handler: Callable[[T, Delivery], None],
        decode: Callable[[RawRecord], T],
    ) -> MemoryConsumer[T]:
        self.ensure_topics([topic, dlq_topic(topic)])
        return MemoryConsumer(
            self.log,
            topic,
            self.group_id(group),
            handler,
            decode,
            max_retries=self.max_retries,
            retry_backoff_seconds=self.retry_backoff_seconds,
            outage_retry_seconds=self.outage_retry_seconds,
        )

    def subscribe(
        self, topic: str, group: str, handler: Handler[M], message_type: type[M]
    ) -> MemoryConsumer[M]:
        return self._consumer(topic, group, handler, protobuf_decoder(message_type))

    def subscribe_raw(self, topic: str, group: str, handler: RawHandler) -> MemoryConsumer[bytes]:
        return self._consumer(topic, group, handler, raw_decoder)

    def ensure_topics(self, topics: Sequence[str], partitions: int | None = None) -> None:
        for topic in topics:
            self.log.ensure(topic, partitions or self.partitions)

    def committed(self, topic: str, group: str) -> dict[int, int]:
        return self.log.committed(self.group_id(group), topic)

    def end_offsets(self, topic: str) -> dict[int, int]:
        return self.log.end_offsets(topic)

    def close(self) -> None:
        self._closed = True
