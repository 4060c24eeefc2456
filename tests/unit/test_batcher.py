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
