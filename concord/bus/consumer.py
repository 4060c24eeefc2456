"""The consumer loop both backends share: fetch, decode, handle with retries, dead-letter, commit.

Delivery is at-least-once: an offset is committed only after its handler returned (or the
message went to `<topic>.dlq`). Backends implement the `_open`/`_poll`/... hooks.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from concord.bus.decoding import PoisonError
from concord.bus.records import BatchHandler, Delivery, DlqHeaders, RawRecord, Reason
from concord.errors import InvalidArgument

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0

T = TypeVar("T")  # what a consumer decodes each record into: a message, or bytes


class _Abandoned(Exception):
    """The consumer was aborted while handling: leave the record uncommitted."""


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
