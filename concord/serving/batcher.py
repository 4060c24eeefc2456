"""Dynamic batcher: coalesces concurrent single-item calls into one model call.

Callers `await batcher.submit(item)`; a background task takes up to `max_batch_size`
items, waiting at most `max_delay_ms` after the first for company, and runs the model
function once for all. The queue is bounded: beyond `max_queue` waiting items, submit
raises ResourceExhausted at once (load shedding) instead of letting latency grow.

Deadline-aware admission: the interceptor puts each call's deadline in `CALL_DEADLINE`; an
item whose deadline falls before the queue ahead of it can be served (estimated from the
measured time per batch, plus the measured lag from a result to its caller taking it up) is
refused at submit with DeadlineExceeded, and an item whose
deadline passed while it waited is dropped before the model call. Under overload the
model's time then goes to callers who will still be there for the answer (goodput), not to
a FIFO of callers who already gave up.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from concord.errors import ConcordError, DeadlineExceeded, FailedPrecondition, ResourceExhausted
from concord.serving import metrics

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")

BatchFn = Callable[[list[In]], Awaitable[Sequence[Out]]] | Callable[[list[In]], Sequence[Out]]


# time.monotonic() by which the current call must be answered; None: no deadline. Set by
# the serving interceptor per call, read by every batcher the call submits to.
CALL_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "concord_call_deadline", default=None
)
EWMA_WEIGHT = 0.2  # of the newest batch in the running estimate of seconds per batch


@dataclass
class _Pending(Generic[In, Out]):
    item: In
    future: asyncio.Future[Out]
    deadline: float | None = None  # time.monotonic()
    resolved_at: float = 0.0  # time.monotonic() the result was set


class DynamicBatcher(Generic[In, Out]):
    """Batches items for `fn`, which maps a list of inputs to a list of outputs in order.

    Args:
        fn: the model call. A plain function runs in a worker thread so the event loop
            keeps serving (torch releases the GIL); an async function is awaited.
        name: metrics label.
        max_batch_size: most items per call.
        max_delay_ms: longest wait for more items once one is queued.
        max_queue: most items waiting; more are refused with ResourceExhausted.
        deadline_admission: refuse calls whose deadline the queue cannot meet (module doc).
    """

    def __init__(
        self,
        fn: BatchFn[In, Out],
        *,
        name: str,
        max_batch_size: int = 32,
        max_delay_ms: float = 0.0,
        max_queue: int = 1024,
        deadline_admission: bool = True,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_delay_ms < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_delay_ms >= 0")
        self._fn = fn
        self.name = name
        self.deadline_admission = deadline_admission
        self.max_batch_size = max_batch_size
        self._max_delay = max_delay_ms / 1000.0
        self._queue: asyncio.Queue[_Pending[In, Out]] = asyncio.Queue(maxsize=max_queue)
        self._task: asyncio.Task[None] | None = None
        self.batch_sizes: list[int] = []  # sizes of the calls made, for tests and benchmarks
        self.batch_seconds: float | None = None  # running estimate of one model call
        # Running estimate of the lag from a result being set to its caller resuming. Under
        # overload the event loop is busy taking and refusing other calls, and this lag grows to
        # a good part of a deadline; admission that left it out admitted calls that then expired.
        self.resume_seconds = 0.0
        self.expired = 0  # items dropped because their deadline passed while queued
        self._busy_since: float | None = None  # time.monotonic() the running model call began

    async def submit(self, item: In) -> Out:
        """Queue one item and wait for its result.

        Raises:
            ResourceExhausted: the queue is full.
            FailedPrecondition: the batcher is not running.
        """
        if self._task is None or self._task.done():
            raise FailedPrecondition(f"batcher {self.name!r} is not running")
        deadline = CALL_DEADLINE.get() if self.deadline_admission else None
        if deadline is not None:
            wait = self.expected_wait()
            if time.monotonic() + wait > deadline:
                metrics.SHED.labels(self.name).inc()
                raise DeadlineExceeded(
                    f"{self.name} cannot answer before the deadline: about {wait * 1000:.0f} ms"
                    f" of queued work ({self._queue.qsize()} items) is ahead of this call"
                )
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        pending = _Pending(item, future, deadline)
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            metrics.SHED.labels(self.name).inc()
            raise ResourceExhausted(
                f"{self.name} is overloaded ({self._queue.maxsize} items queued); retry later"
            ) from None
        metrics.QUEUE_DEPTH.labels(self.name).set(self._queue.qsize())
        result = await future
        if pending.resolved_at:
            self.resume_seconds = _ewma(self.resume_seconds, time.monotonic() - pending.resolved_at)
        return result

    def expected_wait(self) -> float:
        """Seconds a new item would wait for its result: what is left of the model call
        running now, the batches queued ahead of it and its own, at the measured time per
        batch, and the measured lag before a caller takes its result up (0 before the first
        batch is measured)."""
        if self.batch_seconds is None:
            return 0.0
        running = 0.0
        if self._busy_since is not None:
            running = max(0.0, self.batch_seconds - (time.monotonic() - self._busy_since))
        batches_ahead = self._queue.qsize() // self.max_batch_size + 1
        return running + batches_ahead * self.batch_seconds + self.resume_seconds

    async def submit_many(self, items: Sequence[In]) -> list[Out]:
        """Submit several items (e.g. one request's batch); results keep their order."""
        return list(await asyncio.gather(*(self.submit(item) for item in items)))

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"batcher-{self.name}"
            )

    async def stop(self) -> None:
        """Stop taking work; items still queued are failed, never silently dropped."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(FailedPrecondition(f"batcher {self.name!r} stopped"))

    async def _collect(self) -> list[_Pending[In, Out]]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_delay
        while len(batch) < self.max_batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                # Take whatever already arrived without waiting any longer.
                while len(batch) < self.max_batch_size and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        metrics.QUEUE_DEPTH.labels(self.name).set(self._queue.qsize())
        # Callers that gave up (deadline, cancellation) are not worth model time, nor are those
        # whose deadline passes before this batch can finish.
        finish = time.monotonic() + (self.batch_seconds or 0.0) + self.resume_seconds
        live = []
        for p in batch:
            if p.future.done():
                continue
            if p.deadline is not None and p.deadline < finish:
                self.expired += 1
                metrics.SHED.labels(self.name).inc()
                p.future.set_exception(
                    DeadlineExceeded(f"{self.name}: the deadline passed while the call was queued")
                )
                continue
            live.append(p)
        return live

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            if batch:
                await self._process(batch)
            # Nothing of the batch stays referenced while the loop waits for the next one:
            # a finished batch of decoded images would otherwise pin hundreds of MB when idle.
            del batch

    async def _process(self, batch: list[_Pending[In, Out]]) -> None:
        self.batch_sizes.append(len(batch))
        metrics.BATCH_SIZE.labels(self.name).observe(len(batch))
        started = self._busy_since = time.monotonic()
        try:
            outputs = await self._call([p.item for p in batch])
            if len(outputs) != len(batch):
                raise RuntimeError(
                    f"{self.name}: model returned {len(outputs)} results for {len(batch)} inputs"
                )
        except ConcordError as err:
            self._fail(batch, err)
            return
        except Exception as err:
            log.exception("batch call of %s failed", self.name)
            self._fail(batch, err)
            return
        finally:
            self._busy_since = None
        done = time.monotonic()
        self.batch_seconds = _ewma(self.batch_seconds, done - started)
        for pending, output in zip(batch, outputs, strict=True):
            if not pending.future.done():
                pending.resolved_at = done
                pending.future.set_result(output)

    async def _call(self, items: list[In]) -> Sequence[Out]:
        if asyncio.iscoroutinefunction(self._fn):
            return await self._fn(items)
        # Not a coroutine function, so the sync member of BatchFn (mypy narrows only the other).
        sync_fn = cast("Callable[[list[In]], Sequence[Out]]", self._fn)
        return await asyncio.to_thread(sync_fn, items)

    @staticmethod
    def _fail(batch: list[_Pending[In, Out]], err: BaseException) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(err)


def _ewma(previous: float | None, value: float) -> float:
    """The running estimate after one more measurement (the first one stands alone)."""
    return value if previous is None else (1 - EWMA_WEIGHT) * previous + EWMA_WEIGHT * value
