"""The fuzzed deployment's settings, a generic gRPC call of any method by descriptor, the
codes a hostile request may get back, and the tally `make fuzz` writes to its report.

Budget: `CONCORD_FUZZ_EXAMPLES` examples per RPC (default 12: the whole suite stays under a
minute in CI, derandomized so CI does not flake); `make fuzz` raises it and lets Hypothesis
draw fresh examples each run.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from hypothesis import HealthCheck, settings

from concord.config import Settings
from concord.proto.v1 import (
    bias_pb2,
    encoder_pb2,
    generator_pb2,
    linker_pb2,
    retrieval_pb2,
    scorer_pb2,
)
from tests.fixtures.serving import free_ports

EXAMPLES = int(os.environ.get("CONCORD_FUZZ_EXAMPLES", "12"))
LONG_RUN = "CONCORD_FUZZ_EXAMPLES" in os.environ  # `make fuzz`: fresh random examples
TOKEN = "fuzz-token"
CALL_TIMEOUT = 30.0
SCORER_MAX_PAIRS = 4
SCORER_MAX_CHARS = 120

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not LONG_RUN,
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
    ],
)

SERVICES: dict[str, ServiceDescriptor] = {
    "encoder": encoder_pb2.DESCRIPTOR.services_by_name["EncoderService"],
    "retrieval": retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"],
    "scorer": scorer_pb2.DESCRIPTOR.services_by_name["ScorerService"],
    "generator": generator_pb2.DESCRIPTOR.services_by_name["GeneratorService"],
    "linker": linker_pb2.DESCRIPTOR.services_by_name["LinkerService"],
    "bias": bias_pb2.DESCRIPTOR.services_by_name["BiasService"],
}
METHODS: list[tuple[str, MethodDescriptor]] = [
    (name, method) for name, service in SERVICES.items() for method in service.methods
]

# What bad input may be answered: never INTERNAL or UNKNOWN (a bug, or a traceback's worth
# of detail), never UNIMPLEMENTED or DATA_LOSS for a method the service declares.
FORBIDDEN = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.DATA_LOSS,
}

OUTCOMES: Counter[tuple[str, str]] = Counter()  # (service/method, code name) -> calls
FAILURES: list[str] = []  # what a forbidden answer looked like (for the report)
_LOCK = threading.Lock()


def fuzz_settings(
    home: Path, encoder: str, generator: str, scorer: str, linker: str, bias: str
) -> Settings:
    """Settings for the six services on free ports, with limits that keep a valid request
    cheap (2-step generations, 4 pairs per Score, small graphs) and a bearer token."""
    ports = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
    return Settings(
        home=home,
        encoder_model=encoder,
        generator={
            "model": generator,
            "max_steps": 3,
            "default_steps": 2,
            "max_prompts_per_request": 2,
        },
        scorer={
            "model": scorer,
            "max_pairs_per_request": SCORER_MAX_PAIRS,
            "max_text_chars": SCORER_MAX_CHARS,
        },
        linker={"model": linker, "max_graph_entities": 64, "max_mentions_per_request": 8},
        bias={"model": bias, "max_pairs_per_request": 4, "max_counterfactuals": 4},
        serving={
            "ports": ports,
            "metrics_port": 0,
            "auth_token": TOKEN,
            "max_text_chars": 500,
        },
        kafka={"group_prefix": f"fuzz{uuid.uuid4().hex[:8]}", "retry_backoff_seconds": 0.05},
    )


def call(
    channel: grpc.Channel, method: MethodDescriptor, payload: bytes | list[bytes], token: bool
) -> tuple[grpc.StatusCode, str]:
    """Send raw request bytes to `method` (a list for a client stream); read every response.

    Returns:
        The status code and its details.
    """
    path = f"/{method.containing_service.full_name}/{method.name}"
    metadata = (("authorization", f"Bearer {TOKEN}"),) if token else ()
    kind = (method.client_streaming, method.server_streaming)
    try:
        if kind == (False, False):
            channel.unary_unary(path)(payload, timeout=CALL_TIMEOUT, metadata=metadata)
        elif kind == (False, True):
            _drain(channel.unary_stream(path)(payload, timeout=CALL_TIMEOUT, metadata=metadata))
        elif kind == (True, True):
            items = payload if isinstance(payload, list) else [payload]
            stream = channel.stream_stream(path)
            _drain(stream(iter(items), timeout=CALL_TIMEOUT, metadata=metadata))
        else:
            items = payload if isinstance(payload, list) else [payload]
            channel.stream_unary(path)(iter(items), timeout=CALL_TIMEOUT, metadata=metadata)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""


def _drain(responses: Iterator[bytes]) -> None:
    for _ in responses:
        pass


def record(service: str, method: MethodDescriptor, code: grpc.StatusCode, details: str) -> None:
    with _LOCK:
        OUTCOMES[(f"{service}/{method.name}", code.name)] += 1
        if code in FORBIDDEN:
            FAILURES.append(f"{service}/{method.name}: {code.name} {details[:200]}")


def write_report(path: Path) -> None:
    """The tally as markdown: calls per method and status code, and any forbidden answers."""
    methods = sorted({m for m, _ in OUTCOMES})
    codes = sorted({c for _, c in OUTCOMES})
    lines = [
        "# Fuzz run (`make fuzz`)",
        "",
        f"Random requests built from the proto descriptors (plus corrupted and random bytes) "
        f"sent over real gRPC to an in-process deployment with tiny models; "
        f"{EXAMPLES} examples per RPC and mode. Calls per status code:",
        "",
        "| method | " + " | ".join(codes) + " |",
        "|---" * (len(codes) + 1) + "|",
    ]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(str(OUTCOMES[(m, c)]) for c in codes) + " |")
    total = sum(OUTCOMES.values())
    lines += [
        "",
        f"Total calls: {total}; INTERNAL/UNKNOWN/UNIMPLEMENTED/DATA_LOSS: {len(FAILURES)}.",
    ]
    lines += [f"- {f}" for f in FAILURES[:50]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
