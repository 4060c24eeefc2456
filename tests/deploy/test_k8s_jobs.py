"""Training as Kubernetes Jobs (concord.cli.k8s, `concord train encoder`): the built Jobs validate
against the batch/v1 schema after the client's own serialisation; a server dry run when KUBECONFIG
points at a cluster; the local path runs the pipeline module in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from concord.cli import app, k8s
from tests.deploy.conftest import KUBE_VERSIONS

ROOT = Path(__file__).resolve().parents[2]
ARGS = ("--preset", "tiny", "--register", "--alias", "production")


def _validate(manifests: list[dict]) -> None:
    for manifest in manifests:
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(manifest, version, strict=True)


def test_single_pod_job() -> None:
    spec = k8s.TrainJobSpec("pipelines.train_encoder", ARGS, name="train-a", namespace="ml")
    (job,) = k8s.to_manifests(k8s.build(spec))
    _validate([job])
    assert (job["apiVersion"], job["kind"], job["metadata"]["namespace"]) == (
        "batch/v1",
        "Job",
        "ml",
    )
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "pipelines.train_encoder", *ARGS]
    assert container["envFrom"] == [{"configMapRef": {"name": "concord"}}]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_multi_gpu_job_runs_torchrun() -> None:
    spec = k8s.TrainJobSpec("pipelines.train_encoder", ARGS, name="train-b", gpus=4)
    (job,) = k8s.to_manifests(k8s.build(spec))
    _validate([job])
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["torchrun", "--standalone", "--nproc-per-node=4"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"


def test_multi_node_indexed_job_with_headless_service() -> None:
    tolerations = ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
    spec = k8s.TrainJobSpec(
        "pipelines.train_encoder", ARGS, name="train-c", gpus=8, nodes=2, tolerations=tolerations
    )
    service, job = k8s.to_manifests(k8s.build(spec))
    _validate([service, job])
    assert service["spec"]["clusterIP"] == "None" and service["metadata"]["name"] == "train-c"
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == "train-c"
    assert (
        service["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    )
    command = pod["containers"][0]["command"]
    assert "--node-rank=$(JOB_COMPLETION_INDEX)" in command
    assert "--master-addr=train-c-0.train-c" in command
    assert any(e["name"] == "JOB_COMPLETION_INDEX" for e in pod["containers"][0]["env"])
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_generated_name_is_a_valid_job_name() -> None:
    name = k8s.TrainJobSpec("pipelines.train_encoder").job_name()
    assert name.startswith("concord-train-encoder-") and len(name) <= 63


def test_parse_run_id() -> None:
    run = "0123456789abcdef0123456789abcdef"
    assert k8s.parse_run_id(f"saved /tmp/m  run {run}  version 3") == run
    assert k8s.parse_run_id(f"View run x at: http://mlflow:5000/#/experiments/1/runs/{run}") == run
    assert k8s.parse_run_id("epoch 1 loss 0.3") is None


def test_cli_client_dry_run_prints_valid_manifests() -> None:
    result = CliRunner().invoke(
        app,
        [
            "train",
            "encoder",
            "--on",
            "kubernetes",
            "--dry-run",
            "client",
            "--gpus",
            "1",
            "--",
            *ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    manifests = [m for m in yaml.safe_load_all(result.output) if m]
    _validate(manifests)
    (job,) = manifests
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][-len(ARGS) :] == list(ARGS)


def test_cli_local_runs_the_module_in_a_subprocess() -> None:
    concord = Path(sys.executable).parent / "concord"
    result = subprocess.run(
        [str(concord), "train", "encoder", "--on", "local", "--", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "--preset" in result.stdout  # pipelines.train_encoder's own help


@pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"), reason="KUBECONFIG not set: no cluster for a server dry run"
)
def test_server_dry_run_against_a_cluster() -> None:
    k8s.load_config()
    spec = k8s.TrainJobSpec("pipelines.train_encoder", ARGS, name="concord-dry-run", gpus=0)
    answered = k8s.submit(k8s.build(spec), dry_run=True)
    assert answered[-1]["kind"] == "Job" and answered[-1]["metadata"]["name"] == "concord-dry-run"
