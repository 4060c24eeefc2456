"""The base of a service's bus worker: one consumer-group member on one topic, started and
stopped from the serving loop (the service's on_start / on_stop hooks).

A worker names its consumer `group` (the service's name; the bus prefixes it with
`kafka.group_prefix` from settings) and its `message_type`, and implements `handle` (one
event at a time) or, with `batched = True`, `handle_batch` (every record of a poll at once).
Subscribing and stopping block, so both run in a thread (concord.bus.lifecycle); `stop`
drains (the consumer commits what it finished and leaves the group) and may be called any
number of times, started or not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, ClassVar

from google.protobuf.message import Message

from concord.bus.base import Bus
from concord.bus.consumer import Consumer
from concord.bus.lifecycle import start_consumer, stop_consumer
from concord.bus.records import Delivery


class Worker:
    """One consumer-group member on `topic`.

    Args:
        bus: returns the process bus (built on first use).
        topic: the topic to consume.
    """

    group: ClassVar[str]  # service-level consumer group
    message_type: ClassVar[type[Message]]  # the events on `topic`
    batched: ClassVar[bool] = False  # True: the bus calls handle_batch, else handle

    def __init__(self, bus: Callable[[], Bus], topic: str) -> None:
        self._bus = bus
        self.topic = topic
        self.consumer: Consumer | None = None
        self._pending: asyncio.Task[None] | None = None  # start_when_ready's wait

    def handle(self, message: Any, delivery: Delivery) -> None:
        """Handle one event; raising hands it back to the bus: InvalidArgument goes to the DLQ
        at once, a dependency outage (Unavailable, a deadline, a refused publish) is waited
        out with the record uncommitted, anything else is retried, then dead-lettered."""
        raise NotImplementedError

    def handle_batch(self, batch: list[tuple[Any, Delivery]]) -> None:
        """Handle a poll's events; raising makes the bus retry them one by one."""
        raise NotImplementedError

    def subscribe(self, bus: Bus) -> Consumer:
        """Returns: this worker's consumer on `bus` (not started)."""
        if self.batched:
            return bus.subscribe_batch(self.topic, self.group, self.handle_batch, self.message_type)
        return bus.subscribe(self.topic, self.group, self.handle, self.message_type)

    @property
    def running(self) -> bool:
        return self.consumer is not None

    async def start(self) -> None:
        """Subscribe and start consuming (a no-op when already running)."""
        if self.consumer is None:
            self.consumer = await start_consumer(lambda: self.subscribe(self._bus()))

    async def start_when_ready(self, ready: Callable[[], bool], poll_seconds: float = 1.0) -> None:
        """Start now when `ready()` holds, else as soon as it does (a model that arrives later,
        e.g. through a moved registry alias); until then the events stay queued."""
        # Worker.start, not self.start: a subclass's start is what calls this.
        if ready():
            await Worker.start(self)
            return

        async def wait_then_start() -> None:
            while not ready():
                await asyncio.sleep(poll_seconds)
            await Worker.start(self)

        self._pending = asyncio.create_task(wait_then_start())

    async def stop(self) -> None:
        """Stop consuming, committing what was finished; a no-op when not running."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
        consumer, self.consumer = self.consumer, None
        await stop_consumer(consumer)
