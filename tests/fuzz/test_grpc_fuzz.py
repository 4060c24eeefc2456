"""Random requests for every RPC of the six services,
built from the proto descriptors (plus corrupted and random bytes, and calls without the
token), over real gRPC: no answer is INTERNAL or UNKNOWN, and every service is still
SERVING afterwards. `make fuzz` runs the same with a larger budget."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import given
from hypothesis import strategies as st

from concord.clients import Connection
from concord.config import Settings
from tests.fixtures.serving import InProcessDeployment
from tests.fuzz.harness import FORBIDDEN, FUZZ_SETTINGS, METHODS, SERVICES, call, record
from tests.fuzz.strategies import messages, request_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def channels(
    deployment: tuple[InProcessDeployment, Settings],
) -> Iterator[dict[str, grpc.Channel]]:
    settings = deployment[1]
    connections = {
        name: Connection(f"127.0.0.1:{settings.serving.port_for(name)}") for name in SERVICES
    }
    yield {name: conn.channel for name, conn in connections.items()}
    for conn in connections.values():
        conn.close()


def _serving(settings: Settings) -> dict[str, str]:
    out = {}
    for name, service in SERVICES.items():
        with Connection(f"127.0.0.1:{settings.serving.port_for(name)}") as conn:
            out[name] = f"{conn.health('')}/{conn.health(service.full_name)}"
    return out


@pytest.fixture(scope="module")
def healthy(deployment: tuple[InProcessDeployment, Settings]) -> Iterator[None]:
    """Every service SERVING (liveness and readiness) before the module and after it."""
    want = {name: "SERVING/SERVING" for name in SERVICES}
    assert _serving(deployment[1]) == want
    yield
    assert _serving(deployment[1]) == want


def _check(service: str, method: MethodDescriptor, code: grpc.StatusCode, details: str) -> None:
    record(service, method, code, details)
    assert code not in FORBIDDEN, f"{service}/{method.name} answered {code.name}: {details}"


def _requests(
    channels: dict[str, grpc.Channel],
    service: str,
    method: MethodDescriptor,
    data: st.DataObject,
    plausible: bool,
) -> None:
    strategy = messages(method.input_type, plausible)
    if method.client_streaming:
        items = data.draw(st.lists(strategy, min_size=1, max_size=3))
        payload: bytes | list[bytes] = [m.SerializeToString() for m in items]
    else:
        payload = data.draw(strategy).SerializeToString()
    code, details = call(channels[service], method, payload, token=True)
    _check(service, method, code, details)


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[f"{s}.{m.name}" for s, m in METHODS])
@FUZZ_SETTINGS
@given(data=st.data())
def test_random_requests_never_internal(
    channels: dict[str, grpc.Channel],
    healthy: None,
    service: str,
    method: MethodDescriptor,
    data: st.DataObject,
) -> None:
    _requests(channels, service, method, data, plausible=False)


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[f"{s}.{m.name}" for s, m in METHODS])
@FUZZ_SETTINGS
@given(data=st.data())
def test_plausible_requests_never_internal(
    channels: dict[str, grpc.Channel],
    healthy: None,
    service: str,
    method: MethodDescriptor,
    data: st.DataObject,
) -> None:
    """Requests whose fields mostly hold realistic values: they pass validation and reach
    the models, the vector store and the bus, where the deeper bugs live."""
    _requests(channels, service, method, data, plausible=True)


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[f"{s}.{m.name}" for s, m in METHODS])
@FUZZ_SETTINGS
@given(data=st.data())
def test_raw_bytes_and_missing_tokens_never_internal(
    channels: dict[str, grpc.Channel],
    healthy: None,
    service: str,
    method: MethodDescriptor,
    data: st.DataObject,
) -> None:
    raw = data.draw(request_bytes(method))
    token = data.draw(st.booleans())
    code, details = call(
        channels[service], method, [raw] if method.client_streaming else raw, token
    )
    _check(service, method, code, details)
    if not token:
        assert code == grpc.StatusCode.UNAUTHENTICATED, (code, details)
