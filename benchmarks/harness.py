"""What every benchmark shares: services in their own process, free ports, timing, reports.

Services run as `concord serve` subprocesses (as in production) so client and server do
not share one interpreter's GIL; the ceiling is measured in this process on the same data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from concord.clients import Connection
from concord.config import SERVICE_NAMES
from concord.ports import free_ports

CONCORD = str(Path(sys.executable).with_name("concord"))
# A valid scorer calibration for packages the benchmarks (and tests) write: what computing the
# probability costs does not depend on its coefficients. Trained packages fit theirs
# (pipelines/scorer); this is the form `concord.models.alignment.aligned_probability` reads.
PLACEHOLDER_CALIBRATION = {
    "form": "logistic",
    "features": ["clip_score", "fine_grained_score", "f_clip_score"],
    "mean": [0.5, 0.2, 0.5],
    "scale": [0.5, 0.2, 0.5],
    "coef": [1.0, 0.5, 1.0],
    "intercept": 0.0,
}


def placeholder_scorer(
    directory: Path, encoder: Path | str, created_by: str, **extra: object
) -> Path:
    """Write a scorer package (scorer.json) naming `encoder`, with the placeholder calibration.

    Returns:
        `directory`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {
        "encoder": str(encoder),
        **extra,
        "calibration": PLACEHOLDER_CALIBRATION,
        "created_by": created_by,
    }
    (directory / "scorer.json").write_text(json.dumps(manifest))
    return directory


@dataclass(frozen=True)
class Served:
    env: dict[str, str]
    ports: dict[str, int]

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"


@contextmanager
def serve(services: Sequence[str], home: Path, **env: str) -> Iterator[Served]:
    """Run `concord serve SERVICES...` in a subprocess until the block ends.

    Args:
        services: service names to host in that one process.
        home: CONCORD_HOME for the process (embedded vectors, registry).
        env: extra environment (e.g. CONCORD_ENCODER_MODEL=DIR).
    """
    *ports, metrics = free_ports(len(SERVICE_NAMES) + 1)
    port_map = dict(zip(SERVICE_NAMES, ports, strict=True))
    full_env = {
        **os.environ,
        "CONCORD_HOME": str(home),
        "CONCORD_SERVING__PORTS": json.dumps(port_map),
        "CONCORD_SERVING__METRICS_PORT": str(metrics),
        "CONCORD_LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
        **env,
    }
    log = open(home / "serve.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen([CONCORD, "serve", *services], env=full_env, stdout=log, stderr=log)
    served = Served(full_env, port_map)
    try:
        for name in services:
            wait_serving(served.address(name), process, home / "serve.log")
        yield served
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def wait_serving(
    address: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    with Connection(address) as conn:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"service exited early:\n{log.read_text()[-3000:]}")
            try:
                if conn.health() == "SERVING":
                    return
            except Exception:
                time.sleep(0.2)
    raise TimeoutError(f"{address} not SERVING after {timeout}s:\n{log.read_text()[-3000:]}")


def rate(fn: Callable[[], int], min_seconds: float = 3.0, warmup: int = 2) -> float:
    """Items per second of `fn` (which returns how many items it processed), after warm-up."""
    for _ in range(warmup):
        fn()
    items, started = 0, time.perf_counter()
    while time.perf_counter() - started < min_seconds:
        items += fn()
    return items / (time.perf_counter() - started)


def latencies(fn: Callable[[], object], n: int = 200, warmup: int = 10) -> np.ndarray:
    """Seconds per call of `fn`, n calls after warm-up."""
    for _ in range(warmup):
        fn()
    out = np.empty(n)
    for i in range(n):
        started = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - started
    return out


def pct(samples: np.ndarray, q: float) -> float:
    return float(np.percentile(samples, q))


def concurrent_rate(call: Callable[[], int], clients: int, seconds: float) -> float:
    """Items/s with `clients` threads each calling `call()` (returns items) in a loop."""
    counts = [0] * clients
    stop = threading.Event()

    def loop(i: int) -> None:
        while not stop.is_set():
            counts[i] += call()

    call()  # warm-up
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started)
