"""The services as users deploy them: one process each, wired by the environment that
`docker-compose.yml` (and the rendered Helm chart) give them, then a product flow through them.

Every other test hosts the services in one process, where a service that dials a peer at its
own bind address still finds it. Here each service is its own OS process bound to its own
loopback address (127.0.0.11, .12, ...), the way each container or pod has its own IP, and
its environment is read from the deployment files, not re-typed: only host names are
resolved, as DNS would (compose service names and Kubernetes Service names -> those loopback
addresses; `kafka`/`mlflow` -> the real broker and MLflow server the suite starts). So if
retrieval dialled the encoder at its own bind address again, every index and search here
would fail.

What cannot run here and is replaced (named, not hidden): the Qdrant server (no binary on
this machine; retrieval keeps its vectors in the embedded Qdrant engine unless
CONCORD_TEST_QDRANT_URL names a server) and the models (tiny random ones registered in the
real MLflow server under the names and aliases the deployment files ask for).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from google.protobuf.message import Message
from PIL import Image

from concord.bus import Bus, Delivery, make_bus, topics
from concord.clients import Concord, Connection, IndexItem, status_of
from concord.clients.linker import Entity, Mention
from concord.config import Settings
from concord.proto.v1 import bias_pb2, common_pb2, events_pb2
from concord.registry import Registry
from tests.deploy.conftest import by_kind
from tests.fixtures.media import png
from tests.fixtures.mlflow import MlflowServer
from tests.fixtures.models import bias_package, linker_package, scorer_package, tiny_encoder
from tests.fixtures.waiting import wait_until
from tools.kafka.broker import KafkaBroker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
TOKEN = "topology-token"
# The services a product flow goes through: all six.
FLOW = ("encoder", "retrieval", "scorer", "generator", "linker", "bias")
START_DEADLINE_S = 240.0
WAIT_S = 180.0
PROMPT = "a red circle above a blue square"
E = TypeVar("E", bound=Message)


# ------------------------------------------------------------------ the deployment files


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Compose's `${VAR:-default}` / `${VAR}` interpolation."""

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(3) or ""
        return env.get(name) or default

    return re.sub(r"\$\{([A-Z0-9_]+)(:-([^}]*))?\}", sub, value)


def compose_services(shell: Mapping[str, str]) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each Concord service of docker-compose.yml: (command, environment), interpolated as
    `docker compose` would from the shell's variables."""
    doc = yaml.safe_load(COMPOSE.read_text())  # merge keys (<<) resolve in safe_load
    found = {}
    for name, spec in doc["services"].items():
        command = spec.get("command")
        if isinstance(command, list) and command[:2] == ["concord", "serve"]:
            env = {k: _expand(str(v), shell) for k, v in (spec.get("environment") or {}).items()}
            found[name] = (command, env)
    return found


def chart_services(
    objects: list[dict[str, Any]],
) -> dict[str, tuple[list[str], dict[str, str], str]]:
    """Each Concord Deployment of the rendered chart by component: (command, environment from
    its ConfigMap and plain env entries, its name, which is also its Service's name). The
    token's Secret reference is the one value the test fills in."""
    config_maps = by_kind(objects, "ConfigMap")
    found = {}
    for deployment in by_kind(objects, "Deployment").values():
        component = deployment["metadata"]["labels"].get("app.kubernetes.io/component")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        if container.get("command", [])[:2] != ["concord", "serve"]:
            continue
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(config_maps[source["configMapRef"]["name"]]["data"])
        for entry in container.get("env", []):
            if "value" in entry:
                env[entry["name"]] = str(entry["value"])
            elif entry["name"] == "CONCORD_SERVING__AUTH_TOKEN":
                env[entry["name"]] = TOKEN
        found[component] = (container["command"], env, deployment["metadata"]["name"])
    return found


def resolve_hosts(env: dict[str, str], dns: Mapping[str, str]) -> dict[str, str]:
    """Rewrite every `name:port` (and `name.ns.svc...:port`) whose name is in `dns`."""
    out = {}
    for key, value in env.items():
        for name, address in dns.items():
            pattern = rf"(?<![\w.-]){re.escape(name)}(\.[a-z0-9.-]+)?:(\d+)"
            value = re.sub(pattern, lambda m, a=address: _with_port(a, m.group(2)), value)
        out[key] = value
    return out


def _with_port(address: str, port: str) -> str:
    """`127.0.0.11` -> `127.0.0.11:<port>`; a full `host:port` (a real server) as it is."""
    return address if ":" in address.split("//")[-1] else f"{address}:{port}"


# ------------------------------------------------------------------ processes


@dataclass
class Topology:
    """Services each in its own process and loopback address; stopped on `close`."""

    root: Path
    hosts: dict[str, str] = field(default_factory=dict)  # service -> its loopback IP
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, command: list[str], env: dict[str, str], host: str) -> None:
        binary = Path(sys.executable).parent / command[0]
        log = (self.root / f"{name}.log").open("wb")
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
        environment.update(env)
        # What a container or pod gets besides: its own address and home, a spare thread.
        environment.update(
            CONCORD_SERVING__HOST=host,
            CONCORD_HOME=str(self.root / name),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            OMP_NUM_THREADS="1",
        )
        self.hosts[name] = host
        self.ports[name] = int(json.loads(env.get("CONCORD_SERVING__PORTS", "{}")).get(name, 0))
        self.processes[name] = subprocess.Popen(
            [str(binary), *command[1:]], env=environment, stdout=log, stderr=subprocess.STDOUT
        )

    def address(self, name: str, settings: Settings) -> str:
        port = self.ports[name] or settings.serving.port_for(name)
        return f"{self.hosts[name]}:{port}"

    def wait_serving(self, settings: Settings) -> None:
        deadline = time.monotonic() + START_DEADLINE_S
        for name, process in self.processes.items():
            full = f"concord.v1.{name.capitalize()}Service"
            with Connection(self.address(name, settings)) as conn:
                while True:
                    if process.poll() is not None:
                        pytest.fail(f"{name} exited {process.returncode}:\n{self.tail(name)}")
                    try:
                        if conn.health(full, timeout=1.0) == "SERVING":
                            break
                    except Exception:  # not listening yet
                        pass
                    if time.monotonic() > deadline:
                        pytest.fail(f"{name} not SERVING in time:\n{self.tail(name)}")
                    time.sleep(0.5)

    def tail(self, name: str, lines: int = 40, quiet: str = "") -> str:
        """The last `lines` lines of the service's log, without lines containing `quiet`."""
        text = (self.root / f"{name}.log").read_text(errors="replace")
        kept = [line for line in text.splitlines() if not quiet or quiet not in line]
        return "\n".join(kept[-lines:])

    def close(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


# ------------------------------------------------------------------ models in the registry


def _register(registry: Registry, name: str, directory: Path) -> None:
    with registry.start_run(f"topology-{name}") as run:
        path = run.log_model_dir(directory)
        version = registry.register_model(name, run.run_id, path)
    registry.set_alias(name, "production", version.version)


@pytest.fixture(scope="module")
def registered(
    mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> MlflowServer:
    """concord-encoder, -scorer, -generator, -linker and -bias @production, as the deployment
    files name them: tiny random models (quality is measured by the reports, not here). The
    scorer, linker and bias packages name the encoder by its registry alias."""
    from concord.checkpoints import build_generator, save_generator
    from concord.models.diffusion.config import load_preset

    root = tmp_path_factory.mktemp("topology-models")
    registry = Registry(mlflow_server.uri)
    _register(registry, "concord-encoder", tiny_encoder(tmp_path_factory))
    scorer = scorer_package(root / "scorer", "models:/concord-encoder@production", threshold=1e-12)
    _register(registry, "concord-scorer", scorer)
    generator = save_generator(build_generator(load_preset("tiny"), seed=0), root / "generator")
    _register(registry, "concord-generator", generator)
    encoder_alias = "models:/concord-encoder@production"
    _register(registry, "concord-linker", linker_package(root / "linker", encoder_alias))
    bias = bias_package(root / "bias", tiny_encoder(tmp_path_factory), encoder_uri=encoder_alias)
    _register(registry, "concord-bias", bias)
    return mlflow_server


def _client_settings(topology: Topology, bootstrap: str, root: Path) -> Settings:
    """What a product team's client is told: each service's address and the token."""
    addresses = {name: topology.address(name, Settings()) for name in topology.processes}
    return Settings(
        home=root / "client",
        bus="kafka",
        kafka={"bootstrap_servers": bootstrap},
        serving={"addresses": addresses, "auth_token": TOKEN},
    )


def _vectors(env: dict[str, str]) -> dict[str, str]:
    """No Qdrant server here: the embedded engine stands in unless the suite was given one."""
    url = os.environ.get("CONCORD_TEST_QDRANT_URL")
    if url:
        return {**env, "CONCORD_QDRANT__URL": url}
    return {**env, "CONCORD_VECTORS": "embedded"}


# ------------------------------------------------------------------ compose


@pytest.fixture(scope="module")
def compose_topology(
    own_kafka_broker: KafkaBroker,
    registered: MlflowServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Topology, Settings]]:
    root = tmp_path_factory.mktemp("compose")
    services = compose_services({"CONCORD_AUTH_TOKEN": TOKEN})
    assert set(FLOW) <= set(services), f"docker-compose.yml lacks {set(FLOW) - set(services)}"
    dns = {name: f"127.0.0.{11 + i}" for i, name in enumerate(sorted(services))}
    dns.update(kafka=own_kafka_broker.bootstrap, mlflow=registered.uri.split("//")[-1])
    topology = Topology(root)
    try:
        for name in FLOW:
            command, env = services[name]
            topology.start(name, command, _vectors(resolve_hosts(env, dns)), dns[name])
        topology.wait_serving(Settings())
        yield topology, _client_settings(topology, own_kafka_broker.bootstrap, root)
    finally:
        topology.close()


def _image(colour: tuple[int, int, int]) -> bytes:
    return png(colour, size=48)


def test_compose_wires_each_service_to_its_peers(
    compose_topology: tuple[Topology, Settings],
) -> None:
    topology, settings = compose_topology
    for name in FLOW:
        status = status_of(name, settings)
        assert status.health == "SERVING", (name, status, topology.tail(name))
        assert status.not_ready == "", (name, status.not_ready)
    # Retrieval's address for the encoder is the encoder's own loopback address, not its own.
    assert topology.hosts["retrieval"] != topology.hosts["encoder"]


def test_a_product_flow_runs_through_separate_processes(
    compose_topology: tuple[Topology, Settings],
) -> None:
    topology, settings = compose_topology
    collection = f"topology-{uuid.uuid4().hex[:6]}"
    red, blue = _image((220, 20, 20)), _image((20, 20, 220))
    with Concord(settings) as sdk:
        # index over gRPC: retrieval encodes through the encoder at its configured address
        done = sdk.index(
            [
                IndexItem(image=red, payload={"name": "red"}),
                IndexItem(image=blue, payload={"name": "blue"}),
                IndexItem(text="a red square", payload={"name": "caption"}),
            ],
            collection=collection,
        )
        assert len(done.ids) == 3 and done.model.name == "concord-encoder"
        hits = sdk.search_image(blue, collection=collection, target="image", exact=True).hits
        assert hits[0].payload["name"] == "blue"
        assert len(sdk.search_text("a red square", collection=collection, top_k=3).hits) == 3

        # score: the scorer resolves its package and the encoder it names from the registry
        scores = sdk.score([(red, "a red square")])
        assert scores.model.name == "concord-scorer"
        assert 0.0 <= scores.scores[0].aligned_probability <= 1.0

        # generate: the registered generator draws an image and its layout
        (generated,) = sdk.generate([PROMPT], steps=2, seed=1)
        assert Image.open(io.BytesIO(generated.png)).size == (32, 32)
        assert generated.model.name == "concord-generator" and generated.layout is not None

        # link: the linker keeps the knowledge base in the vector store, featurizes with the
        # encoder its registered package names, and re-ranks with M3EL
        kb = f"topology-{uuid.uuid4().hex[:6]}"
        entities = [
            Entity("e-red", "Zorv", "the northern crest", images=(red,)),
            Entity("e-blue", "Zorv", "the southern crest", images=(blue,)),
            Entity("e-text", "Mirel", "a beacon of the coast"),
        ]
        assert sdk.upsert_entities(kb, entities) == 3
        links = sdk.link(kb, [Mention("We met Zorv at the parade", (7, 11), red)], top_k=3)
        assert links.model.name == "concord-linker"
        assert {c.entity_id for c in links.candidates[0]} == {e.id for e in entities}

        # bias: the detector resolves its package and the encoder it names from the registry
        detection = sdk.detect_bias([(red, "a sinister red square menaces everyone")])
        assert detection.model.name == "concord-bias"
        assert detection.verdicts[0].label in ("biased", "neutral")

    # A wait that times out says what each process logged, not only what it waited for.
    try:
        _ingest_over_kafka(settings, collection)
        _audit_over_kafka(settings)
    except AssertionError as err:
        tails = (f"--- {n}.log\n{topology.tail(n, 60, quiet=' INFO kafka.')}" for n in FLOW)
        logs = "\n".join(tails)
        raise AssertionError(f"{err}\n{logs}") from err


def _publish_and_await(
    settings: Settings,
    topic: str,
    key: str,
    message: Message,
    watch: str,
    event_type: type[E],
    match: Callable[[E], bool],
    what: str,
) -> E:
    """Publish `message` on `topic` and wait for the first `watch` event that `match`es."""

    def publish(bus: Bus) -> None:
        bus.publish(topic, key, message)
        bus.flush()

    return _await(settings, watch, key, event_type, match, what, then=publish)


def _await(
    settings: Settings,
    watch: str,
    key: str,
    event_type: type[E],
    match: Callable[[E], bool],
    what: str,
    then: Callable[[Bus], None] = lambda bus: None,
) -> E:
    """Watch `watch` with a new group (from the topic's start), run `then` on the bus, and
    wait for the first event that `match`es."""
    lock = threading.Lock()
    seen: list[E] = []

    def on_event(event: E, _: Delivery) -> None:
        if match(event):
            with lock:
                seen.append(event)

    with make_bus(settings) as bus:
        observer = bus.subscribe(watch, f"obs-{watch}-{key}", on_event, event_type).start()
        try:
            then(bus)
            wait_until(lambda: bool(seen), what, WAIT_S)
        finally:
            observer.stop()
    return seen[0]


def _ingest_over_kafka(settings: Settings, collection: str) -> None:
    """The bus worker's blocking encoder client dials the same configured address."""
    event = events_pb2.IngestRequest(
        collection=collection,
        item=common_pb2.Item(image=common_pb2.Image(data=_image((20, 200, 20)))),
    )
    indexed = _publish_and_await(
        settings,
        topics.INGEST,
        collection,
        event,
        topics.INDEXED,
        events_pb2.Indexed,
        lambda m: m.collection == collection,
        "the Indexed event of a Kafka ingest",
    )
    assert indexed.model.name == "concord-encoder"


def _audit_over_kafka(settings: Settings) -> None:
    """generator job -> concord.generated -> the scorer's audit -> concord.audit."""
    job_id = f"topology-{uuid.uuid4().hex[:8]}"
    job = events_pb2.GenerationJob(
        job_id=job_id,
        generate=events_pb2.GenerationSpec(prompts=[PROMPT], seed=0, steps=2, with_layout=True),
    )
    audit = _publish_and_await(
        settings,
        topics.GENERATION_JOBS,
        job_id,
        job,
        topics.AUDIT,
        events_pb2.AuditResult,
        lambda m: m.subject_id.startswith(f"{job_id}/"),
        "the AuditResult of a generation job",
    )
    assert audit.text == PROMPT and audit.model.name == "concord-scorer"
    # ...and the bias detector checked the same generated image on its own topic. The job
    # ran once; a new observer group reads the topic from its start.
    verdict = _await(
        settings,
        topics.BIAS_VERDICTS,
        job_id,
        bias_pb2.BiasVerdictEvent,
        lambda m: m.subject_id.startswith(f"{job_id}/"),
        "the bias verdict on the generated image",
    )
    assert verdict.model.name == "concord-bias"


# ------------------------------------------------------------------ the Helm chart


def test_the_rendered_chart_wires_retrieval_to_the_encoder(
    render: Any,
    own_kafka_broker: KafkaBroker,
    registered: MlflowServer,
    tmp_path: Path,
) -> None:
    """The chart's own environment (ConfigMap + env of each Deployment), Service names
    resolved to loopback addresses: index and search through retrieval -> encoder."""
    objects = render("default")
    services = chart_services(objects)
    names = sorted(by_kind(objects, "Service"))
    dns = {name: f"127.0.0.{31 + i}" for i, name in enumerate(names)}
    kafka = next(n for n in names if n.endswith("-kafka"))
    mlflow = next(n for n in names if n.endswith("-mlflow"))
    dns.update({kafka: own_kafka_broker.bootstrap, mlflow: registered.uri.split("//")[-1]})
    topology = Topology(tmp_path)
    try:
        for name in ("encoder", "retrieval"):
            command, env, service = services[name]
            topology.start(name, command, _vectors(resolve_hosts(env, dns)), dns[service])
        topology.wait_serving(Settings())
        settings = _client_settings(topology, own_kafka_broker.bootstrap, tmp_path)
        with Concord(settings) as sdk:
            done = sdk.index([IndexItem(image=_image((200, 200, 20)))], collection="chart")
            assert done.model.name == "concord-encoder"
            hits = sdk.search_image(_image((200, 200, 20)), collection="chart", exact=True).hits
            assert hits and hits[0].id == done.ids[0]
    finally:
        topology.close()
