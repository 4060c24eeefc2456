"""docker-compose.yml against the compose-spec JSON schema (check-jsonschema, the real validator)
plus what Concord needs of it; docker/Dockerfile and .dockerignore read as text; and the image's
health probe (`python -m concord.serving.healthcheck`) against a real running service."""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from concord.config import SERVICE_NAMES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # PyYAML resolves the `<<` merge keys


def test_compose_validates_against_compose_spec() -> None:
    cmd = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_validator_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yml"
    broken.write_text(COMPOSE.read_text().replace("restart: unless-stopped", "restart: 7", 1))
    cmd = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken)]
    assert subprocess.run(cmd, capture_output=True, text=True).returncode != 0


def test_compose_backends(compose: dict[str, Any]) -> None:
    services = compose["services"]
    kafka = services["kafka"]
    assert "apache/kafka:" in kafka["image"]
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    cluster_id = kafka["environment"]["CLUSTER_ID"]  # KRaft formatting needs a base64url UUID
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16 and len(cluster_id) == 22
    assert "qdrant/qdrant" in services["qdrant"]["image"]
    mlflow = services["mlflow"]
    allowed = next(a for a in mlflow["command"] if a.startswith("--allowed-hosts="))
    assert "mlflow:5000" in allowed.split("=", 1)[1].split(",")
    assert any(v.startswith("mlflow-data:") for v in mlflow["volumes"])
    for name in ("kafka", "qdrant", "mlflow"):
        assert services[name]["healthcheck"]["test"], name


def test_compose_runs_every_service_after_the_one_shot_training(compose: dict[str, Any]) -> None:
    services = compose["services"]
    train = services["train"]
    # registers the shipped demo models, each only where its alias is missing (first start)
    assert train["command"] == ["python", "-m", "pipelines.demo.models"]
    assert train["depends_on"]["mlflow"]["condition"] == "service_healthy"
    for port, name in enumerate(SERVICE_NAMES, start=50051):
        service = services[name]
        assert service["command"] == ["concord", "serve", name]
        assert f"{port}:{port}" in service["ports"]
        depends = service["depends_on"]
        assert depends["train"]["condition"] == "service_completed_successfully"
        assert all(
            depends[d]["condition"] == "service_healthy" for d in ("kafka", "qdrant", "mlflow")
        )
        env = service["environment"]
        assert env["CONCORD_SERVING__HOST"] == "0.0.0.0"
        assert env["CONCORD_BUS"] == "kafka" and env["CONCORD_VECTORS"] == "qdrant"
        assert env["CONCORD_SERVING__AUTH_TOKEN"] == "${CONCORD_AUTH_TOKEN:-}", (
            "no secret in the file"
        )


def _stages(dockerfile: str) -> list[list[str]]:
    lines = re.sub(r"\\\n", " ", dockerfile).splitlines()
    instructions = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    stages: list[list[str]] = []
    for ins in instructions:
        if ins.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def test_dockerfile_is_multi_stage_non_root_with_grpc_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    stages = _stages(text)
    assert len(stages) >= 2 and all(" AS " in s[0].upper() for s in stages)
    final = stages[-1]
    assert any(i.startswith("COPY --from=build") for i in final)
    users = [i.split()[1] for i in final if i.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    health = next(i for i in final if i.startswith("HEALTHCHECK"))
    assert "concord.serving.healthcheck" in health
    assert re.search(r"^ARG TORCH_INDEX_URL=", text, re.M), "the torch variant is a build arg"
    assert "CONCORD_SERVING__HOST=0.0.0.0" in text
    assert not re.search(r"(TOKEN|PASSWORD|SECRET|API_KEY)\s*=", text, re.I), "no secrets baked in"


def test_dockerfile_installs_dependencies_before_the_source() -> None:
    """A source change must not reinstall every dependency: torch, then the dependency list read
    from pyproject.toml (pinned by constraints.txt), then the source with --no-deps."""
    build = _stages(DOCKERFILE.read_text())[0]

    def first(predicate) -> int:  # type: ignore[no-untyped-def]
        return next(i for i, ins in enumerate(build) if predicate(ins))

    source = first(lambda i: re.match(r"COPY (concord|services|pipelines)\b", i))
    torch = first(lambda i: i.startswith("RUN") and "torch" in i and "TORCH_INDEX_URL" in i)
    deps = first(lambda i: i.startswith("RUN") and "tomllib" in i)
    final = first(lambda i: i.startswith("RUN") and "--no-deps ." in i)
    assert torch < deps < source < final
    assert all(
        not i.startswith("COPY") or "pyproject" in i or "constraints" in i for i in build[:deps]
    ), "only the dependency manifests before the dependency layer"
    assert "-c constraints.txt" in build[deps] and "pip check" in build[final]
    # the dependency list the layer installs is pyproject's, every entry of it
    script = re.search(r'python -c "(.+?)" > requirements.txt', build[deps])
    assert script is not None
    listed = subprocess.run(
        [sys.executable, "-c", script.group(1)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert listed == project["dependencies"] + project["optional-dependencies"]["runtimes"]
    assert any(r.startswith("torch") for r in listed) and any(
        r.startswith("kserve") for r in listed
    )


def test_cpu_image_variant_for_mlflow(compose: dict[str, Any]) -> None:
    services = compose["services"]
    mlflow, encoder = services["mlflow"], services["encoder"]
    assert mlflow["image"] != encoder["image"] and "cpu" in mlflow["image"]
    assert mlflow["build"]["dockerfile"] == encoder["build"]["dockerfile"] == "docker/Dockerfile"
    assert "download.pytorch.org/whl/cpu" in mlflow["build"]["args"]["TORCH_INDEX_URL"]
    assert encoder["build"]["args"]["TORCH_INDEX_URL"] == "${TORCH_INDEX_URL:-}"


def test_dockerignore_keeps_the_build_context_small_and_complete() -> None:
    ignored = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".cache", "tests"} <= ignored
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.M)
    for sources in copied:
        for source in sources.split():
            assert (ROOT / source).exists(), source
            assert source not in ignored, f"{source} is copied but .dockerignore drops it"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_healthcheck_probe_against_a_running_service(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "CONCORD_HOME": str(tmp_path),
        "CONCORD_SERVING__PORTS": f'{{"bias": {port}}}',
        "CONCORD_SERVING__METRICS_PORT": "0",
    }
    probe = [sys.executable, "-m", "concord.serving.healthcheck"]
    down = subprocess.run([*probe, "bias"], env=env, capture_output=True, text=True)
    assert down.returncode == 1 and "bias=DOWN" in down.stdout
    server = subprocess.Popen([sys.executable, "-m", "services.bias"], env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 40
        while True:
            up = subprocess.run([*probe, "bias"], env=env, capture_output=True, text=True)
            if up.returncode == 0 or time.monotonic() > deadline or server.poll() is not None:
                break
            time.sleep(0.5)
        assert up.returncode == 0 and "bias=SERVING" in up.stdout, up.stdout + up.stderr
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_gpu_overlay_puts_only_the_model_services_on_gpus() -> None:
    overlay_file = ROOT / "docker-compose.gpu.yml"
    cmd = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec"]
    result = subprocess.run([*cmd, str(overlay_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    overlay = yaml.safe_load(overlay_file.read_text())["services"]
    base = yaml.safe_load(COMPOSE.read_text())["services"]
    assert set(overlay) == {"train", "encoder", "scorer", "generator"} <= set(base)
    for name, spec in overlay.items():
        assert spec["environment"]["CONCORD_DEVICE__DEFAULT"] == "cuda", name
        (device,) = spec["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"], name
