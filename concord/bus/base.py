"""The Bus interface every service worker uses; `memory.py` and `kafka.py` implement it.

Events are protobuf, keyed for partitioning; delivery is at-least-once (see `consumer.py`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from google.protobuf.message import Message

from concord.bus.consumer import Consumer
from concord.bus.records import BatchHandler, Handler, M, RawHandler


class Bus(ABC):
    """Publish protobuf events and run consumer-group members; see memory.py and kafka.py.

    Args:
        group_prefix: consumer group ids are `<group_prefix>.<group>`.
        max_retries: handler attempts beyond the first before a record goes to the DLQ.
        retry_backoff_seconds: first backoff between attempts; doubles per attempt.
        outage_retry_seconds: how long a record whose handler fails because a dependency is
            down (see `concord.bus.consumer.dependency_down`) is put back and fetched again
            before it goes to the DLQ.
    """

    def __init__(
        self,
        *,
        group_prefix: str = "",
        max_retries: int = 3,
        retry_backoff_seconds: float = 0.2,
        outage_retry_seconds: float = 300.0,
    ) -> None:
        self.group_prefix = group_prefix
        self.max_retries = max_retries
        self.retry_backoff_seconds = retry_backoff_seconds
        self.outage_retry_seconds = outage_retry_seconds

    def group_id(self, group: str) -> str:
        """Return the broker-side consumer group id for a service-level `group` name."""
        return f"{self.group_prefix}.{group}" if self.group_prefix else group

    @abstractmethod
    def publish(
        self,
        topic: str,
        key: str | bytes,
        message: Message,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Queue `message` on `topic`; records with one key land on one partition, in order.

        Args:
            topic: the topic (created if missing).
            key: the partitioning key (str is UTF-8 encoded).
            message: the protobuf event.
            headers: extra string headers (the message type is added).

        Raises:
            BusError: when the bus is closed or the record is refused outright; delivery
                failures after queuing surface in `flush`.
        """

    @abstractmethod
    def flush(self, timeout: float | None = None) -> None:
        """Block until everything published so far is acknowledged.

        Raises:
            BusError: when a queued record could not be delivered.
        """

    @abstractmethod
    def subscribe(
        self,
        topic: str,
        group: str,
        handler: Handler[M],
        message_type: type[M],
    ) -> Consumer:
        """Return a consumer-group member (not started) that hands `message_type` events to
        `handler(message, delivery)`.

        Args:
            topic: topic to consume (it and `<topic>.dlq` are created if missing).
            group: service-level group name (see `group_id`).
            handler: called once per record, retried on exceptions.
            message_type: the protobuf class the records hold.

        Returns:
            A Consumer; call `.start()` (thread) or `.run()` (inline), then `.stop()`.
        """

    def subscribe_batch(
        self,
        topic: str,
        group: str,
        handler: BatchHandler,
        message_type: type[M],
    ) -> Consumer:
        """Like `subscribe`, but `handler(items)` gets every record of a poll at once as
        `[(message, delivery), ...]` (one model call, one flush for many events). When the
        batch fails, each record is retried alone and only the bad ones reach the DLQ.

        Returns:
            A Consumer (not started).
        """
        consumer = self.subscribe(
            topic, group, lambda message, delivery: handler([(message, delivery)]), message_type
        )
        consumer.batch_handler = handler
        return consumer

    @abstractmethod
    def subscribe_raw(self, topic: str, group: str, handler: RawHandler) -> Consumer:
        """Like `subscribe`, but the handler receives the raw bytes (e.g. to read a DLQ)."""

    @abstractmethod
    def ensure_topics(self, topics: Sequence[str], partitions: int | None = None) -> None:
        """Create the topics that do not exist yet (existing ones are left as they are)."""

    @abstractmethod
    def committed(self, topic: str, group: str) -> dict[int, int]:
        """Return {partition: next offset to read} committed by `group` (missing = none)."""

    @abstractmethod
    def end_offsets(self, topic: str) -> dict[int, int]:
        """Return {partition: offset after the last record}."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release connections; consumers must be stopped first."""

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
