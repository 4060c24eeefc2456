"""Starting and stopping a service's consumer from asyncio code.

Subscribing may create topics on a broker and stopping joins the consumer thread: both block,
so both run in a worker thread, never on the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from concord.bus.consumer import Consumer


async def start_consumer(subscribe: Callable[[], Consumer]) -> Consumer:
    """Returns: the consumer `subscribe()` makes, started (its loop running in its thread)."""
    return await asyncio.to_thread(lambda: subscribe().start())


async def stop_consumer(consumer: Consumer | None) -> None:
    """Stop `consumer` (commits what it finished, leaves the group); None is a no-op."""
    if consumer is not None:
        await asyncio.to_thread(consumer.stop)
