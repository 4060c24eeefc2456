"""The services under test: `concord serve encoder retrieval scorer` in a subprocess (with
entry points where Concord is not installed), and gRPC channels and client rates."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.harness import concurrent_rate, wait_serving

SERVICES = ("encoder", "retrieval", "scorer")
RECORD_ENV = "CONCORD_GPU_BENCH_RECORD_IMPORTS"  # file: top-level modules imported, appended
# The service process: Concord's own runner (`concord serve` without the console script).
SERVER = f"""
import atexit, os, sys
record = os.environ.get({RECORD_ENV!r})
if record:
    def _dump():
        with open(record, "a") as f:
            f.write("\\n".join(sorted({{m.split(".")[0] for m in sys.modules}})) + "\\n")
    atexit.register(_dump)
from concord.serving.runner import serve_main
serve_main(sys.argv[1:])
"""


def ensure_entry_points(scratch: Path) -> str | None:
    """Services plug in through the `concord.services` entry points; where Concord is not
    pip-installed (a python with torch on a GPU machine, the repo on PYTHONPATH), write a
    dist-info that declares them from pyproject.toml. Returns: a directory for PYTHONPATH."""
    from importlib.metadata import entry_points

    found = {ep.name for ep in entry_points(group="concord.services")}
    if set(SERVICES) <= found:
        return None
    import tomllib

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    info = scratch / "site" / f"concord-{project['version']}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: concord\nVersion: {project['version']}\n"
    )
    groups = project.get("entry-points", {})
    text = ""
    for group, eps in groups.items():
        text += f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
    (info / "entry_points.txt").write_text(text)
    return str(scratch / "site")


@contextlib.contextmanager
def serve(home: Path, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """`concord serve encoder retrieval scorer` in a subprocess until the block ends.
    Yields: service -> address."""
    from concord.config import SERVICE_NAMES
    from concord.ports import free_ports

    *ports, metrics = free_ports(len(SERVICE_NAMES) + 1)
    port_map = dict(zip(SERVICE_NAMES, ports, strict=True))
    root = Path(__file__).resolve().parents[1]
    shim = ensure_entry_points(home)
    path = [str(root), *([shim] if shim else []), os.environ.get("PYTHONPATH", "")]
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in path if p),
        "CONCORD_HOME": str(home),
        "CONCORD_SERVING__PORTS": json.dumps(port_map),
        "CONCORD_SERVING__METRICS_PORT": str(metrics),
        "CONCORD_LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        **env,
    }
    log_path = home / "serve.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, *SERVICES], env=full_env, stdout=log, stderr=log, cwd=root
    )
    addresses = {s: f"127.0.0.1:{port_map[s]}" for s in SERVICES}
    try:
        for name in SERVICES:
            wait_serving(addresses[name], process, log_path, timeout=300)
        yield addresses
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def channels(address: str, n: int) -> list[Any]:
    import grpc

    options = [("grpc.max_receive_message_length", 256 << 20)]
    return [grpc.insecure_channel(address, options=options) for _ in range(n)]


def client_rate(
    stubs: list[Any], call: Callable[[Any], int], clients: int, seconds: float
) -> float:
    """Items/s with `clients` threads, each on its own channel, calling `call(stub)`."""
    counter = iter(range(10**12))
    lock = threading.Lock()

    def one() -> int:
        with lock:
            k = next(counter)
        return call(stubs[k % clients])

    return concurrent_rate(one, clients, seconds)
