"""The consumer loop both backends share: fetch, decode, handle with retries, dead-letter, commit.

Delivery is at-least-once: an offset is committed only after its handler returned (or the
message went to `<topic>.dlq`). Backends implement the `_open`/`_poll`/... hooks.

The DLQ is for bad content. A handler that fails because a dependency is down (the encoder
answers UNAVAILABLE, a call runs out of its deadline, the broker refuses a publish) says
nothing about the record: the consumer puts the record back (uncommitted), waits with a
growing backoff and fetches it again, for as long as `outage_retry_seconds`. Only an outage
longer than that dead-letters records, with the reason `dependency-unavailable`.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from concord.bus.decoding import PoisonError
from concord.bus.records import BatchHandler, BusError, Delivery, DlqHeaders, RawRecord, Reason
from concord.errors import ConcordError, InvalidArgument

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0
# Longest wait between two tries of a record while a dependency is down: short, so work
# resumes within seconds of the dependency's return.
OUTAGE_MAX_BACKOFF_SECONDS = 5.0
OUTAGE_LOG_EVERY_SECONDS = 30.0
# Status codes (gRPC names, or a ConcordError's status) that mean "a dependency is down or
# overloaded right now", never "this record is bad".
OUTAGE_STATUSES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})

T = TypeVar("T")  # what a consumer decodes each record into: a message, or bytes


class _Abandoned(Exception):
    """The consumer was aborted while handling: leave the record uncommitted."""


class _Outage(Exception):
    """A dependency is down: put the records back and try them again after a backoff."""


def dependency_down(exc: BaseException) -> bool:
    """Whether `exc` says a dependency is unavailable (not that the record is bad).

    True for Concord's UNAVAILABLE / DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED errors (what a
    Concord client raises for those gRPC codes), a raw `grpc.RpcError` with one of those
    codes, a bus that could not publish (`BusError`: the broker is down), and connection
    or timeout errors.
    """
    if isinstance(exc, InvalidArgument):
        return False
    if isinstance(exc, ConcordError):
        return exc.status in OUTAGE_STATUSES
    if isinstance(exc, BusError | ConnectionError | TimeoutError):
        return True
    code = getattr(exc, "code", None)  # grpc.RpcError, without importing grpc here
    if callable(code):
        try:
            name = getattr(code(), "name", None)
        except Exception:
            return False
        return name in OUTAGE_STATUSES
    return False


class Consumer(ABC, Generic[T]):
    """One member of a consumer group on one topic, run in a thread (`start`) or inline (`run`).

    The loop: fetch a batch, decode each record, call the handler with bounded exponential
    retries, dead-letter what cannot be handled, commit what is done after the batch, on a
    rebalance and on stop. A stop lets the current record finish; `abort` does not commit it.
    """

    def __init__(
        self,
        topic: str,
        group: str,
        handler: Callable[[T, Delivery], None],
        decode: Callable[[RawRecord], T],
        *,
        max_retries: int,
        retry_backoff_seconds: float,
        outage_retry_seconds: float = 300.0,
    ) -> None:
        self.topic = topic
        self.group = group
        self._handler = handler
        self._decode = decode
        self._max_retries = max_retries
        self._backoff = retry_backoff_seconds
        self._outage_bound = outage_retry_seconds
        self._outage_since: float | None = None  # monotonic time the current outage began
        self._outage_tries = 0
        self._outage_logged = 0.0
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.handled = 0  # records whose handler returned
        # Set by Bus.subscribe_batch: handles a whole poll at once, per-record on failure.
        self.batch_handler: BatchHandler | None = None
        self.dead_lettered = 0  # records sent to the DLQ
        self.outage_waits = 0  # times records were put back because a dependency was down
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
        if self.batch_handler is not None and len(batch) > 1:
            try:
                if self._process_together(batch):
                    return
            except _Outage as outage:
                self._rewind(batch)
                self._wait_out(outage)
                return
        for i, record in enumerate(batch):
            if self._stop.is_set():
                return  # the rest stays uncommitted: the next owner reads it again
            try:
                self._process(record)
            except _Abandoned:
                raise
            except _Outage as outage:
                # Not done, not dead-lettered: fetched again (with the rest) after a backoff.
                self._rewind(batch[i:])
                self._wait_out(outage)
                return
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
            if self._in_outage(exc):
                raise _Outage(exc) from exc
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
        self._outage_over()
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
            if self._in_outage(exc):
                raise _Outage(exc) from exc
            log.warning(
                "handler failed %d times on %s[%d]@%d: %r; dead-lettering",
                attempts,
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            reason = (
                Reason.DEPENDENCY_UNAVAILABLE if dependency_down(exc) else Reason.HANDLER_FAILED
            )
            self._dead_letter(record, reason, exc, attempts)
            return
        self.handled += 1
        self._outage_over()

    # -- dependency outages ------------------------------------------------------------------
    def _in_outage(self, exc: BaseException) -> bool:
        """True when `exc` means a dependency is down and the outage has not yet lasted
        `outage_retry_seconds` (the clock starts at the first such failure and stops at the
        next record that succeeds)."""
        if not dependency_down(exc):
            return False
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since, self._outage_tries, self._outage_logged = now, 0, 0.0
        return now - self._outage_since < self._outage_bound

    def _wait_out(self, outage: _Outage) -> None:
        """Back off before the put-back records are fetched again; a stop ends the wait at
        once (the records stay uncommitted for the next owner)."""
        delay = min(OUTAGE_MAX_BACKOFF_SECONDS, max(self._backoff, 0.05) * 2**self._outage_tries)
        self._outage_tries += 1
        self.outage_waits += 1
        now = time.monotonic()
        if now - self._outage_logged >= OUTAGE_LOG_EVERY_SECONDS:
            self._outage_logged = now
            since = now - (self._outage_since or now)
            log.warning(
                "a dependency of %s/%s is down (%r) for %.1f s; records wait uncommitted "
                "(dead-lettered only after %.0f s)",
                self.topic,
                self.group,
                outage.__cause__,
                since,
                self._outage_bound,
            )
        self._stop.wait(delay)  # an abort sets stop too

    def _outage_over(self) -> None:
        if self._outage_since is not None:
            log.info(
                "%s/%s resumed after a dependency outage of %.1f s",
                self.topic,
                self.group,
                time.monotonic() - self._outage_since,
            )
            self._outage_since = None

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
    # time, so it goes to the DLQ without waiting out the retries; a dependency outage is
    # waited out by the batch loop (put back, fetched again), not by in-place retries.
    return (
        isinstance(exc, Exception)
        and not isinstance(exc, _Abandoned | InvalidArgument)
        and not dependency_down(exc)
    )
