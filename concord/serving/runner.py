"""Runs one or more services in this process until a signal (or a stop event) arrives.

Services are found through the `concord.services` entry points, so the platform never
imports a service module by name (dependencies point protos -> concord -> services).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from importlib.metadata import entry_points
from wsgiref.simple_server import WSGIServer

from concord.config import SERVICE_NAMES, Settings, load_settings
from concord.platform import Platform
from concord.serving.memory import trim_periodically
from concord.serving.metrics import serve_metrics
from concord.serving.server import ServiceDefinition, ServiceServer

log = logging.getLogger(__name__)


def load_definition(name: str, platform: Platform) -> ServiceDefinition:
    """Build a service by name through its entry point, on the process's shared platform.

    Raises:
        ValueError: no service of that name is installed.
    """
    found = {ep.name: ep for ep in entry_points(group="concord.services")}
    if name not in found:
        known = ", ".join(sorted(found)) or "none (is concord installed with `pip install -e .`?)"
        raise ValueError(f"unknown service {name!r}; installed services: {known}")
    return found[name].load()(platform)


class Deployment:
    """A set of running services sharing one process, one event loop and one metrics port."""

    def __init__(self, names: Sequence[str], settings: Settings) -> None:
        self.settings = settings
        self.platform = Platform(settings)
        self.definitions = [load_definition(n, self.platform) for n in names]
        self.servers: list[ServiceServer] = []
        self._metrics: WSGIServer | None = None
        self._trimmer: asyncio.Task[None] | None = None

    @property
    def addresses(self) -> dict[str, str]:
        return {s.definition.name: s.address for s in self.servers}

    async def start(self) -> None:
        """Bind every port, run start hooks and report SERVING (inside the event loop:
        grpc.aio servers belong to the loop that creates them)."""
        # torch's pools sized to the container's CPU quota, before any model runs (once per
        # process; imported here so commands that serve nothing never import torch).
        from concord.devices import configure_torch_threads

        configure_torch_threads(self.settings.device)
        serving = self.settings.serving
        token = serving.auth_token.get_secret_value() if serving.auth_token else None
        self._metrics = serve_metrics(
            serving.metrics_port, serving.host, token if serving.metrics_auth else None
        )
        for definition in self.definitions:
            server = ServiceServer(definition, self.settings)
            await server.start()
            self.servers.append(server)
        self._trimmer = asyncio.get_running_loop().create_task(
            trim_periodically(), name="malloc-trim"
        )

    async def stop(self) -> None:
        # Services that call peers drain first (their in-flight calls still need the peers,
        # e.g. retrieval's Index encodes through the encoder), then the peers; each phase
        # drains its services at once, so shutdown takes at most two grace periods.
        if self._trimmer is not None:
            self._trimmer.cancel()
            self._trimmer = None
        callers = [s for s in self.servers if s.definition.dependencies is not None]
        for phase in (callers, [s for s in self.servers if s not in callers]):
            await asyncio.gather(*(server.stop() for server in reversed(phase)))
        self.servers = []
        self.platform.close()
        if self._metrics is not None:
            self._metrics.shutdown()
            self._metrics = None


async def run_until_signalled(deployment: Deployment) -> None:
    """Start, wait for SIGINT/SIGTERM, then drain and stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await deployment.start()
    log.info("serving %s", ", ".join(f"{n}@{a}" for n, a in deployment.addresses.items()))
    await stop.wait()
    log.info("shutting down (draining in-flight calls)")
    await deployment.stop()


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve_main(names: Sequence[str] = SERVICE_NAMES) -> None:
    """Entry for `python -m services.<name>`: settings from env, serve until signalled."""
    settings = load_settings()
    configure_logging(settings.log_level)
    asyncio.run(run_until_signalled(Deployment(names, settings)))
