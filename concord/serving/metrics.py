"""Prometheus metrics every Concord process exports on its metrics HTTP port."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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


def serve_metrics(port: int, host: str = "127.0.0.1") -> WSGIServer | None:
    """Start the Prometheus HTTP endpoint (port 0 disables it); returns the server to shut down."""
    if port == 0:
        return None
    server, _thread = start_http_server(port, addr=host)
    return server
