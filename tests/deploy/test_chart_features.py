"""What the chart does for a deployment to work as users run it, asserted on `helm template`
output: peer addresses, devices, KServe, a stable token, rollouts, load balancing, network
policies, monitoring, values merging, and a `helm test` pod run against a real service."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from concord.config import SERVICE_NAMES
from concord.serving import metrics
from tests.deploy.conftest import CHART, HELM, ROOT, by_kind

PORTS = {name: port for port, name in enumerate(SERVICE_NAMES, start=50051)}


def _template(
    *args: str, release: str = "concord", namespace: str = "ml"
) -> subprocess.CompletedProcess:
    cmd = [str(HELM), "template", release, str(CHART), "--namespace", namespace, *args]
    return subprocess.run(cmd, capture_output=True, text=True)


def _objects(*args: str, **kw: str) -> list[dict[str, Any]]:
    result = _template(*args, **kw)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _config(objects: list[dict[str, Any]]) -> dict[str, str]:
    return by_kind(objects, "ConfigMap")["concord"]["data"]


def _container(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return by_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]["containers"][0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _fails(*args: str) -> str:
    result = _template(*args)
    assert result.returncode != 0, f"rendered, but should have failed: {args}"
    return result.stderr


# ---------------------------------------------------------------- 1. peer addresses


def test_every_enabled_service_is_dialled_at_its_service(render: Any) -> None:
    addresses = json.loads(_config(render("default"))["CONCORD_SERVING__ADDRESSES"])
    assert addresses == {name: f"concord-{name}:{port}" for name, port in PORTS.items()}
    services = by_kind(render("default"), "Service")
    for address in addresses.values():
        host, port = address.split(":")
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}
    fewer = json.loads(
        _config(_objects("--set", "services.linker.enabled=false"))["CONCORD_SERVING__ADDRESSES"]
    )
    assert "linker" not in fewer and fewer["encoder"] == "concord-encoder:50051"


def test_a_kserve_encoder_keeps_a_grpc_gateway_that_delegates_to_the_predictor(
    render: Any,
) -> None:
    objects = render("kserve")
    addresses = json.loads(_config(objects)["CONCORD_SERVING__ADDRESSES"])
    assert addresses["encoder"] == "concord-encoder:50051"
    gateway = _container(objects, "concord-encoder")
    env = _env(gateway)
    assert gateway["command"] == ["concord", "serve", "encoder"]
    assert env["CONCORD_ENCODER_BACKEND"] == "triton"
    assert env["CONCORD_TRITON_MODEL"] == "encoder"
    isvc = by_kind(objects, "InferenceService")["concord-encoder"]
    container = isvc["spec"]["predictor"]["containers"][0]
    grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "h2c")
    assert env["CONCORD_TRITON_URL"] == f"concord-encoder-predictor:{grpc_port}"
    assert f"--grpc_port={grpc_port}" in container["args"]
    # the gateway runs no model: no GPU, CPU image, not pinned to GPU nodes
    assert "nvidia.com/gpu" not in gateway["resources"].get("limits", {})
    assert env["CONCORD_DEVICE__DEFAULT"] == "cpu" and gateway["image"].endswith("-cpu")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert _env(container)["CONCORD_DEVICE__DEFAULT"] == "cuda"
    # the gateway's Service must not select the predictor pods
    labels = isvc["spec"]["predictor"]["labels"]
    selector = by_kind(objects, "Service")["concord-encoder"]["spec"]["selector"]
    assert not selector.items() <= labels.items()
    err = _fails(
        "-f", str(CHART / "ci" / "kserve-values.yaml"), "--set", "kserve.deploymentMode=Serverless"
    )
    assert "use RawDeployment" in err


# ---------------------------------------------------------------- 2. devices


def test_gpu_pods_ask_for_cuda_cpu_pods_for_cpu(render: Any) -> None:
    objects = render("gpu-production")
    for name in SERVICE_NAMES:
        container = _container(objects, f"concord-{name}")
        gpu = "nvidia.com/gpu" in container["resources"].get("limits", {})
        assert _env(container)["CONCORD_DEVICE__DEFAULT"] == ("cuda" if gpu else "cpu"), name
        assert container["image"] == (
            "registry.example.com/ml/concord:0.1.0" + ("" if gpu else "-cpu")
        ), name
    encoder = _env(_container(objects, "concord-encoder"))
    assert encoder["CONCORD_DEVICE__TORCH_THREADS"] == "4"  # limit 3500m, rounded up
    assert "CONCORD_DEVICE__TORCH_THREADS" not in _env(_container(objects, "concord-bias"))


@pytest.mark.parametrize(
    ("cpu", "threads"), [("250m", "1"), ("1500m", "2"), ("3", "3"), ("0.5", "1")]
)
def test_torch_threads_follow_the_cpu_limit(cpu: str, threads: str) -> None:
    objects = _objects("--set-string", f"serviceDefaults.resources.limits.cpu={cpu}")
    for name in SERVICE_NAMES:
        assert (
            _env(_container(objects, f"concord-{name}"))["CONCORD_DEVICE__TORCH_THREADS"] == threads
        )


# ---------------------------------------------------------------- 3. KServe


def test_kserve_only_for_services_with_a_predictor_module(render: Any) -> None:
    modules = sorted(p.parent.name for p in (ROOT / "services").glob("*/kserve.py"))
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    listed = helpers.split('define "concord.kserveModules" -}}')[1].split("{{-")[0].split()
    assert listed == modules, "the chart's list of KServe predictors is the source tree's"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    flagged = sorted(n for n, s in values["services"].items() if s.get("kservePredictor"))
    assert flagged == modules
    err = _fails(
        "-f",
        str(CHART / "ci" / "kserve-values.yaml"),
        "--set",
        "services.scorer.kservePredictor=true",
    )
    assert "services.scorer.kservePredictor" in err and "no services.scorer.kserve module" in err


def test_kserve_probes_and_metrics(render: Any) -> None:
    isvc = by_kind(render("kserve"), "InferenceService")["concord-encoder"]
    container = isvc["spec"]["predictor"]["containers"][0]
    http = int(next(a for a in container["args"] if a.startswith("--http_port=")).split("=")[1])
    assert container["startupProbe"]["httpGet"] == {"path": "/v2/health/live", "port": http}
    annotations = isvc["metadata"]["annotations"]
    # KServe's ModelServer serves /metrics on its REST port (kserve.protocol.rest.server)
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == (
        str(http),
        "/metrics",
    )
    from importlib.util import find_spec

    rest = Path(find_spec("kserve").origin).parent / "protocol" / "rest" / "server.py"  # type: ignore[arg-type]
    assert '"/metrics", metrics_handler' in rest.read_text()


# ---------------------------------------------------------------- 4. a stable token


def _token(objects: list[dict[str, Any]]) -> str:
    (secret,) = [s for s in by_kind(objects, "Secret").values() if "auth-token" in s["data"]]
    return secret["data"]["auth-token"]


def test_the_token_is_the_same_on_every_render() -> None:
    first, second = _template(), _template()
    assert first.returncode == 0 and first.stdout == second.stdout
    token = _token(_objects())
    assert len(token) > 40
    assert _token(_objects("--set", "auth.seed=s3cret")) != token
    assert _token(_objects(release="other")) != token
    assert _token(_objects(namespace="prod")) != token


def test_a_changed_token_rolls_every_pod() -> None:
    def checksums(objects: list[dict[str, Any]]) -> dict[str, str]:
        return {
            name: d["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]
            for name, d in by_kind(objects, "Deployment").items()
            if name != "concord-mlflow"
        }

    before, after = checksums(_objects()), checksums(_objects("--set", "auth.seed=rotated"))
    assert set(before) == {f"concord-{n}" for n in SERVICE_NAMES}
    assert all(before[n] != after[n] for n in before)


# ---------------------------------------------------------------- 5. Qdrant's key from a Secret


def test_qdrant_api_key_from_an_existing_secret() -> None:
    objects = _objects("--set", "qdrant.existingSecret=vectors,qdrant.existingSecretKey=key")
    assert "concord-qdrant" not in by_kind(objects, "Secret")
    ref = {"secretKeyRef": {"name": "vectors", "key": "key"}}
    for name in SERVICE_NAMES:
        assert _env(_container(objects, f"concord-{name}"))["CONCORD_QDRANT__API_KEY"] == ref
    qdrant = by_kind(objects, "StatefulSet")["concord-qdrant"]["spec"]["template"]["spec"]
    assert _env(qdrant["containers"][0])["QDRANT__SERVICE__API_KEY"] == ref
    assert "CONCORD_QDRANT__API_KEY" not in _env(_container(_objects(), "concord-encoder"))


# ---------------------------------------------------------------- 6, 7. rollouts and draining


def _strategy(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return by_kind(objects, "Deployment")[name]["spec"]["strategy"]["rollingUpdate"]


def test_rollout_strategy_by_gpu_and_from_values(render: Any) -> None:
    assert _strategy(render("default"), "concord-encoder") == {"maxSurge": 1, "maxUnavailable": 0}
    gpu = render("gpu-production")
    assert _strategy(gpu, "concord-encoder") == {"maxSurge": 0, "maxUnavailable": 1}
    assert _strategy(gpu, "concord-bias") == {"maxSurge": 1, "maxUnavailable": 0}
    custom = _objects("--set", "services.encoder.rollout.maxSurge=25%")
    assert _strategy(custom, "concord-encoder") == {"maxSurge": "25%", "maxUnavailable": 0}
    assert "cannot both be 0" in _fails(
        "--set", "serviceDefaults.rollout.maxSurge=0,serviceDefaults.rollout.maxUnavailable=0"
    )


def test_pre_stop_sleep_below_the_grace_period(render: Any) -> None:
    for objects, seconds in ((render("default"), "5"), (render("gpu-production"), "10")):
        hook = _container(objects, "concord-retrieval")["lifecycle"]["preStop"]["exec"]["command"]
        assert hook == ["sleep", seconds]
    isvc = by_kind(render("kserve"), "InferenceService")["concord-encoder"]
    assert "preStop" in isvc["spec"]["predictor"]["containers"][0]["lifecycle"]
    assert "lifecycle" not in _container(
        _objects("--set", "serviceDefaults.preStopSleepSeconds=0"), "concord-encoder"
    )
    assert "must be below terminationGracePeriodSeconds" in _fails(
        "--set", "services.bias.preStopSleepSeconds=30"
    )


# ---------------------------------------------------------------- 8. gRPC load balancing


def test_connection_age_and_headless_services(render: Any) -> None:
    assert _config(render("default"))["CONCORD_SERVING__MAX_CONNECTION_AGE_SECONDS"] == "300"
    never = _config(_objects("--set", "config.maxConnectionAgeSeconds=0"))
    assert "CONCORD_SERVING__MAX_CONNECTION_AGE_SECONDS" not in never
    assert not [n for n in by_kind(render("default"), "Service") if n.endswith("-headless")]
    services = by_kind(render("gpu-production"), "Service")
    headless = services["concord-retrieval-headless"]["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["selector"] == services["concord-retrieval"]["spec"]["selector"]
    assert [p["port"] for p in headless["ports"]] == [50052]


# ---------------------------------------------------------------- 9, 10, 11. values


def test_global_values_and_use_as_a_subchart(tmp_path: Path) -> None:
    assert _template("--set", "global.imageRegistry=example.com").returncode == 0
    parent = tmp_path / "platform"
    (parent / "charts").mkdir(parents=True)
    shutil.copytree(CHART, parent / "charts" / "concord")
    (parent / "Chart.yaml").write_text(
        "apiVersion: v2\nname: platform\nversion: 1.0.0\n"
        "dependencies:\n  - {name: concord, version: 0.1.0}\n"
    )
    (parent / "values.yaml").write_text("global: {storageClass: fast}\nconcord: {}\n")
    cmd = [str(HELM), "template", "p", str(parent), "--namespace", "ml"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "name: p-concord-encoder" in result.stdout


def test_a_service_override_deep_merges_over_the_defaults() -> None:
    objects = _objects("--set", "services.encoder.resources.limits.memory=8Gi")
    resources = _container(objects, "concord-encoder")["resources"]
    assert resources == {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "8Gi"}}
    assert _container(objects, "concord-scorer")["resources"]["limits"] == {"memory": "4Gi"}
    objects = _objects("--set", "services.bias.autoscaling.enabled=true")
    hpa = by_kind(objects, "HorizontalPodAutoscaler")["concord-bias"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 4), "the other keys from defaults"
    objects = _objects(
        "-f",
        str(CHART / "ci" / "gpu-production-values.yaml"),
        "--set",
        "services.encoder.autoscaling.enabled=false",
    )
    assert "concord-encoder" not in by_kind(objects, "HorizontalPodAutoscaler"), "false overrides"


def test_startup_probe_period_from_values(render: Any) -> None:
    assert _container(render("default"), "concord-encoder")["startupProbe"]["periodSeconds"] == 5
    objects = _objects(
        "-f",
        str(CHART / "ci" / "kserve-values.yaml"),
        "--set",
        "serviceDefaults.probes.startupPeriodSeconds=7,serviceDefaults.probes.periodSeconds=11",
    )
    probe = _container(objects, "concord-retrieval")["startupProbe"]
    assert probe["periodSeconds"] == 7
    assert _container(objects, "concord-retrieval")["readinessProbe"]["periodSeconds"] == 11
    isvc = by_kind(objects, "InferenceService")["concord-encoder"]
    assert isvc["spec"]["predictor"]["containers"][0]["startupProbe"]["periodSeconds"] == 7


# ---------------------------------------------------------------- 12. NetworkPolicy


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for rule in selector.get("matchExpressions", []):
        present = rule["key"] in labels
        value_in = present and labels[rule["key"]] in rule.get("values", [])
        ok = {"In": value_in, "NotIn": not value_in, "Exists": present, "DoesNotExist": not present}
        if not ok[rule["operator"]]:
            return False
    return True


def _pod_labels(objects: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    pods = {}
    for kind in ("Deployment", "StatefulSet"):
        for name, o in by_kind(objects, kind).items():
            pods[name] = o["spec"]["template"]["metadata"]["labels"]
    for name, isvc in by_kind(objects, "InferenceService").items():
        pods[f"{name}-predictor"] = isvc["spec"]["predictor"]["labels"]
    return pods


def test_network_policies(render: Any) -> None:
    assert not by_kind(render("default"), "NetworkPolicy"), "off by default"
    objects = render("kserve")
    policies = by_kind(objects, "NetworkPolicy")
    pods = _pod_labels(objects)
    guarded = {
        name
        for name, labels in pods.items()
        for p in policies.values()
        if _selects(p["spec"]["podSelector"], labels)
    }
    assert guarded == set(pods), "every pod of the release is behind a policy"
    backends = policies["concord-backends"]["spec"]
    for name in ("concord-kafka", "concord-qdrant", "concord-mlflow"):
        assert _selects(backends["podSelector"], pods[name])
    (rule,) = backends["ingress"]
    (peer,) = rule["from"]
    assert "namespaceSelector" not in peer and _selects(
        peer["podSelector"], pods["concord-encoder"]
    )
    assert not _selects(peer["podSelector"], {"app.kubernetes.io/name": "other"})
    services = policies["concord-services"]["spec"]
    assert _selects(services["podSelector"], pods["concord-retrieval"])
    ports = {p["port"] for p in services["ingress"][0]["ports"]}
    assert {50051, 50052, 9464} <= ports
    kserve = policies["concord-kserve"]["spec"]
    assert _selects(kserve["podSelector"], pods["concord-encoder-predictor"])
    assert {p["port"] for p in kserve["ingress"][0]["ports"]} == {8080, 8081}
    production = by_kind(render("gpu-production"), "NetworkPolicy")
    assert set(production) == {"concord-services"}, "no bundled backends there"
    peers = production["concord-services"]["spec"]["ingress"][0]["from"]
    assert peers[1]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }


# ---------------------------------------------------------------- 13. Qdrant as non-root


def test_bundled_qdrant_runs_as_non_root(render: Any) -> None:
    pod = by_kind(render("default"), "StatefulSet")["concord-qdrant"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000 and pod["securityContext"]["fsGroup"]
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/qdrant/storage", "/qdrant/snapshots", "/qdrant/init"} <= mounts
    assert _env(container)["QDRANT_INIT_FILE_PATH"].startswith("/qdrant/init/")


# ---------------------------------------------------------------- 14, 15. scaling and monitoring


def test_queue_depth_example_names_the_metric_concord_exports() -> None:
    text = (CHART / "ci" / "gpu-production-values.yaml").read_text()
    values = (CHART / "values.yaml").read_text()
    name = metrics.QUEUE_DEPTH._name  # the Gauge's exported name
    assert f"metric: {{name: {name}}}" in text and name in values


def test_service_monitor_toggle(render: Any) -> None:
    assert not by_kind(render("default"), "ServiceMonitor")
    objects = render("gpu-production")
    monitor = by_kind(objects, "ServiceMonitor")["concord"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    selected = [
        n
        for n, s in by_kind(objects, "Service").items()
        if _selects(monitor["spec"]["selector"], s["metadata"]["labels"])
        and any(p["name"] == "metrics" for p in s["spec"]["ports"])
    ]
    assert sorted(selected) == sorted(f"concord-{n}" for n in SERVICE_NAMES)


# ---------------------------------------------------------------- 16. helm test, for real


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_bias(tmp: Path, token: str | None) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    env = {
        **os.environ,
        "CONCORD_HOME": str(tmp),
        "CONCORD_SERVING__PORTS": json.dumps({"bias": port}),
        "CONCORD_SERVING__METRICS_PORT": "0",
    }
    env.pop("CONCORD_SERVING__AUTH_TOKEN", None)
    if token:
        env["CONCORD_SERVING__AUTH_TOKEN"] = token
    server = subprocess.Popen([sys.executable, "-m", "services.bias"], env=env, cwd=ROOT)
    probe = [sys.executable, "-m", "concord.serving.healthcheck", "bias"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        if subprocess.run(probe, env=env, capture_output=True).returncode == 0:
            return server, port
        time.sleep(0.5)
    server.kill()
    pytest.fail("bias did not start")


def test_helm_test_pod_makes_an_authenticated_call(render: Any, tmp_path: Path) -> None:
    pod = next(iter(by_kind(render("default"), "Pod").values()))
    container = pod["spec"]["containers"][0]
    assert container["image"] == "concord:0.1.0-cpu"
    assert container["env"][0]["valueFrom"]["secretKeyRef"] == {
        "name": "concord",
        "key": "auth-token",
    }
    script_args = container["command"]
    assert script_args[:2] == ["python", "-c"]
    targets = script_args[3:]
    assert sorted(t.split("=")[0] for t in targets) == sorted(SERVICE_NAMES)

    def run(port: int, token: str | None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "CONCORD_SERVING__AUTH_TOKEN"}
        if token is not None:
            env["CONCORD_SERVING__AUTH_TOKEN"] = token
        cmd = [sys.executable, "-c", script_args[2], f"bias=127.0.0.1:{port}"]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)

    secured, port = _serve_bias(tmp_path / "secured", "right")
    try:
        good = run(port, "right")
        assert good.returncode == 0, good.stdout + good.stderr
        assert "OK" in good.stdout and "without token: UNAUTHENTICATED" in good.stdout
        wrong = run(port, "wrong")
        assert wrong.returncode == 1 and "UNAUTHENTICATED" in wrong.stdout
        assert run(port, None).returncode != 0, "no token in the pod"
    finally:
        secured.terminate()
        secured.wait(20)
    open_server, port = _serve_bias(tmp_path / "open", None)
    try:
        unguarded = run(port, "right")
        assert unguarded.returncode == 1 and "NOT REFUSED" in unguarded.stdout
    finally:
        open_server.terminate()
        open_server.wait(20)
    down = run(_free_port(), "right")
    assert down.returncode == 1 and "UNAVAILABLE" in down.stdout


# ---------------------------------------------------------------- TLS (issue 18)


def test_tls_mounts_the_secret_points_settings_at_it_and_probes_the_health_port() -> None:
    from concord.config import Settings

    objects = _objects(
        "--set", "tls.enabled=true", "--set", "tls.secretName=concord-tls",
        "--set", "tls.clientAuth=true",
    )
    config = _config(objects)
    tls = {k: v for k, v in config.items() if k.startswith("CONCORD_SERVING__TLS__")}
    assert tls["CONCORD_SERVING__TLS__CERT_FILE"] == "/etc/concord/tls/tls.crt"
    assert tls["CONCORD_SERVING__TLS__CLIENT_AUTH"] == "true"
    # What the pods read is valid Settings (pydantic parses the env the ConfigMap sets).
    parsed = Settings(**{"serving": {"tls": {k.split("__")[-1].lower(): v for k, v in tls.items()}}})
    assert parsed.serving.tls is not None and parsed.serving.tls.client_auth
    for name, port in PORTS.items():
        deployment = by_kind(objects, "Deployment")[f"concord-{name}"]
        pod = deployment["spec"]["template"]["spec"]
        assert {"name": "tls", "secret": {"secretName": "concord-tls"}} in pod["volumes"]
        container = pod["containers"][0]
        assert any(m["mountPath"] == "/etc/concord/tls" for m in container["volumeMounts"])
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == port + 1000, (name, probe)
    test_pod = by_kind(objects, "Pod")["concord-test-health"]["spec"]
    assert any(v["name"] == "tls" for v in test_pod["volumes"])
    plain = _objects()
    assert not any(k.startswith("CONCORD_SERVING__TLS__") for k in _config(plain))
    encoder = _container(plain, "concord-encoder")
    assert encoder["readinessProbe"]["grpc"]["port"] == PORTS["encoder"]


def test_tls_without_a_secret_fails_the_render() -> None:
    assert "tls.enabled needs tls.secretName" in _fails("--set", "tls.enabled=true")


def test_metrics_behind_the_token_and_the_service_monitor_sends_it() -> None:
    objects = _objects(
        "--set", "metrics.requireToken=true", "--set", "metrics.serviceMonitor.enabled=true"
    )
    assert _config(objects)["CONCORD_SERVING__METRICS_AUTH"] == "true"
    endpoint = by_kind(objects, "ServiceMonitor")["concord"]["spec"]["endpoints"][0]
    secret = by_kind(objects, "Secret")
    assert endpoint["authorization"]["type"] == "Bearer"
    credentials = endpoint["authorization"]["credentials"]
    assert credentials["name"] in secret and credentials["key"] in secret[credentials["name"]]["data"]
    assert _config(_objects())["CONCORD_SERVING__METRICS_AUTH"] == "false"


def test_model_reload_interval_reaches_every_pod(render: Any) -> None:
    assert _config(render("default"))["CONCORD_SERVING__RELOAD_INTERVAL_SECONDS"] == "30"
    off = _config(_objects("--set", "config.reloadIntervalSeconds=0"))
    assert off["CONCORD_SERVING__RELOAD_INTERVAL_SECONDS"] == "0"
    assert "reloadIntervalSeconds" in _fails("--set", "config.reloadIntervalSeconds=-1")
