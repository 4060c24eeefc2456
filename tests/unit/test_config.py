"""Settings: embedded defaults, env overrides, TOML file, and errors naming the field."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from concord.config import SERVICE_NAMES, load_settings


def test_defaults_need_no_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CONCORD_CONFIG", raising=False)
    monkeypatch.setenv("CONCORD_HOME", str(tmp_path))
    settings = load_settings()
    assert settings.bus == "memory" and settings.vectors == "embedded"
    assert settings.serving.auth_token is None
    assert settings.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    ports = [settings.serving.port_for(name) for name in SERVICE_NAMES]
    assert len(set(ports)) == len(SERVICE_NAMES)


def test_env_overrides_nested_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCORD_BUS", "kafka")
    monkeypatch.setenv("CONCORD_KAFKA__BOOTSTRAP_SERVERS", "broker:9093")
    monkeypatch.setenv("CONCORD_SERVING__AUTH_TOKEN", "s3cret")
    monkeypatch.setenv("CONCORD_SERVING__PORTS", '{"scorer": 7000}')
    settings = load_settings()
    assert settings.bus == "kafka"
    assert settings.kafka.bootstrap_servers == "broker:9093"
    assert settings.serving.auth_token is not None
    assert settings.serving.auth_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.serving.port_for("scorer") == 7000


def test_toml_file_is_read_and_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "concord.toml"
    config.write_text('log_level = "DEBUG"\n[batching]\nmax_batch_size = 8\nmax_queue = 10\n')
    monkeypatch.setenv("CONCORD_CONFIG", str(config))
    monkeypatch.setenv("CONCORD_BATCHING__MAX_QUEUE", "99")
    settings = load_settings()
    assert settings.log_level == "DEBUG"
    assert settings.batching.max_batch_size == 8
    assert settings.batching.max_queue == 99


def test_bad_values_name_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCORD_BATCHING__MAX_BATCH_SIZE", "0")
    with pytest.raises(ValidationError, match=r"batching\.max_batch_size"):
        load_settings()


def test_qdrant_backend_requires_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCORD_VECTORS", "qdrant")
    with pytest.raises(ValidationError, match=r"qdrant\.url"):
        load_settings()


def test_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONCORD_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(FileNotFoundError, match=r"absent\.toml"):
        load_settings()


def test_unknown_service_port_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown service 'painter'"):
        load_settings().serving.port_for("painter")
