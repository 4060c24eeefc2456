"""charts/concord with the real helm binary: lint and render every ci/ scenario, validate the
manifests against the Kubernetes OpenAPI schemas (kubernetes-validate --strict), InferenceServices
against a KServe schema, and check that every value is documented and used."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from concord.config import SERVICE_NAMES
from tests.deploy.conftest import CHART, KUBE_VERSIONS, SCENARIOS, by_kind

ISVC_SCHEMA = json.loads(
    (Path(__file__).parent / "schemas" / "inferenceservice.schema.json").read_text()
)
SERVICE_MONITOR_SCHEMA = json.loads(
    (Path(__file__).parent / "schemas" / "servicemonitor.schema.json").read_text()
)
# PodSpec fields KServe's PredictorSpec inlines; validated as a core/v1 Pod.
POD_FIELDS = [
    "containers",
    "initContainers",
    "serviceAccountName",
    "automountServiceAccountToken",
    "imagePullSecrets",
    "securityContext",
    "terminationGracePeriodSeconds",
    "priorityClassName",
    "nodeSelector",
    "tolerations",
    "affinity",
    "topologySpreadConstraints",
    "volumes",
]


def _validate_core(obj: dict[str, Any], version: str) -> None:
    if obj["kind"] == "ServiceMonitor":  # a CRD: a structural subset of the operator's schema
        jsonschema.validate(obj, SERVICE_MONITOR_SCHEMA)
        return
    kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_strict(helm: Path, scenario: str) -> None:
    cmd = [str(helm), "lint", "--strict", str(CHART), *SCENARIOS[scenario]]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_manifests_validate(render: Any, scenario: str, version: str) -> None:
    objects = render(scenario)
    assert objects
    for obj in objects:
        if obj["kind"] == "InferenceService":  # a CRD: validated by test_kserve_renders_...
            continue
        _validate_core(obj, version)


def test_validator_rejects_unknown_fields(render: Any) -> None:
    """Negative control: strict validation does catch a misspelt field."""
    deployment = next(iter(by_kind(render("default"), "Deployment").values()))
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate_core(broken, KUBE_VERSIONS[-1])


def test_default_values_render_every_service(render: Any) -> None:
    objects = render("default")
    deployments, services = by_kind(objects, "Deployment"), by_kind(objects, "Service")
    config = next(iter(by_kind(objects, "ConfigMap").values()))["data"]
    assert config["CONCORD_SERVING__HOST"] == "0.0.0.0"
    assert config["CONCORD_BUS"] == "kafka" and config["CONCORD_VECTORS"] == "qdrant"
    assert config["CONCORD_MLFLOW_TRACKING_URI"] == "http://concord-mlflow:5000"
    for port, name in enumerate(SERVICE_NAMES, start=50051):
        deployment = deployments[f"concord-{name}"]
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["command"] == ["concord", "serve", name]
        for probe in ("startupProbe", "livenessProbe"):  # native grpc.health.v1: alive
            assert container[probe]["grpc"] == {"port": port}
        # ready: the proto service, NOT_SERVING without a model or an unreachable peer
        service = f"concord.v1.{name.capitalize()}Service"
        assert container["readinessProbe"]["grpc"] == {"port": port, "service": service}
        assert {
            "name": "CONCORD_SERVING__PORTS",
            "value": json.dumps({name: port}, separators=(",", ":")),
        } in container["env"]
        token = next(e for e in container["env"] if e["name"] == "CONCORD_SERVING__AUTH_TOKEN")
        assert token["valueFrom"]["secretKeyRef"] == {"name": "concord", "key": "auth-token"}
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert {p["port"] for p in services[f"concord-{name}"]["spec"]["ports"]} == {port, 9464}
    encoder_init = deployments["concord-encoder"]["spec"]["template"]["spec"]["initContainers"]
    assert encoder_init[0]["command"][:4] == [
        "python",
        "-m",
        "concord.serving.healthcheck",
        "--wait-for-model",
    ]
    kinds = {o["kind"] for o in objects}
    assert {"StatefulSet", "Job", "Secret", "ServiceAccount", "Pod"} <= kinds
    assert not {"HorizontalPodAutoscaler", "PodDisruptionBudget", "InferenceService"} & kinds
    mlflow = deployments["concord-mlflow"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert any(a.startswith("--allowed-hosts=") and "concord-mlflow:5000" in a for a in mlflow)
    test_pod = next(iter(by_kind(objects, "Pod").values()))
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "encoder=concord-encoder:50051" in test_pod["spec"]["containers"][0]["command"]


def test_gpu_production_values(render: Any) -> None:
    objects = render("gpu-production")
    deployments = by_kind(objects, "Deployment")
    assert not by_kind(objects, "StatefulSet"), "external Kafka/Qdrant: nothing bundled"
    assert set(deployments) == {f"concord-{n}" for n in SERVICE_NAMES}, "no bundled MLflow"
    for name in ("encoder", "scorer", "generator"):
        pod = deployments[f"concord-{name}"]["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert "replicas" not in deployments[f"concord-{name}"]["spec"], "the HPA owns replicas"
    assert "nvidia.com/gpu" not in str(deployments["concord-bias"]["spec"]["template"])
    hpas, pdbs = (
        by_kind(objects, "HorizontalPodAutoscaler"),
        by_kind(objects, "PodDisruptionBudget"),
    )
    assert set(hpas) == set(pdbs) == set(deployments)
    metrics = hpas["concord-encoder"]["spec"]["metrics"]
    assert [m["type"] for m in metrics] == ["Resource", "Pods", "Pods"]
    assert metrics[2]["pods"]["metric"]["name"] == "concord_batch_queue_depth"  # Concord's gauge
    behavior = hpas["concord-encoder"]["spec"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 600
    config = next(iter(by_kind(objects, "ConfigMap").values()))["data"]
    assert config["CONCORD_QDRANT__URL"] == "http://qdrant.vectors.svc:6333"
    assert config["CONCORD_MLFLOW_TRACKING_URI"] == "http://mlflow.ml.svc:5000"
    assert config["CONCORD_KAFKA__BOOTSTRAP_SERVERS"].startswith("kafka-0.kafka.data.svc:9092")
    assert config["CONCORD_BATCHING__MAX_BATCH_SIZE"] == "64"
    secrets = by_kind(objects, "Secret")
    assert set(secrets) == {"concord-qdrant"}, "the token comes from auth.existingSecret"
    env = deployments["concord-retrieval"]["spec"]["template"]["spec"]["containers"][0]["env"]
    token = next(e for e in env if e["name"] == "CONCORD_SERVING__AUTH_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "concord-auth", "key": "token"}
    assert by_kind(objects, "Service")["concord-retrieval"]["spec"]["type"] == "LoadBalancer"


def test_kserve_renders_inference_services(render: Any) -> None:
    objects = render("kserve")
    isvcs = by_kind(objects, "InferenceService")
    assert set(isvcs) == {"concord-encoder"}, "only the encoder has a KServe predictor module"
    deployments = by_kind(objects, "Deployment")
    # every service keeps its gRPC Deployment; the encoder's is a gateway to the predictor
    assert {"concord-retrieval", "concord-encoder", "concord-scorer"} <= set(deployments)
    for name, isvc in isvcs.items():
        jsonschema.validate(isvc, ISVC_SCHEMA)
        predictor = isvc["spec"]["predictor"]
        service = name.removeprefix("concord-")
        container = predictor["containers"][0]
        assert container["command"] == ["python", "-m", f"services.{service}.kserve"]
        assert f"--model_name={service}" in container["args"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {k: v for k, v in predictor.items() if k in POD_FIELDS},
        }
        for version in KUBE_VERSIONS:
            _validate_core(pod, version)
    encoder = isvcs["concord-encoder"]["spec"]["predictor"]
    assert encoder["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert (encoder["minReplicas"], encoder["maxReplicas"], encoder["scaleMetric"]) == (1, 3, "cpu")


def test_inference_service_schema_rejects_a_broken_one(render: Any) -> None:
    isvc = json.loads(json.dumps(by_kind(render("kserve"), "InferenceService")["concord-encoder"]))
    isvc["spec"]["predictor"]["scaleMetric"] = "gpu"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(isvc, ISVC_SCHEMA)


def test_missing_external_endpoint_fails_render(helm: Path) -> None:
    cmd = [str(helm), "template", "c", str(CHART), "--set", "kafka.bundled.enabled=false"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode != 0 and "kafka.bootstrapServers is required" in result.stderr


def test_schema_rejects_wrong_values(helm: Path) -> None:
    for bad in ("services.encoder.port=abc", "services.encoder.bogus=1", "config.logLevel=LOUD"):
        result = subprocess.run(
            [str(helm), "template", "c", str(CHART), "--set", bad], capture_output=True, text=True
        )
        assert result.returncode != 0, bad


def test_new_service_slots_in_without_chart_changes(render: Any) -> None:
    objects = render("default", "--set", "services.ocr.enabled=true,services.ocr.port=50057")
    container = by_kind(objects, "Deployment")["concord-ocr"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["command"] == ["concord", "serve", "ocr"]
    assert container["readinessProbe"]["grpc"] == {
        "port": 50057,
        "service": "concord.v1.OcrService",
    }


# ---------------------------------------------------------------- values: documented and used

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-/]+):(?P<rest>.*)$")


def _values_leaves() -> list[tuple[tuple[str, ...], bool]]:
    """(path, documented) of every leaf key in values.yaml; documented: a `# --` comment sits
    right above the key or above one of its ancestors."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    keys: list[tuple[int, str, bool, str]] = []  # indent, key, documented here, rest
    comment = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            comment = comment or stripped.startswith("# --")
            continue
        match = _KEY.match(line)
        if match and not stripped.startswith("-"):
            keys.append((len(match["indent"]), match["key"], comment, match["rest"].strip()))
        comment = False
    leaves: list[tuple[tuple[str, ...], bool]] = []
    stack: list[tuple[int, str, bool]] = []
    for i, (indent, key, documented, rest) in enumerate(keys):
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (*[k for _, k, _ in stack], key)
        documented = documented or any(d for _, _, d in stack)
        has_children = not rest and i + 1 < len(keys) and keys[i + 1][0] > indent
        if has_children:
            stack.append((indent, key, documented))
        else:
            leaves.append((path, documented))
    return leaves


def test_every_value_is_documented() -> None:
    leaves = _values_leaves()
    assert len(leaves) > 60
    undocumented = [".".join(p) for p, documented in leaves if not documented]
    assert not undocumented, f"values without a `# --` comment: {undocumented}"
    # the line parser agrees with YAML about what the leaves are
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path, _ in leaves:
        node: Any = values
        for key in path:
            node = node[key]


def test_every_value_is_used_by_a_template() -> None:
    templates = "\n".join(p.read_text() for p in (CHART / "templates").rglob("*") if p.is_file())

    def used(path: tuple[str, ...]) -> bool:
        if re.search(rf"\.{re.escape(path[-1])}\b", templates):
            return True  # read by name
        whole = r"(?:toYaml|with|range|deepCopy|default dict)\s+[$\w.]*\."
        return any(re.search(rf"{whole}{re.escape(a)}\b", templates) for a in path[:-1])

    unused = [".".join(p) for p, _ in _values_leaves() if not used(p)]
    assert not unused, f"values no template reads: {unused}"
