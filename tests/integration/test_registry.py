"""Tests of concord.registry against the embedded sqlite store AND a real MLflow server.

Every test runs on both backends; the server ones are marked `mlflow` and use the session's
`mlflow_server` fixture (tests/fixtures/mlflow.py), which fails rather than skips.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from concord.config import Settings
from concord.registry import (
    InvalidModelUri,
    ModelNotFound,
    ModelVersionInfo,
    Registry,
    RegistryError,
    parse_model_uri,
)

# "server" starts the session's MLflow server.
BACKENDS = ["embedded", pytest.param("server", marks=[pytest.mark.mlflow, pytest.mark.slow])]


@pytest.fixture(scope="module")
def embedded_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One sqlite store per module: creating one runs MLflow's migrations (seconds).
    return tmp_path_factory.mktemp("concord-home")  # never ~/.concord in tests


@pytest.fixture(params=BACKENDS)
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Registry:
    if request.param == "server":
        server = request.getfixturevalue("mlflow_server")
        return Registry(server.uri, cache_dir=tmp_path / "cache")
    return Registry.from_settings(Settings(home=request.getfixturevalue("embedded_home")))


@pytest.fixture
def model_name() -> str:
    return f"concord-test-{uuid.uuid4().hex[:10]}"  # the server is shared by the session


def write_model(root: Path, weights: bytes, config: dict[str, object]) -> Path:
    """A model directory as later issues store them: weights + JSON config (+ a subfolder)."""
    root.mkdir(parents=True)
    (root / "state_dict.pt").write_bytes(weights)
    (root / "config.json").write_text(json.dumps(config))
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    return root


def log_version(registry: Registry, name: str, model_dir: Path, tag: str) -> ModelVersionInfo:
    with registry.start_run(f"train-{tag}", params={"lr": 0.1, "tag": tag}) as run:
        run.log_metrics({"loss": 0.5}, step=0)
        run.log_metrics({"loss": 0.25}, step=1)
        artifact_path = run.log_model_dir(model_dir)
    return registry.register_model(name, run.run_id, artifact_path, tags={"tag": tag})


def test_parse_model_uri() -> None:
    assert parse_model_uri("models:/enc@production").alias == "production"
    ref = parse_model_uri("models:/enc/3")
    assert (ref.name, ref.version, ref.alias) == ("enc", 3, None)
    for bad in ("models:/enc", "models:/enc/Production", "runs:/abc/model", "models:/enc/0", ""):
        with pytest.raises(InvalidModelUri):
            parse_model_uri(bad)


def test_run_logs_params_metrics_and_artifacts(registry: Registry, tmp_path: Path) -> None:
    extra = tmp_path / "report.txt"
    extra.write_text("hello")
    with registry.start_run("logging", params={"batch": 32}, tags={"suite": "test"}) as run:
        run.log_metrics({"acc": 0.5}, step=0)
        run.log_metrics({"acc": 0.75}, step=1)
        run.log_artifact(extra, "reports")
    data = registry.client.get_run(run.run_id)
    assert data.info.status == "FINISHED"
    assert data.data.params == {"batch": "32"}
    assert data.data.metrics == {"acc": 0.75}
    assert data.data.tags["suite"] == "test"
    history = registry.client.get_metric_history(run.run_id, "acc")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.75)]
    assert [a.path for a in registry.client.list_artifacts(run.run_id, "reports")] == [
        "reports/report.txt"
    ]


def test_failed_block_marks_run_failed(registry: Registry) -> None:
    with pytest.raises(RuntimeError, match="boom"), registry.start_run("fails") as run:
        raise RuntimeError("boom")
    assert registry.client.get_run(run.run_id).info.status == "FAILED"


def test_register_alias_resolve_and_load_back(
    registry: Registry, model_name: str, tmp_path: Path
) -> None:
    w1, w2 = b"\x00\x01weights-v1", b"\x00\x02weights-v2" * 100
    v1 = log_version(registry, model_name, write_model(tmp_path / "m1", w1, {"dim": 8}), "one")
    v2 = log_version(registry, model_name, write_model(tmp_path / "m2", w2, {"dim": 16}), "two")
    assert (v1.version, v2.version) == (1, 2)
    assert v1.run_id and v1.run_id != v2.run_id
    assert v2.tags == {"tag": "two"}
    assert [v.version for v in registry.list_versions(model_name)] == [1, 2]

    assert registry.set_alias(model_name, "production", 1).version == 1
    prod = registry.resolve(f"models:/{model_name}@production")
    assert (prod.version, prod.aliases, prod.run_id) == (1, ("production",), v1.run_id)
    info, path = registry.download(f"models:/{model_name}@production", tmp_path / "dl1")
    assert info.version == 1
    assert (path / "state_dict.pt").read_bytes() == w1
    assert json.loads((path / "config.json").read_text()) == {"dim": 8}
    assert (path / "tokenizer" / "vocab.txt").read_text() == "a\nb\n"

    registry.set_alias(model_name, "production", 2)  # promote: the alias moves
    info, path = registry.download(f"models:/{model_name}@production")
    assert info.version == 2
    assert (path / "state_dict.pt").read_bytes() == w2
    assert json.loads((path / "config.json").read_text()) == {"dim": 16}
    assert registry.get_version(model_name, 1).aliases == ()
    assert registry.resolve(f"models:/{model_name}/1").source == v1.source

    # Pinned version URIs resolve regardless of aliases.
    _, pinned = registry.download(f"models:/{model_name}/1", tmp_path / "dl-pinned")
    assert (pinned / "state_dict.pt").read_bytes() == w1

    registry.delete_alias(model_name, "production")
    with pytest.raises(ModelNotFound, match="production"):
        registry.resolve(f"models:/{model_name}@production")


def test_unknown_model_alias_or_version_raise_model_not_found(
    registry: Registry, model_name: str, tmp_path: Path
) -> None:
    with pytest.raises(ModelNotFound, match=model_name):
        registry.resolve(f"models:/{model_name}@production")
    with pytest.raises(ModelNotFound):
        registry.resolve(f"models:/{model_name}/1")
    with pytest.raises(ModelNotFound):
        registry.list_versions(model_name)
    with pytest.raises(ModelNotFound):
        registry.download(f"models:/{model_name}@production")

    log_version(registry, model_name, write_model(tmp_path / "m", b"w", {}), "only")
    with pytest.raises(ModelNotFound, match="staging"):
        registry.resolve(f"models:/{model_name}@staging")
    with pytest.raises(ModelNotFound):
        registry.resolve(f"models:/{model_name}/7")
    with pytest.raises(ModelNotFound):
        registry.set_alias(model_name, "production", 7)
    with pytest.raises(ModelNotFound):
        registry.delete_alias(model_name, "staging")


def test_register_refuses_a_run_without_the_model(registry: Registry, model_name: str) -> None:
    with registry.start_run("empty") as run:
        run.log_params({"x": 1})
    with pytest.raises(RegistryError, match="no artifacts"):
        registry.register_model(model_name, run.run_id)


def test_embedded_store_stays_under_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    registry = Registry.from_settings(settings)
    model = write_model(tmp_path / "m", b"w", {"k": 1})
    v = log_version(registry, "embedded-model", model, "x")
    assert (tmp_path / "home" / "mlflow.db").is_file()
    assert v.source.startswith(settings.artifacts_dir.resolve().as_uri())
    info, path = registry.download("models:/embedded-model/1")
    assert path == settings.home / "models" / "embedded-model" / "1"
    assert (path / "state_dict.pt").read_bytes() == b"w"
    # A second download reuses the complete cached copy.
    assert registry.download("models:/embedded-model/1")[1] == path
    assert info == registry.resolve("models:/embedded-model/1")
