"""`concord up`, `concord status` and `concord up --smoke` as a user runs them: real processes,
real ports, a reflection client listing the six concord.v1 services."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from concord.clients import Connection
from concord.config import SERVICE_NAMES
from tests.fixtures.serving import free_ports

# `concord up` as real subprocesses: six services start and stop (tens of seconds).
pytestmark = pytest.mark.slow

CONCORD = str(Path(sys.executable).with_name("concord"))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    *service_ports, metrics_port = free_ports(len(SERVICE_NAMES) + 1)
    return {
        **os.environ,
        "CONCORD_HOME": str(tmp_path / "home"),
        "CONCORD_SERVING__PORTS": json.dumps(dict(zip(SERVICE_NAMES, service_ports, strict=True))),
        "CONCORD_SERVING__METRICS_PORT": str(metrics_port),
    }


def _wait_serving(address: str, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with Connection(address) as conn:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"concord up exited early:\n{process.communicate()[0][-3000:]}")
            try:
                if conn.health() == "SERVING":
                    return
            except Exception:
                time.sleep(0.2)
    pytest.fail(f"{address} not SERVING after {timeout}s")


def test_up_serves_six_services_then_stops_cleanly(env: dict[str, str]) -> None:
    ports = json.loads(env["CONCORD_SERVING__PORTS"])
    process = subprocess.Popen(
        [CONCORD, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        for name in SERVICE_NAMES:
            _wait_serving(f"127.0.0.1:{ports[name]}", process)
        reflected: set[str] = set()
        for name in SERVICE_NAMES:
            with Connection(f"127.0.0.1:{ports[name]}") as conn:
                reflected |= {s for s in conn.reflected_services() if s.startswith("concord.v1.")}
                assert conn.info(name).service == name
        assert reflected == {f"concord.v1.{n.capitalize()}Service" for n in SERVICE_NAMES}

        status = subprocess.run(
            [CONCORD, "status", "--json"], env=env, capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 0, status.stdout + status.stderr
        rows = json.loads(status.stdout)
        assert [(r["service"], r["health"]) for r in rows] == [
            (n, "SERVING") for n in SERVICE_NAMES
        ]
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output[-3000:]
    assert "bias stopped" in output


def test_status_reports_unreachable_services(env: dict[str, str]) -> None:
    status = subprocess.run(
        [CONCORD, "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 1
    assert "UNREACHABLE" in status.stdout


def test_up_smoke_checks_every_service(env: dict[str, str]) -> None:
    smoke = subprocess.run(
        [CONCORD, "up", "--smoke"], env=env, capture_output=True, text=True, timeout=120
    )
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert "all 6 services SERVING" in smoke.stdout
    for name in SERVICE_NAMES:
        assert f"concord.v1.{name.capitalize()}Service" in smoke.stdout


def test_serve_rejects_unknown_service(env: dict[str, str]) -> None:
    result = subprocess.run(
        [CONCORD, "serve", "painter"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "painter" in result.stdout + result.stderr
