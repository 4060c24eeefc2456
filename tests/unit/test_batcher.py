"""The dynamic batcher on its own: order, limits, errors, cancellation, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from concord.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from concord.serving import DynamicBatcher


def _double(items: list[int]) -> list[int]:
    return [2 * i for i in items]


async def test_results_keep_order_and_batches_respect_the_cap() -> None:
    batcher = DynamicBatcher(_double, name="t-order", max_batch_size=4, max_delay_ms=50)
    batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    finally:
        await batcher.stop()
    assert results == [2 * i for i in range(10)]
    assert sum(batcher.batch_sizes) == 10
    assert max(batcher.batch_sizes) == 4


async def test_async_model_functions_are_awaited() -> None:
    async def negate(items: list[int]) -> list[int]:
        return [-i for i in items]

    batcher = DynamicBatcher(negate, name="t-async", max_batch_size=8, max_delay_ms=10)
    batcher.start()
    try:
        assert await batcher.submit_many([1, 2, 3]) == [-1, -2, -3]
    finally:
        await batcher.stop()


async def test_model_errors_reach_every_caller_of_the_batch_and_the_loop_survives() -> None:
    def picky(items: list[int]) -> list[int]:
        if 13 in items:
            raise InvalidArgument("items", "13 is unlucky")
        return items

    batcher = DynamicBatcher(picky, name="t-errors", max_batch_size=8, max_delay_ms=20)
    batcher.start()
    try:
        results = await asyncio.gather(
            batcher.submit(1), batcher.submit(13), return_exceptions=True
        )
        assert all(isinstance(r, InvalidArgument) for r in results)
        assert await batcher.submit(2) == 2
    finally:
        await batcher.stop()


async def test_wrong_output_count_is_an_error_not_a_mismatch() -> None:
    batcher = DynamicBatcher(
        lambda items: items[:-1], name="t-count", max_batch_size=2, max_delay_ms=0
    )
    batcher.start()
    try:
        with pytest.raises(RuntimeError, match="returned 0 results for 1 inputs"):
            await batcher.submit(1)
    finally:
        await batcher.stop()


async def test_cancelled_callers_are_not_sent_to_the_model() -> None:
    seen: list[int] = []
    gate = asyncio.Event()

    async def slow(items: list[int]) -> list[int]:
        seen.extend(items)
        await gate.wait()
        return items

    batcher = DynamicBatcher(slow, name="t-cancel", max_batch_size=1, max_delay_ms=0)
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.05)  # let the first item occupy the model
        abandoned = asyncio.ensure_future(batcher.submit(2))
        await asyncio.sleep(0)
        abandoned.cancel()
        third = asyncio.ensure_future(batcher.submit(3))
        await asyncio.sleep(0)
        gate.set()
        assert await first == 1 and await third == 3
    finally:
        await batcher.stop()
    assert seen == [1, 3]


async def test_full_queue_sheds_and_stop_fails_what_is_queued() -> None:
    gate = asyncio.Event()

    async def held(items: list[int]) -> list[int]:
        await gate.wait()
        return items

    batcher = DynamicBatcher(held, name="t-shed", max_batch_size=1, max_delay_ms=0, max_queue=1)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0.05)
    queued = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0)
    with pytest.raises(ResourceExhausted, match="overloaded"):
        await batcher.submit(3)
    await batcher.stop()
    with pytest.raises(FailedPrecondition, match="stopped"):
        await queued
    first.cancel()
    with pytest.raises(FailedPrecondition, match="not running"):
        await batcher.submit(4)


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        DynamicBatcher(_double, name="t-bad", max_batch_size=0)


async def _caller(batcher: DynamicBatcher[int, int], item: int, deadline_s: float) -> str:
    """One caller with a deadline, as the interceptor sets it: 'ok' only when the answer
    arrives within the deadline."""
    import time

    from concord.errors import DeadlineExceeded
    from concord.serving.batcher import CALL_DEADLINE

    started = time.monotonic()
    CALL_DEADLINE.set(started + deadline_s)
    try:
        await asyncio.wait_for(batcher.submit(item), deadline_s)
    except DeadlineExceeded:
        return "shed" if time.monotonic() - started < deadline_s / 2 else "expired"
    except TimeoutError:
        return "late"
    return "ok"


async def test_overload_with_deadlines_keeps_goodput() -> None:
    """Twice the capacity, every caller with a deadline: the batcher refuses at once what it
    cannot finish in time, so the model serves callers who are still waiting (a FIFO that
    admitted everyone served mostly callers that had already given up)."""
    import time

    def slow(items: list[int]) -> list[int]:
        time.sleep(0.02)  # 20 ms per batch of <= 4: capacity 200 items/s
        return items

    batcher = DynamicBatcher(slow, name="t-goodput", max_batch_size=4, max_queue=10_000)
    batcher.start()
    try:
        await _caller(batcher, 0, 1.0)  # measures the batch time
        tasks = []
        for i in range(160):  # 400 items/s for 0.4 s: 2x capacity
            tasks.append(asyncio.create_task(_caller(batcher, i, 0.2)))
            await asyncio.sleep(0.0025)
        outcomes = await asyncio.gather(*tasks)
    finally:
        await batcher.stop()
    ok, late = outcomes.count("ok"), outcomes.count("late")
    shed = outcomes.count("shed") + outcomes.count("expired")
    served_capacity = 0.6 * 200  # items the model could finish in the 0.6 s the test ran
    assert ok >= 0.5 * min(served_capacity, len(outcomes)), outcomes
    assert late <= 0.1 * len(outcomes), outcomes  # admitted calls finished within the deadline
    assert shed > 0


async def test_a_call_without_deadline_is_admitted_whatever_the_queue() -> None:
    batcher = DynamicBatcher(_double, name="t-nodeadline", max_batch_size=2)
    batcher.start()
    try:
        batcher.batch_seconds = 10.0  # a queue that could never meet any deadline
        assert await batcher.submit(3) == 6
    finally:
        await batcher.stop()


async def test_the_wait_estimate_counts_the_model_call_already_running() -> None:
    """An item arriving while a batch runs waits for the rest of that call too: the estimate
    is that remainder plus its own batch, and drops back to one batch once the call ends."""
    gate = asyncio.Event()

    async def held(items: list[int]) -> list[int]:
        await gate.wait()
        return items

    batcher = DynamicBatcher(held, name="t-estimate", max_batch_size=2)
    batcher.start()
    try:
        batcher.batch_seconds = 1.0
        running = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.05)  # the batch of item 1 is in the model call now
        assert 1.5 < batcher.expected_wait() <= 2.0
        gate.set()
        assert await running == 1
        assert batcher.expected_wait() == pytest.approx(
            batcher.batch_seconds + batcher.resume_seconds
        )
    finally:
        await batcher.stop()


async def test_the_wait_estimate_counts_the_lag_before_callers_resume() -> None:
    """Under overload the event loop is busy (taking and refusing other calls), so a caller
    resumes well after its result is set. The batcher measures that lag and adds it to the
    wait estimate: on the model call alone, admitted calls expired."""
    import time

    stop = asyncio.Event()

    async def busy_loop() -> None:  # other calls' work on the event loop: 20 ms at a time
        while not stop.is_set():
            time.sleep(0.02)
            await asyncio.sleep(0)

    batcher = DynamicBatcher(_double, name="t-resume", max_batch_size=2, max_queue=1000)
    batcher.start()
    try:
        assert await asyncio.gather(*(batcher.submit(i) for i in range(20))) == [
            2 * i for i in range(20)
        ]
        quiet = batcher.resume_seconds
        hog = asyncio.create_task(busy_loop())
        await asyncio.gather(*(batcher.submit(i) for i in range(40)))
        stop.set()
        await hog
        assert quiet < 0.005 < batcher.resume_seconds  # the loop's 20 ms slices were counted
        assert batcher.batch_seconds is not None
        wait = batcher.expected_wait()
        assert wait == pytest.approx(batcher.batch_seconds + batcher.resume_seconds)
    finally:
        await batcher.stop()
