"""Readiness that follows the services a service dials (retrieval needs the encoder).

A `Dependencies` watch asks each peer's `grpc.health.v1` (open without a token) for its proto
service at the address
the settings give it (`serving.address_for`), on start and then every few seconds. While one
is unreachable the hosting server reports its proto service NOT_SERVING (the readiness probe
of compose and Helm) and `reason` names the peer, its address and what failed; the overall
health ("", the liveness probe) stays SERVING, so a missing peer never restarts the pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from concord.config import Settings
from concord.transport import open_channel

log = logging.getLogger(__name__)

OnChange = Callable[[bool], Awaitable[None]]


class Dependencies:
    """Watches the health of the peers one service dials.

    Args:
        settings: where each peer is (`serving.addresses`).
        services: names of the peers, e.g. ("encoder",).
        interval: seconds between checks once started.
        timeout: seconds one health call may take.
    """

    def __init__(
        self,
        settings: Settings,
        services: Sequence[str],
        interval: float = 2.0,
        timeout: float = 1.0,
    ) -> None:
        self.addresses = {name: settings.serving.address_for(name) for name in services}
        self._serving = settings.serving
        self.interval = interval
        self.timeout = timeout
        self.unreachable: dict[str, str] = dict.fromkeys(self.addresses, "is not checked yet")
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return not self.unreachable

    @property
    def reason(self) -> str:
        """Why the service is not ready ("" when every peer answers)."""
        return "; ".join(
            f"{name} at {self.addresses[name]} {why}"
            for name, why in sorted(self.unreachable.items())
        )

    async def check(self) -> bool:
        """Ask every peer once. Returns: whether all of them are SERVING."""
        results = await asyncio.gather(*(self._probe(name) for name in self.addresses))
        before = dict(self.unreachable)
        self.unreachable = {
            name: why for name, why in zip(self.addresses, results, strict=True) if why
        }
        if self.unreachable != before and self.unreachable:
            log.warning("not ready: %s", self.reason)
        elif before and not self.unreachable:
            log.info("every dependency reachable: %s", ", ".join(self.addresses.values()))
        return self.ready

    async def start(self, on_change: OnChange) -> None:
        """Check now, report, then keep checking in the background until `stop`."""
        ready = await self.check()
        await on_change(ready)
        self._task = asyncio.create_task(self._loop(on_change, ready))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))
        self._channels.clear()

    async def _loop(self, on_change: OnChange, ready: bool) -> None:
        while True:
            await asyncio.sleep(self.interval)
            now = await self.check()
            if now != ready:
                await on_change(now)
                ready = now

    async def _probe(self, name: str) -> str:
        """Returns: "" when the peer reports SERVING, else what went wrong."""
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = open_channel(
                self.addresses[name], self._serving, aio=True
            )
        # typeshed's HealthStub declares no methods; Check is added per channel at run time.
        stub: Any = health_pb2_grpc.HealthStub(channel)
        try:
            # The peer's proto service, not "": its readiness, not only that it is alive.
            request = health_pb2.HealthCheckRequest(
                service=f"concord.v1.{name.capitalize()}Service"
            )
            reply = await stub.Check(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as err:
            return f"is not reachable: {err.code().name}: {err.details() or 'no details'}"
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            return f"answers but is not ready (health {status})"
        return ""
