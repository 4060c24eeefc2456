"""Prometheus metrics every Concord process exports on its metrics HTTP port."""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app, start_http_server

REQUESTS = Counter(
    "concord_grpc_requests_total", "gRPC calls handled", ["service", "method", "code"]
)
LATENCY = Histogram(
    "concord_grpc_latency_seconds",
    "gRPC call latency",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge("concord_grpc_in_flight", "gRPC calls in progress", ["service"])
BATCH_SIZE = Histogram(
    "concord_batch_size",
    "items per model call made by a dynamic batcher",
    ["batcher"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
QUEUE_DEPTH = Gauge("concord_batch_queue_depth", "items waiting in a dynamic batcher", ["batcher"])
SHED = Counter(
    "concord_batch_shed_total", "items refused because a batcher queue was full", ["batcher"]
)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
        return


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def bearer_guard(app: WsgiApp, token: str) -> WsgiApp:
    """Wrap a WSGI app so that only requests with `Authorization: Bearer <token>` reach it."""
    expected = f"Bearer {token}".encode()

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        presented = str(environ.get("HTTP_AUTHORIZATION", "")).encode()
        if not hmac.compare_digest(presented, expected):
            start_response("401 Unauthorized", [("WWW-Authenticate", "Bearer")])
            return [b"missing or wrong bearer token\n"]
        return app(environ, start_response)

    return guarded


def serve_metrics(
    port: int, host: str = "127.0.0.1", token: str | None = None
) -> WSGIServer | None:
    """Start the Prometheus HTTP endpoint (port 0 disables it); with `token`, scrapes must
    carry it as a bearer token (Prometheus: `authorization: {credentials: ...}`).

    Returns: the server to shut down."""
    if port == 0:
        return None
    if token is None:
        server, _thread = start_http_server(port, addr=host)
        return server
    httpd = make_server(
        host, port, bearer_guard(make_wsgi_app(), token), _ThreadingServer, _QuietHandler
    )
    threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True).start()
    return httpd
