"""The server interceptor every Concord service runs: auth, deadlines, error mapping, metrics.

One interceptor wraps each handler so that all four RPC kinds (unary/streaming in/out)
share one guard. Health and reflection stay open without a token: Kubernetes probes and
grpcurl must work before a caller has credentials.

The token is checked on the call's metadata before the body is parsed: an unauthenticated
caller gets a handler that never deserializes its bytes. A body that does not parse as the
request message is INVALID_ARGUMENT (a caller's mistake, logged at DEBUG), not UNKNOWN or
INTERNAL with a traceback per call.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeAlias, cast

import grpc
from google.protobuf.message import DecodeError

from concord.errors import ConcordError, InvalidArgument
from concord.serving import metrics
from concord.serving.batcher import CALL_DEADLINE
from concord.serving.errors import bounded, to_grpc_status

log = logging.getLogger(__name__)

# Generic in grpc's stubs only: a string so that nothing subscripts it at run time.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class ServingInterceptor(grpc.aio.ServerInterceptor):
    """Guards every call of one service.

    Args:
        service: the short service name used as a metrics label ("encoder").
        auth_token: when set, calls need `authorization: Bearer <token>` metadata.
        default_deadline: seconds applied when the caller sent no deadline (None: unbounded).
    """

    def __init__(
        self, service: str, auth_token: str | None = None, default_deadline: float | None = None
    ) -> None:
        self._service = service
        self._token = auth_token
        self._default_deadline = default_deadline

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        if not self._authorized(handler_call_details.invocation_metadata):
            return _refuse(handler, self._service, method)
        return _wrap(handler, lambda context: self._guard(method, context))

    def _authorized(self, metadata: Any) -> bool:
        """True when no token is set, or when exactly one `authorization` header carries it
        (a repeated header is refused: proxies disagree on which one counts)."""
        if not self._token:
            return True
        values = [v for k, v in (metadata or ()) if k == "authorization"]
        if len(values) != 1:
            return False
        presented = values[0] if isinstance(values[0], str) else values[0].decode("latin-1")
        return hmac.compare_digest(presented.encode(), f"Bearer {self._token}".encode())

    @asynccontextmanager
    async def _guard(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        name = method.rsplit("/", 1)[-1]
        code = "OK"
        started = time.perf_counter()
        metrics.IN_FLIGHT.labels(self._service).inc()
        remaining = context.time_remaining()
        deadline = self._default_deadline if remaining is None else None
        # The batchers this call submits to read it (deadline-aware admission).
        budget = remaining if remaining is not None else deadline
        token = CALL_DEADLINE.set(time.monotonic() + budget if budget is not None else None)
        try:
            async with asyncio.timeout(deadline):
                yield
        except TimeoutError:
            code = "DEADLINE_EXCEEDED"
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"{name} exceeded {deadline}s")
        except (grpc.aio.AbortError, asyncio.CancelledError):
            code = _code_name(context.code()) or "CANCELLED"
            raise
        except NotImplementedError:
            # Generated servicer bases raise this for RPCs a service has not built yet.
            code = "UNIMPLEMENTED"
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented yet")
        except ConcordError as err:
            code = err.status
            status = to_grpc_status(err)
            await context.abort(status.code, status.details, status.trailing_metadata)
        except _Unparseable as err:
            code = "INVALID_ARGUMENT"
            log.debug("%s: unparseable request body (%s)", method, err.reason)
            status = to_grpc_status(
                InvalidArgument("request", f"the body is not a valid {err.message_name}")
            )
            await context.abort(status.code, status.details, status.trailing_metadata)
        except Exception:
            # Never a stack trace to the caller: log it with an id the caller can quote.
            incident = uuid.uuid4().hex[:12]
            log.exception("unhandled error in %s (incident %s)", method, incident)
            code = "INTERNAL"
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error (incident {incident})")
        finally:
            CALL_DEADLINE.reset(token)
            metrics.IN_FLIGHT.labels(self._service).dec()
            metrics.REQUESTS.labels(self._service, name, code).inc()
            metrics.LATENCY.labels(self._service, name).observe(time.perf_counter() - started)


def _code_name(code: grpc.StatusCode | None) -> str | None:
    return code.name if code is not None else None


Guard = Callable[[grpc.aio.ServicerContext], Any]
# grpc's stubs type a handler's behaviours as sync callables; under grpc.aio they are
# coroutine functions (or async generators), so they are called untyped here.
Behaviour = Callable[..., Any]


class _Unparseable(Exception):
    """A request body that is not the RPC's request message (raised inside the guard)."""

    def __init__(self, message_name: str, reason: str) -> None:
        super().__init__(message_name)
        self.message_name = message_name
        self.reason = bounded(reason, 200)


class _BadBody:
    """What the lenient deserializer returns for bytes that do not parse: the behaviour
    raises it inside the guard, where it becomes INVALID_ARGUMENT like any bad input."""

    def __init__(self, error: _Unparseable) -> None:
        self.error = error


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """Wrap a request deserializer so that a parse failure is a value, not a grpc error
    (grpc would answer UNKNOWN / INTERNAL and log a traceback per call)."""
    if deserializer is None:
        return None
    owner = getattr(deserializer, "__self__", None)
    name = str(getattr(owner, "__name__", None) or getattr(deserializer, "__qualname__", "message"))

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, ValueError, TypeError, RecursionError) as err:
            return _BadBody(_Unparseable(name.split(".")[0], str(err)))

    return parse


def _checked(request: Any) -> Any:
    if isinstance(request, _BadBody):
        raise request.error
    return request


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _checked(request)


def _refuse(handler: Handler, service: str, method: str) -> Handler:
    """A handler of the same kind that answers UNAUTHENTICATED without parsing the body."""
    name = method.rsplit("/", 1)[-1]

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        metrics.REQUESTS.labels(service, name, "UNAUTHENTICATED").inc()
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    codec: dict[str, Any] = {
        "request_deserializer": None,  # the bytes stay bytes: nothing is parsed
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse, **codec)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse, **codec)

    async def refuse_streamed(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await refuse(request, context)
        yield  # pragma: no cover - abort raised above; this makes it an async generator

    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse_streamed, **codec)
    return grpc.stream_stream_rpc_method_handler(refuse_streamed, **codec)


def _wrap(handler: Handler, guard: Guard) -> Handler:
    """Return a handler of the same kind whose behaviour runs inside `guard(context)`."""
    codec = {
        "request_deserializer": _lenient(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        inner: Behaviour = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with guard(context):
                return await inner(_checked(request), context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **codec)
    if handler.stream_unary:
        inner_streamed: Behaviour = handler.stream_unary

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            async with guard(context):
                return await inner_streamed(_checked_stream(requests), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **codec)
    streaming = cast(Behaviour, handler.unary_stream or handler.stream_stream)
    factory = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream
        else grpc.stream_stream_rpc_method_handler
    )

    checked = _checked_stream if handler.stream_stream else _checked

    async def streamed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with guard(context):
            result = streaming(checked(request), context)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            else:  # a coroutine that writes with context.write()
                await result

    return factory(streamed, **codec)
