"""The Bus interface every service worker uses, and the consumer loop both backends share.

Events are protobuf, keyed for partitioning; delivery is at-least-once: an offset is committed
only after its handler returned (or the message went to `<topic>.dlq`).
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf.message import Message
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from concord.errors import InvalidArgument

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

DLQ_SUFFIX = ".dlq"
MAX_BACKOFF_SECONDS = 30.0
# Headers Concord puts on every event, so a reader (or the DLQ) can tell what the bytes are.
HEADER_MESSAGE_TYPE = "concord.message-type"
HEADER_CONTENT_TYPE = "content-type"
CONTENT_TYPE_PROTOBUF = "application/x-protobuf"


class DlqHeaders:
    """Header names on a dead-lettered record (values are strings)."""

    REASON = "dlq.reason"  # one of the Reason values below
    ERROR = "dlq.error"  # str(exception), truncated
    EXCEPTION = "dlq.exception"  # exception type, module-qualified
    TOPIC = "dlq.topic"  # where the record came from
    PARTITION = "dlq.partition"
    OFFSET = "dlq.offset"
    GROUP = "dlq.group"  # the consumer group that gave up on it
    ATTEMPTS = "dlq.attempts"  # handler calls made (0 when it could not be decoded)


class Reason:
    """Why a record was dead-lettered (the value of `DlqHeaders.REASON`)."""

    UNDECODABLE = "undecodable"  # bytes are not a valid message_type (or no value at all)
    WRONG_TYPE = "wrong-type"  # the message-type header names another message
    HANDLER_FAILED = "handler-failed"  # the handler raised on every attempt


def dlq_topic(topic: str) -> str:
    """Return the dead-letter topic of `topic`."""
    return topic + DLQ_SUFFIX


class BusError(RuntimeError):
    """A bus operation failed (publish not acknowledged, topic not creatable, ...)."""


@dataclass(frozen=True)
class Delivery:
    """Where a message came from; handed to the handler beside the decoded message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: Mapping[str, str] = field(default_factory=dict)
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class RawRecord:
    """A record as a backend fetched it, before decoding."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, str] = field(default_factory=dict)
    timestamp_ms: int | None = None

    def delivery(self) -> Delivery:
        return Delivery(
            self.topic, self.partition, self.offset, self.key, self.headers, self.timestamp_ms
        )


Handler = Callable[[M, Delivery], None]
RawHandler = Callable[[bytes, Delivery], None]
BatchHandler = Callable[[list[tuple[Any, Delivery]]], None]


class PoisonError(ValueError):
    """The record can never be handled as-is; it goes straight to the DLQ."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class _Abandoned(Exception):
    """The consumer was aborted while handling: leave the record uncommitted."""


def encode_key(key: str | bytes | None) -> bytes | None:
    """Keys are bytes on the wire; strings are UTF-8."""
    return key.encode() if isinstance(key, str) else key


def event_headers(message: Message, headers: Mapping[str, str] | None) -> dict[str, str]:
    """Return the headers to publish: the caller's plus the message type."""
    out = {
        HEADER_CONTENT_TYPE: CONTENT_TYPE_PROTOBUF,
        HEADER_MESSAGE_TYPE: message.DESCRIPTOR.full_name,
    }
    out.update(headers or {})
    return out


def protobuf_decoder(message_type: type[M]) -> Callable[[RawRecord], M]:
    """Return a decoder that parses a record as `message_type` or raises PoisonError."""
    expected = message_type.DESCRIPTOR.full_name

    def decode(record: RawRecord) -> M:
        if record.value is None:
            raise PoisonError(Reason.UNDECODABLE, "record has no value (tombstone)")
        named = record.headers.get(HEADER_MESSAGE_TYPE)
        # Protobuf happily parses many byte strings as the wrong message; the header catches that.
        if named is not None and named != expected:
            raise PoisonError(Reason.WRONG_TYPE, f"record is a {named}, expected {expected}")
        message = message_type()
        try:
            message.ParseFromString(record.value)
        except Exception as exc:  # DecodeError, or a RuntimeError from the upb parser
            raise PoisonError(Reason.UNDECODABLE, f"cannot parse as {expected}: {exc}") from exc
        return message

    return decode


def raw_decoder(record: RawRecord) -> bytes:
    if record.value is None:
        raise PoisonError(Reason.UNDECODABLE, "record has no value (tombstone)")
    return record.value


class Consumer(ABC):
    """One member of a consumer group on one topic, run in a thread (`start`) or inline (`run`).

    The loop: fetch a batch, decode each record, call the handler with bounded exponential
    retries, dead-letter what cannot be handled, commit what is done after the batch, on a
    rebalance and on stop. A stop lets the current record finish; `abort` does not commit it.
    """

    def __init__(
        self,
        topic: str,
        group: str,
        handler: Callable[[object, Delivery], None],
        decode: Callable[[RawRecord], object],
        *,
        max_retries: int,
        retry_backoff_seconds: float,
    ) -> None:
        self.topic = topic
        self.group = group
        self._handler = handler
        self._decode = decode
        self._max_retries = max_retries
        self._backoff = retry_backoff_seconds
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.handled = 0  # records whose handler returned
        # Set by Bus.subscribe_batch: handles a whole poll at once, per-record on failure.
        self.batch_handler: BatchHandler | None = None
        self.dead_lettered = 0  # records sent to the DLQ
        self.error: BaseException | None = None  # set when the loop died on an unexpected error

    # -- backend hooks ----------------------------------------------------------------------
    @abstractmethod
    def _open(self) -> None:
        """Join the group."""

    @abstractmethod
    def _poll(self, timeout: float) -> Sequence[RawRecord]:
        """Return the next records of the partitions this member owns (may be empty)."""

    @abstractmethod
    def _mark_done(self, record: RawRecord) -> None:
        """Remember that `record` is finished; committed by the next `_commit`."""

    @abstractmethod
    def _commit(self) -> None:
        """Commit every finished record's offset (+1). Must not raise on transient errors."""

    @abstractmethod
    def _rewind(self, records: Sequence[RawRecord]) -> None:
        """Fetch these unfinished records again on the next poll."""

    @abstractmethod
    def _send_to_dlq(self, record: RawRecord, headers: dict[str, str]) -> None:
        """Durably write the record's raw bytes to the DLQ topic; raise if that failed."""

    @abstractmethod
    def _close(self, commit: bool) -> None:
        """Leave the group (after committing finished records when `commit`)."""

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Consumer:
        """Run the loop in a daemon thread; returns self."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("consumer already started")
            self._thread = threading.Thread(
                target=self._run_guarded, name=f"bus:{self.topic}:{self.group}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Ask the loop to finish the current record, commit, leave the group; wait for it.

        Returns:
            True when the loop has exited within `timeout`.
        """
        self._stop.set()
        return self.join(timeout)

    def abort(self, timeout: float | None = 30.0) -> bool:
        """Stop like a crash would: the record being handled is NOT committed (tests, shutdown
        on fatal errors). Records finished before it are committed as usual.

        Returns:
            True when the loop has exited within `timeout`.
        """
        self._abort.set()
        self._stop.set()
        return self.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the loop thread to exit; True when it has (or never started)."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _run_guarded(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # a worker thread must say why it died, not vanish
            self.error = exc
            log.exception("consumer %s/%s stopped on an unexpected error", self.topic, self.group)

    def run(self) -> None:
        """The consumer loop, in the calling thread, until `stop`/`abort`."""
        while not self._stop.is_set():
            try:
                self._open()
                break
            except Exception:  # broker not reachable yet: a worker waits, it does not die
                log.warning("cannot join %s on %s; retrying", self.group, self.topic, exc_info=True)
                self._stop.wait(2.0)
        else:
            return
        try:
            while not self._stop.is_set():
                try:
                    batch = self._poll(0.2)
                except Exception:
                    log.warning("poll on %s failed; retrying", self.topic, exc_info=True)
                    self._stop.wait(1.0)
                    continue
                self._process_batch(batch)
                self._commit()
        except _Abandoned:
            pass
        finally:
            self._close(commit=True)

    def _process_batch(self, batch: Sequence[RawRecord]) -> None:
        if self.batch_handler is not None and len(batch) > 1 and self._process_together(batch):
            return
        for i, record in enumerate(batch):
            if self._stop.is_set():
                return  # the rest stays uncommitted: the next owner reads it again
            try:
                self._process(record)
            except _Abandoned:
                raise
            except Exception:
                # Only a failed DLQ write gets here: the record is not done, so fetch it again.
                log.exception(
                    "could not finish %s[%d]@%d", record.topic, record.partition, record.offset
                )
                self._rewind(batch[i:])
                self._stop.wait(max(self._backoff, 0.5))
                return
            self._mark_done(record)

    def _process_together(self, batch: Sequence[RawRecord]) -> bool:
        """Hand the whole poll to the batch handler once. False (nothing marked done) when a
        record is poison or the handler failed: the per-record path then retries each record
        and dead-letters only the bad ones; effects are idempotent, so the repeat is safe."""
        assert self.batch_handler is not None
        try:
            items = [(self._decode(record), record.delivery()) for record in batch]
        except PoisonError:
            return False
        try:
            self.batch_handler(items)
        except Exception as exc:
            log.info(
                "batch of %d on %s failed (%r); handling records one by one",
                len(batch),
                self.topic,
                exc,
            )
            return False
        if self._abort.is_set():
            raise _Abandoned
        for record in batch:
            self._mark_done(record)
        self.handled += len(batch)
        return True

    def _process(self, record: RawRecord) -> None:
        delivery = record.delivery()
        try:
            message = self._decode(record)
        except PoisonError as exc:
            self._dead_letter(record, exc.reason, exc, attempts=0)
            return
        attempts = 0

        def call() -> None:
            nonlocal attempts
            attempts += 1
            self._handler(message, delivery)
            if self._abort.is_set():
                raise _Abandoned  # "crashed" before the effect counted: do not commit

        try:
            for attempt in Retrying(
                stop=stop_after_attempt(self._max_retries + 1),
                wait=wait_exponential(multiplier=self._backoff, max=MAX_BACKOFF_SECONDS),
                retry=retry_if_exception(_retryable),
                sleep=self._interruptible_sleep,
                reraise=True,
            ):
                with attempt:
                    call()
        except _Abandoned:
            raise
        except Exception as exc:
            log.warning(
                "handler failed %d times on %s[%d]@%d: %r; dead-lettering",
                attempts,
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            self._dead_letter(record, Reason.HANDLER_FAILED, exc, attempts)
            return
        self.handled += 1

    def _interruptible_sleep(self, seconds: float) -> None:
        # An abort must not wait out the backoff; a plain stop lets the retries finish.
        if self._abort.wait(seconds):
            raise _Abandoned

    def _dead_letter(
        self, record: RawRecord, reason: str, exc: BaseException, attempts: int
    ) -> None:
        headers = dict(record.headers)
        headers.update(
            {
                DlqHeaders.REASON: reason,
                DlqHeaders.ERROR: str(exc)[:1000],
                DlqHeaders.EXCEPTION: f"{type(exc).__module__}.{type(exc).__qualname__}",
                DlqHeaders.TOPIC: record.topic,
                DlqHeaders.PARTITION: str(record.partition),
                DlqHeaders.OFFSET: str(record.offset),
                DlqHeaders.GROUP: self.group,
                DlqHeaders.ATTEMPTS: str(attempts),
            }
        )
        self._send_to_dlq(record, headers)
        self.dead_lettered += 1


def _retryable(exc: BaseException) -> bool:
    # KeyboardInterrupt/SystemExit and an abort end the record's handling at once; bad
    # content (InvalidArgument: a corrupt image, an empty text) fails the same way every
    # time, so it goes to the DLQ without waiting out the retries.
    return isinstance(exc, Exception) and not isinstance(exc, _Abandoned | InvalidArgument)


class Bus(ABC):
    """Publish protobuf events and run consumer-group members; see memory.py and kafka.py.

    Args:
        group_prefix: consumer group ids are `<group_prefix>.<group>`.
        max_retries: handler attempts beyond the first before a record goes to the DLQ.
        retry_backoff_seconds: first backoff between attempts; doubles per attempt.
    """

    def __init__(
        self, *, group_prefix: str = "", max_retries: int = 3, retry_backoff_seconds: float = 0.2
    ) -> None:
        self.group_prefix = group_prefix
        self.max_retries = max_retries
        self.retry_backoff_seconds = retry_backoff_seconds

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
