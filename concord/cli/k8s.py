"""Training as Kubernetes Jobs: build the batch/v1 Job that runs a pipeline module in the Concord
image (an Indexed Job of torchrun workers plus a headless Service across nodes), submit it with the
`kubernetes` client, follow its status and logs, and report the MLflow run it logged."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast

from kubernetes import client as k8s

from concord import __version__

if TYPE_CHECKING:
    from urllib3 import HTTPResponse

DEFAULT_IMAGE = f"ghcr.io/concord-ai/concord:{__version__}"
TORCHRUN_PORT = 29500
HOME = "/var/lib/concord"  # CONCORD_HOME in the image: a scratch volume in the Job
_RUN_ID = re.compile(r"(?:runs/|\brun[ _]?(?:id)?[:= ]+)([0-9a-f]{32})\b")


@dataclass(frozen=True)
class TrainJobSpec:
    """What a training Job runs and where."""

    module: str  # python module the container runs, e.g. "pipelines.train_encoder"
    args: tuple[str, ...] = ()  # passed to the module unchanged
    name: str = ""  # Job name; "" -> concord-train-<module tail>-<UTC timestamp>
    namespace: str = "default"
    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    gpus: int = 0  # nvidia.com/gpu per pod; > 1 runs torchrun with one process per GPU
    nodes: int = 1  # pods; > 1 is an Indexed Job with torchrun's static rendezvous on index 0
    cpu: str = "2"  # request
    memory: str = "8Gi"  # request and limit
    config_map: str | None = "concord"  # the chart's ConfigMap of CONCORD_* settings (envFrom)
    env: Mapping[str, str] = field(default_factory=dict)  # extra env (wins over the ConfigMap)
    service_account: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, str], ...] = ()  # e.g. ({"key": "nvidia.com/gpu", ...},)
    backoff_limit: int = 0  # retries of a failed pod (training is not idempotent by default)
    active_deadline_seconds: int | None = None  # Kubernetes stops the Job after this
    ttl_seconds_after_finished: int = 7 * 24 * 3600  # how long the finished Job is kept
    scratch_size: str = "20Gi"  # size limit of the scratch volume at CONCORD_HOME

    def job_name(self) -> str:
        if self.name:
            return self.name
        tail = self.module.rsplit(".", 1)[-1].removeprefix("train_").replace("_", "-")
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        return f"concord-train-{tail}-{stamp}"[:63].rstrip("-")


def command(spec: TrainJobSpec, name: str) -> list[str]:
    """The container command: python -m MODULE, or torchrun over GPUs and nodes."""
    if spec.nodes > 1:
        return [
            "torchrun",
            f"--nnodes={spec.nodes}",
            f"--nproc-per-node={max(spec.gpus, 1)}",
            "--node-rank=$(JOB_COMPLETION_INDEX)",
            f"--master-addr={name}-0.{name}",
            f"--master-port={TORCHRUN_PORT}",
            "-m",
            spec.module,
            *spec.args,
        ]
    if spec.gpus > 1:
        return [
            "torchrun",
            "--standalone",
            f"--nproc-per-node={spec.gpus}",
            "-m",
            spec.module,
            *spec.args,
        ]
    return ["python", "-m", spec.module, *spec.args]


def build_job(spec: TrainJobSpec, name: str | None = None) -> k8s.V1Job:
    """The batch/v1 Job for `spec` (Indexed with a pod subdomain when spec.nodes > 1)."""
    if spec.nodes < 1 or spec.gpus < 0:
        raise ValueError(f"nodes must be >= 1 and gpus >= 0, not {spec.nodes} and {spec.gpus}")
    name = name or spec.job_name()
    labels = {
        "app.kubernetes.io/name": "concord",
        "app.kubernetes.io/component": "train",
        "app.kubernetes.io/part-of": "concord",
        "concord.dev/train-job": name,
    }
    limits: dict[str, str] = {"memory": spec.memory}
    if spec.gpus:
        limits["nvidia.com/gpu"] = str(spec.gpus)
    env = [k8s.V1EnvVar(name=k, value=v) for k, v in spec.env.items()]
    env.append(k8s.V1EnvVar(name="CONCORD_HOME", value=HOME))
    if spec.nodes > 1:  # so that $(JOB_COMPLETION_INDEX) in the command expands
        index = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        env.append(
            k8s.V1EnvVar(
                name="JOB_COMPLETION_INDEX",
                value_from=k8s.V1EnvVarSource(
                    field_ref=k8s.V1ObjectFieldSelector(field_path=index)
                ),
            )
        )
    container = k8s.V1Container(
        name="train",
        image=spec.image,
        image_pull_policy=spec.image_pull_policy,
        command=command(spec, name),
        env=env,
        env_from=(
            [k8s.V1EnvFromSource(config_map_ref=k8s.V1ConfigMapEnvSource(name=spec.config_map))]
            if spec.config_map
            else None
        ),
        ports=[k8s.V1ContainerPort(name="torchrun", container_port=TORCHRUN_PORT)]
        if spec.nodes > 1
        else None,
        resources=k8s.V1ResourceRequirements(
            requests={"cpu": spec.cpu, "memory": spec.memory}, limits=limits
        ),
        security_context=k8s.V1SecurityContext(
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
        ),
        volume_mounts=[
            k8s.V1VolumeMount(name="home", mount_path=HOME),
            k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),
            k8s.V1VolumeMount(name="shm", mount_path="/dev/shm"),  # torch DataLoader workers, NCCL
        ],
    )
    pod = k8s.V1PodSpec(
        restart_policy="Never",
        containers=[container],
        service_account_name=spec.service_account,
        automount_service_account_token=False,
        image_pull_secrets=[k8s.V1LocalObjectReference(name=s) for s in spec.image_pull_secrets]
        or None,
        node_selector=dict(spec.node_selector) or None,
        tolerations=[k8s.V1Toleration(**dict(t)) for t in spec.tolerations] or None,
        subdomain=name if spec.nodes > 1 else None,
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=10001,
            run_as_group=10001,
            fs_group=10001,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        volumes=[
            k8s.V1Volume(
                name="home", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=spec.scratch_size)
            ),
            k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource()),
            k8s.V1Volume(name="shm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory")),
        ],
    )
    return k8s.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=k8s.V1ObjectMeta(name=name, namespace=spec.namespace, labels=labels),
        spec=k8s.V1JobSpec(
            backoff_limit=spec.backoff_limit,
            active_deadline_seconds=spec.active_deadline_seconds,
            ttl_seconds_after_finished=spec.ttl_seconds_after_finished,
            completions=spec.nodes,
            parallelism=spec.nodes,
            completion_mode="Indexed" if spec.nodes > 1 else "NonIndexed",
            template=k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=labels), spec=pod),
        ),
    )


def build(spec: TrainJobSpec) -> list[k8s.V1Job | k8s.V1Service]:
    """Everything to submit: the Job, preceded by its headless Service when it spans nodes."""
    name = spec.job_name()
    job = build_job(spec, name)
    if spec.nodes == 1:
        return [job]
    assert job.metadata is not None  # build_job always sets it
    service = k8s.V1Service(
        api_version="v1",
        kind="Service",
        metadata=k8s.V1ObjectMeta(name=name, namespace=spec.namespace, labels=job.metadata.labels),
        spec=k8s.V1ServiceSpec(
            cluster_ip="None",
            publish_not_ready_addresses=True,  # workers find rank 0 before it is Ready
            selector={"concord.dev/train-job": name},
            ports=[
                k8s.V1ServicePort(name="torchrun", port=TORCHRUN_PORT, target_port=TORCHRUN_PORT)
            ],
        ),
    )
    return [service, job]


def to_manifests(objects: Sequence[object]) -> list[dict[str, Any]]:
    """Client-side serialisation: the JSON the API server would receive."""
    api = k8s.ApiClient()
    return [api.sanitize_for_serialization(o) for o in objects]


def load_config() -> None:
    """Kubeconfig (KUBECONFIG or ~/.kube/config), else the in-cluster service account."""
    from kubernetes import config

    try:
        config.load_kube_config()
    except config.ConfigException:
        config.load_incluster_config()


def submit(
    objects: Sequence[k8s.V1Job | k8s.V1Service],
    dry_run: bool = False,
    api_client: k8s.ApiClient | None = None,
) -> list[dict[str, Any]]:
    """Create the objects (server-side dry run when `dry_run`); returns what the server answered."""
    core, batch = k8s.CoreV1Api(api_client), k8s.BatchV1Api(api_client)
    kwargs: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
    created: list[Any] = []
    for obj in objects:
        namespace = obj.metadata.namespace if obj.metadata else None
        if namespace is None:
            raise ValueError(f"{obj.kind or type(obj).__name__} has no metadata.namespace")
        if isinstance(obj, k8s.V1Service):
            created.append(core.create_namespaced_service(namespace, obj, **kwargs))
        else:
            created.append(batch.create_namespaced_job(namespace, obj, **kwargs))
    return to_manifests(created)


def parse_run_id(line: str) -> str | None:
    """The MLflow run id a training log line names ("... run <32 hex> ..." or ".../runs/<id>")."""
    match = _RUN_ID.search(line)
    return match.group(1) if match else None


@dataclass(frozen=True)
class JobOutcome:
    name: str
    status: Literal["succeeded", "failed", "timeout"]
    run_id: str | None  # the MLflow run its logs named, if any
    reason: str = ""


def follow(
    name: str,
    namespace: str,
    on_line: Callable[[str], None] = print,
    timeout: float = 24 * 3600,
    poll: float = 2.0,
    api_client: k8s.ApiClient | None = None,
) -> JobOutcome:
    """Stream the logs of the Job's first pod while it runs; return how the Job ended."""
    core, batch = k8s.CoreV1Api(api_client), k8s.BatchV1Api(api_client)
    deadline = time.monotonic() + timeout
    run_id: str | None = None
    streamed = False
    while time.monotonic() < deadline:
        job = batch.read_namespaced_job_status(name, namespace)
        assert job.status is not None  # the API server always sets it on a read Job
        for condition in job.status.conditions or []:
            if condition.status == "True" and condition.type in ("Complete", "Failed"):
                status: Literal["succeeded", "failed"] = (
                    "succeeded" if condition.type == "Complete" else "failed"
                )
                return JobOutcome(name, status, run_id, condition.message or condition.reason or "")
        if not streamed:
            pods = core.list_namespaced_pod(
                namespace, label_selector=f"batch.kubernetes.io/job-name={name}"
            ).items
            pods.sort(key=_completion_index)
            if pods and _phase(pods[0]) in ("Running", "Succeeded", "Failed"):
                pod_name = pods[0].metadata.name if pods[0].metadata else None
                assert pod_name is not None  # the API server always names a listed pod
                # Typed as returning str, but with _preload_content=False the client returns
                # the raw urllib3 response.
                stream = cast(
                    "HTTPResponse",
                    core.read_namespaced_pod_log(
                        pod_name, namespace, follow=True, _preload_content=False
                    ),
                )
                pending = ""
                for chunk in stream.stream():
                    pending += chunk.decode(errors="replace")
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        on_line(line)
                        run_id = parse_run_id(line) or run_id
                if pending:
                    on_line(pending)
                    run_id = parse_run_id(pending) or run_id
                streamed = True
                continue
        time.sleep(poll)
    return JobOutcome(name, "timeout", run_id, f"still running after {timeout:.0f} s")


def _completion_index(pod: k8s.V1Pod) -> str:
    """The pod's index in its Indexed Job ("0" when it has none), to find the first pod."""
    assert pod.metadata is not None  # the API server always sets it on a listed pod
    return (pod.metadata.annotations or {}).get("batch.kubernetes.io/job-completion-index", "0")


def _phase(pod: k8s.V1Pod) -> str | None:
    assert pod.status is not None  # the API server always sets it on a listed pod
    return pod.status.phase


def run_local(module: str, args: Sequence[str]) -> int:
    """Run the pipeline module in a subprocess of this interpreter; returns its exit code."""
    return subprocess.run([sys.executable, "-m", module, *args], check=False).returncode
