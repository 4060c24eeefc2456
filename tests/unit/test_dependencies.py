"""Service addresses are configuration, and readiness follows the peers a service dials:
retrieval without a reachable encoder reports its proto service NOT_SERVING (readiness) and
says which peer, while the overall health stays SERVING (liveness); it turns ready once an
encoder answers at the configured address."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from concord.clients import Connection, status_of
from concord.config import Settings, load_settings
from tests.fixtures.models import tiny_encoder
from tests.fixtures.serving import InProcessDeployment, free_ports


def test_peers_are_dialled_at_their_configured_address() -> None:
    settings = Settings(serving={"host": "0.0.0.0", "addresses": {"encoder": "enc:7000"}})
    assert settings.serving.address_for("encoder") == "enc:7000"
    # Unnamed peers: this host at their port; a wildcard bind address is not dialable.
    assert (
        settings.serving.address_for("scorer") == f"127.0.0.1:{settings.serving.port_for('scorer')}"
    )
    own = Settings(serving={"host": "127.0.0.7"})
    assert own.serving.address_for("encoder").startswith("127.0.0.7:")


def test_bad_addresses_name_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCORD_SERVING__ADDRESSES", '{"encoder": "no-port"}')
    with pytest.raises(ValidationError, match=r"addresses\.encoder"):
        load_settings()
    monkeypatch.setenv("CONCORD_SERVING__ADDRESSES", '{"encodr": "x:1"}')
    with pytest.raises(ValidationError, match="unknown service 'encodr'"):
        load_settings()


def _wait_for(predicate, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_retrieval_is_not_ready_until_its_encoder_answers(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    encoder_port, retrieval_port = free_ports(2)
    encoder_address = f"127.0.0.1:{encoder_port}"
    settings = Settings(
        home=tmp_path / "retrieval",
        serving={
            "ports": {"retrieval": retrieval_port},
            "addresses": {"encoder": encoder_address},
            "metrics_port": 0,
        },
    )
    retrieval = InProcessDeployment(["retrieval"], settings)
    encoder = None
    try:
        with Connection(f"127.0.0.1:{retrieval_port}") as conn:
            assert conn.health() == "SERVING"  # alive: liveness must not restart it
            assert conn.health("concord.v1.RetrievalService") == "NOT_SERVING"
            status = status_of("retrieval", settings)
            assert "encoder" in status.not_ready and encoder_address in status.not_ready

            encoder_settings = Settings(
                home=tmp_path / "encoder",
                encoder_model=str(tiny_encoder(tmp_path_factory)),
                serving={"ports": {"encoder": encoder_port}, "metrics_port": 0},
            )
            encoder = InProcessDeployment(["encoder"], encoder_settings)
            assert _wait_for(lambda: conn.health("concord.v1.RetrievalService") == "SERVING")
            assert status_of("retrieval", settings).not_ready == ""

            encoder.close()
            encoder = None
            assert _wait_for(lambda: conn.health("concord.v1.RetrievalService") == "NOT_SERVING")
    finally:
        if encoder is not None:
            encoder.close()
        retrieval.close()
