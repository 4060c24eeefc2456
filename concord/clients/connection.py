"""Channels to Concord services: a `Connection` (bearer token, message limits, health,
reflection, `GetInfo`), `connect` to a service at the address the settings give it, and
`status_of`, what `concord status` prints."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from concord.config import SERVICE_NAMES, ServingSettings, Settings
from concord.proto.v1 import common_pb2
from concord.transport import open_channel

STUBS = {name: f"{name.capitalize()}ServiceStub" for name in SERVICE_NAMES}


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    address: str
    health: str  # SERVING, NOT_SERVING, UNKNOWN or UNREACHABLE
    models: tuple[str, ...] = ()  # "name@version"
    reflected: tuple[str, ...] = ()  # services the port lists through reflection
    error: str = ""
    not_ready: str = ""  # why GetInfo says the service is not ready ("" when ready)


class Connection:
    """A channel to one Concord service, carrying the bearer token when one is configured.

    Args:
        address: host:port.
        token: bearer token (None: no auth metadata).
        max_message_bytes: the largest message either side may send.
        serving: the transport settings (TLS); None: plaintext.
    """

    def __init__(
        self,
        address: str,
        token: str | None = None,
        max_message_bytes: int = 64 * 1024 * 1024,
        serving: ServingSettings | None = None,
    ) -> None:
        self.address = address
        self.channel = open_channel(
            address,
            serving or ServingSettings(),
            [
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )

    def stub(self, service: str) -> object:
        """The generated stub of a service ("encoder", ...) on this channel."""
        from importlib import import_module

        module = import_module(f"concord.proto.v1.{service}_pb2_grpc")
        return getattr(module, STUBS[service])(self.channel)

    def health(self, service: str = "", timeout: float = 2.0) -> str:
        # typeshed's HealthStub declares no methods; grpc adds Check per channel at run time.
        stub = cast(Any, health_pb2_grpc.HealthStub(self.channel))
        response: health_pb2.HealthCheckResponse = stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def reflected_services(self, timeout: float = 2.0) -> list[str]:
        # typeshed types ServerReflectionInfo as binascii.Incomplete (an exception class, imported
        # by mistake for _typeshed.Incomplete); it is the stream-stream method.
        stub = cast(Any, reflection_pb2_grpc.ServerReflectionStub(self.channel))
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses: Iterator[reflection_pb2.ServerReflectionResponse] = stub.ServerReflectionInfo(
            iter([request]), timeout=timeout
        )
        return sorted(s.name for r in responses for s in r.list_services_response.service)

    def info(self, service: str, timeout: float = 5.0) -> common_pb2.ServiceInfo:
        stub = self.stub(service)
        return stub.GetInfo(common_pb2.GetInfoRequest(), timeout=timeout, metadata=self.metadata)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(service: str, settings: Settings, host: str | None = None) -> Connection:
    """Open a connection to a service at the address the settings give it
    (`serving.addresses`), or on `host` at the service's port."""
    token = settings.serving.auth_token
    serving = settings.serving
    address = f"{host}:{serving.port_for(service)}" if host else serving.address_for(service)
    return Connection(
        address,
        token.get_secret_value() if token else None,
        settings.serving.max_message_bytes,
        settings.serving,
    )


def status_of(service: str, settings: Settings, host: str | None = None) -> ServiceStatus:
    """Health, served models and reflected services of one service; never raises."""
    with connect(service, settings, host) as conn:
        try:
            health = conn.health()
            info = conn.info(service)
            reflected = conn.reflected_services()
        except grpc.RpcError as err:
            health = "UNREACHABLE" if err.code() == grpc.StatusCode.UNAVAILABLE else "UNKNOWN"
            return ServiceStatus(service, conn.address, health, error=err.details() or "")
        models = tuple(f"{m.name}@{m.version}" for m in info.models)
        not_ready = "" if info.ready else (info.not_ready_reason or "not ready")
        return ServiceStatus(service, conn.address, health, models, tuple(reflected), "", not_ready)
