"""Bootstraps one asyncio gRPC server per service: health, reflection, interceptors, limits.

A service describes itself with a `ServiceDefinition` (its servicer and lifecycle hooks);
`ServiceServer` owns everything else, so that services add only a model and a servicer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from concord.config import Settings
from concord.serving.interceptors import ServingInterceptor
from concord.transport import add_port

if TYPE_CHECKING:
    from concord.serving.dependencies import Dependencies

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]


@dataclass
class ServiceDefinition:
    """What a service contributes: its name, servicer and optional start/stop hooks.

    Args:
        name: short name ("encoder"), also the settings key for its port.
        full_name: the proto service ("concord.v1.EncoderService").
        servicer: the object implementing the generated servicer interface.
        add_to_server: the generated `add_<X>Servicer_to_server` function.
        on_start: awaited before the port opens (load models, start workers).
        on_stop: awaited after in-flight calls drained (stop workers, close stores).
        dependencies: the peers it dials; while one is unreachable its proto service
            reports NOT_SERVING (readiness) and the overall health stays SERVING (liveness).
        model_ready: whether its model is loaded; False keeps the proto service NOT_SERVING,
            so a replica without a model gets no traffic (GetInfo says why).
    """

    name: str
    full_name: str
    servicer: Any
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    on_start: list[Hook] = field(default_factory=list)
    on_stop: list[Hook] = field(default_factory=list)
    dependencies: Dependencies | None = None
    model_ready: Callable[[], bool] | None = None


class ServiceServer:
    """One service on one port: start, report health, drain on stop.

    Args:
        definition: the service to host.
        settings: serving limits, auth token and bind address.
        port: overrides the port from settings (0 picks a free one).
    """

    def __init__(
        self, definition: ServiceDefinition, settings: Settings, port: int | None = None
    ) -> None:
        self.definition = definition
        serving = settings.serving
        self._grace = serving.grace_seconds
        token = serving.auth_token.get_secret_value() if serving.auth_token else None
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", serving.max_message_bytes),
            ("grpc.max_send_message_length", serving.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        if serving.max_connection_age_seconds is not None:
            # GOAWAY after this age (in-flight calls get the grace to finish), so clients
            # reconnect and a Service spreads them over replicas that joined since.
            age_ms = int(serving.max_connection_age_seconds * 1000)
            options += [
                ("grpc.max_connection_age_ms", age_ms),
                ("grpc.max_connection_age_grace_ms", int(self._grace * 1000)),
            ]
        self._server = grpc.aio.server(
            interceptors=[
                ServingInterceptor(definition.name, token, serving.default_deadline_seconds)
            ],
            options=options,
        )
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        definition.add_to_server(definition.servicer, self._server)
        reflection.enable_server_reflection(
            (
                definition.full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self._server,
        )
        wanted = serving.port_for(definition.name) if port is None else port
        self.port = add_port(self._server, f"{serving.host}:{wanted}", serving)
        if self.port == 0:
            raise OSError(f"{definition.name}: cannot bind {serving.host}:{wanted}")
        self.address = f"{serving.host}:{self.port}"
        # Under TLS, health alone is also served in plain text for probes that cannot speak
        # TLS (Kubernetes' gRPC probes): the same HealthServicer, no other service.
        self._health_server: grpc.aio.Server | None = None
        self.health_port: int | None = None
        if serving.tls is not None and serving.tls.health_port_offset:
            self._health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
            offset = serving.tls.health_port_offset
            health_address = f"{serving.host}:{self.port + offset}"
            self.health_port = self._health_server.add_insecure_port(health_address)
            if self.health_port == 0:
                raise OSError(f"{definition.name}: cannot bind health port {health_address}")

    async def start(self) -> None:
        """Run the start hooks, open the port, then report SERVING."""
        for hook in self.definition.on_start:
            await hook()
        await self._server.start()
        if self._health_server is not None:
            await self._health_server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        if self.definition.dependencies is None:
            await self._set_ready(True)
        else:
            await self.definition.dependencies.start(self._set_ready)
        log.info("%s serving on %s", self.definition.name, self.address)

    async def _set_ready(self, ready: bool) -> None:
        status = health_pb2.HealthCheckResponse
        model_ready = self.definition.model_ready
        ready = ready and (model_ready is None or model_ready())
        await self.health.set(
            self.definition.full_name, status.SERVING if ready else status.NOT_SERVING
        )

    async def stop(self) -> None:
        """Report NOT_SERVING, refuse new calls, let in-flight ones finish within grace."""
        if self.definition.dependencies is not None:
            await self.definition.dependencies.stop()
        await self.health.enter_graceful_shutdown()
        await self._server.stop(self._grace)
        if self._health_server is not None:
            await self._health_server.stop(0)
        for hook in self.definition.on_stop:
            await hook()
        log.info("%s stopped", self.definition.name)

    async def wait(self) -> None:
        await self._server.wait_for_termination()
