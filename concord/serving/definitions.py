"""Helpers a service uses to describe itself: its ServiceDefinition and GetInfo answer."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from concord import __version__
from concord.proto.v1 import common_pb2
from concord.serving.server import ServiceDefinition
from concord.wire import model_ref

if TYPE_CHECKING:
    from concord.serving.servable import Servable


def define(name: str, servicer: Any, grpc_module: ModuleType) -> ServiceDefinition:
    """Describe a service whose proto service is `concord.v1.<Name>Service`.

    Args:
        name: short service name ("encoder").
        servicer: the servicer instance.
        grpc_module: the generated `<name>_pb2_grpc` module.
    Returns:
        A ServiceDefinition with the proto full name and the generated registration function.
    """
    service = f"{name.capitalize()}Service"
    return ServiceDefinition(
        name=name,
        full_name=f"concord.v1.{service}",
        servicer=servicer,
        add_to_server=getattr(grpc_module, f"add_{service}Servicer_to_server"),
    )


def service_info(
    name: str,
    models: list[common_pb2.ModelRef] | None = None,
    ready: bool = True,
    reason: str = "",
) -> common_pb2.ServiceInfo:
    """The GetInfo answer: service name, platform version, the models it serves and, when
    not ready, why."""
    return common_pb2.ServiceInfo(
        service=name,
        concord_version=__version__,
        models=models or [],
        ready=ready,
        not_ready_reason="" if ready else reason,
    )


def servable_info(servable: Servable[Any]) -> common_pb2.ServiceInfo:
    """The GetInfo answer of a service that serves one `Servable`.

    Args:
        servable: the service's servable (its name is the service's).
    Returns:
        The service name, the models it answers with, readiness and, when not ready, the load
        error (or "still loading").
    """
    models = [model_ref(m) for m in servable.models]
    return service_info(
        servable.name, models=models, ready=servable.ready, reason=servable.not_ready_reason
    )
