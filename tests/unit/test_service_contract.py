"""The contract every Concord service keeps on the wire (README "Errors a caller sees", DESIGN
"Contracts"), checked for each name in `SERVICE_NAMES` over raw gRPC with the generated stubs:

- liveness: grpc health on "" answers SERVING, with or without a model;
- reflection lists the service's proto service;
- GetInfo answers the service name and the platform version, and without its model says it is
  not ready and why (the model URI it was given; retrieval: the encoder it cannot reach);
- a model RPC without the model answers FAILED_PRECONDITION naming the model;
- bad input answers INVALID_ARGUMENT with a `google.rpc.BadRequest` violation naming the field.

`CONTRACTS` below says, per service, which RPC and request each of the last two checks sends.
A new service adds its row; a service not built yet (every RPC UNIMPLEMENTED) goes in
`UNBUILT`, whose model-dependent checks are strict xfails that turn red when the service is
built: then remove it from `UNBUILT` and correct the row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from concord import __version__
from concord.clients import Connection
from concord.config import SERVICE_NAMES, Settings
from concord.proto.v1 import (
    bias_pb2,
    bias_pb2_grpc,
    common_pb2,
    encoder_pb2,
    encoder_pb2_grpc,
    generator_pb2,
    generator_pb2_grpc,
    linker_pb2,
    linker_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
    scorer_pb2,
    scorer_pb2_grpc,
)
from concord.serving.errors import field_violations
from tests.fixtures.media import png
from tests.fixtures.models import scorer_package, tiny_encoder
from tests.fixtures.serving import InProcessDeployment, free_ports
from tests.fixtures.waiting import wait_until

TIMEOUT = 10.0  # seconds per RPC
RED = common_pb2.Image(data=png((220, 30, 30)), media_type="image/png")


@dataclass(frozen=True)
class Call:
    """One RPC of a contract check.

    rpc: the stub method. request: what it sends. field: the field the INVALID_ARGUMENT
    violation names. streams: a server stream (its status arrives while reading it).
    with_model: the RPC requires the model before it reads its input, so the bad-input check
    runs against a tiny model. with_peers: services started beside it (retrieval's model is
    the encoder's). names_model_of: whose model URI the FAILED_PRECONDITION names.
    """

    rpc: str
    request: Message
    field: str = ""
    streams: bool = False
    with_model: bool = False
    with_peers: tuple[str, ...] = ()
    names_model_of: str = ""


@dataclass(frozen=True)
class Contract:
    stub: Callable[[grpc.Channel], Any]
    precondition: Call  # no model -> FAILED_PRECONDITION naming the model
    invalid: Call  # bad input -> INVALID_ARGUMENT naming `invalid.field`
    depends_on: str = ""  # the peer readiness follows instead of a model of its own


CONTRACTS: dict[str, Contract] = {
    "encoder": Contract(
        encoder_pb2_grpc.EncoderServiceStub,
        precondition=Call("EncodeTexts", encoder_pb2.EncodeTextsRequest(texts=["a red circle"])),
        invalid=Call(
            "EncodeTexts",
            encoder_pb2.EncodeTextsRequest(texts=["a red circle", " "]),
            field="texts[1]",
            with_model=True,
        ),
    ),
    "retrieval": Contract(
        retrieval_pb2_grpc.RetrievalServiceStub,
        # Retrieval encodes queries through the encoder: without an encoder model, a text
        # search fails on the encoder's model.
        precondition=Call(
            "Search",
            retrieval_pb2.SearchRequest(text="a red circle", top_k=3),
            with_peers=("encoder",),
            names_model_of="encoder",
        ),
        invalid=Call("Search", retrieval_pb2.SearchRequest(top_k=3), field="query"),
        depends_on="encoder",
    ),
    "scorer": Contract(
        scorer_pb2_grpc.ScorerServiceStub,
        precondition=Call(
            "Score",
            scorer_pb2.ScoreRequest(pairs=[scorer_pb2.ScorePair(image=RED, text="a red square")]),
        ),
        invalid=Call(
            "Score",
            scorer_pb2.ScoreRequest(pairs=[scorer_pb2.ScorePair(image=RED, text="")]),
            field="pairs[0].text",
            with_model=True,
        ),
    ),
    "generator": Contract(
        generator_pb2_grpc.GeneratorServiceStub,
        precondition=Call(
            "Generate",
            generator_pb2.GenerateRequest(prompts=["a red circle"], steps=2),
            streams=True,
        ),
        invalid=Call("GetJob", generator_pb2.GetJobRequest(id=""), field="id"),
    ),
    "linker": Contract(
        linker_pb2_grpc.LinkerServiceStub,
        precondition=Call(
            "LinkMentions",
            linker_pb2.LinkMentionsRequest(
                knowledge_base="shapes",
                mentions=[
                    linker_pb2.Mention(text="a red circle", span=common_pb2.Span(start=6, end=12))
                ],
            ),
        ),
        invalid=Call(
            "LinkMentions", linker_pb2.LinkMentionsRequest(knowledge_base="shapes"), "mentions"
        ),
    ),
    "bias": Contract(
        bias_pb2_grpc.BiasServiceStub,
        precondition=Call(
            "Detect", bias_pb2.DetectRequest(pairs=[bias_pb2.BiasPair(image=RED, text="a circle")])
        ),
        invalid=Call("Detect", bias_pb2.DetectRequest(), field="pairs"),
    ),
}

# Where each service's model setting lives.
MODEL_SETTINGS: dict[str, Callable[[str], dict[str, Any]]] = {
    "encoder": lambda uri: {"encoder_model": uri},
    "scorer": lambda uri: {"scorer": {"model": uri}},
    "generator": lambda uri: {"generator": {"model": uri}},
    "bias": lambda uri: {"bias": {"model": uri}},
    "linker": lambda uri: {"linker": {"model": uri}},
}

NOT_BUILT = pytest.mark.xfail(strict=True, reason="not built yet: issue 13/14")
UNBUILT: tuple[str, ...] = ()  # services whose model checks are expected to fail


def with_model_checks(names: tuple[str, ...]) -> list[Any]:
    """The service names, the unbuilt ones marked as expected to fail."""
    return [pytest.param(n, marks=NOT_BUILT) if n in UNBUILT else n for n in names]


def test_every_service_has_a_contract_row() -> None:
    assert set(CONTRACTS) == set(SERVICE_NAMES)


# ----------------------------------------------------------------------------- deployments


class Deployments:
    """In-process deployments, started on first use and shared by the module's tests.

    Every model setting points at a missing path under tmp unless `model` names the one
    service given a tiny model; every service has its own free port, so a peer not started
    is not reachable.
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp = tmp_path_factory
        self.root = tmp_path_factory.mktemp("contract")
        self.started: dict[tuple[tuple[str, ...], str], tuple[InProcessDeployment, Settings]] = {}

    def missing(self, service: str) -> str:
        """The model URI `service` is given: a path that does not exist."""
        return str(self.root / "no-model" / service)

    def get(self, names: tuple[str, ...], model: str = "") -> tuple[InProcessDeployment, Settings]:
        key = (names, model)
        if key not in self.started:
            models = {s: self.missing(s) for s in MODEL_SETTINGS}
            if model == "encoder":
                models["encoder"] = str(tiny_encoder(self.tmp))
            elif model == "scorer":
                package = self.root / "scorer-package"
                models["scorer"] = str(scorer_package(package, tiny_encoder(self.tmp)))
            elif model:
                raise AssertionError(f"no tiny model for {model}: add one to Deployments.get")
            extra: dict[str, Any] = {}
            for service, uri in models.items():
                extra |= MODEL_SETTINGS[service](uri)
            settings = Settings(
                home=self.tmp.mktemp("home"),
                serving={
                    "ports": dict(zip(SERVICE_NAMES, free_ports(len(SERVICE_NAMES)), strict=True)),
                    "metrics_port": 0,
                },
                **extra,
            )
            self.started[key] = (InProcessDeployment(list(names), settings), settings)
        return self.started[key]

    def close(self) -> None:
        for server, _ in self.started.values():
            server.close()


@pytest.fixture(scope="module")
def deployments(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployments]:
    running = Deployments(tmp_path_factory)
    yield running
    running.close()


def connect(deployments: Deployments, name: str, call: Call | None = None) -> Connection:
    """A connection to service `name`, deployed as `call` needs (alone, without a model)."""
    names, model = (name,), ""
    if call is not None:
        names = (*call.with_peers, name)
        model = name if call.with_model else ""
    _, settings = deployments.get(names, model)
    return Connection(settings.serving.address_for(name))


def send(conn: Connection, name: str, call: Call) -> grpc.RpcError:
    """Send `call` on the raw stub. Returns: the error it answers (fails if it answers none)."""
    method = getattr(CONTRACTS[name].stub(conn.channel), call.rpc)
    with pytest.raises(grpc.RpcError) as caught:
        answer = method(call.request, timeout=TIMEOUT)
        if call.streams:
            list(answer)
    return caught.value  # type: ignore[return-value]


def proto_service(name: str) -> str:
    return f"concord.v1.{name.capitalize()}Service"


# ----------------------------------------------------------------------------- checks


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_liveness_is_serving_without_a_model(deployments: Deployments, name: str) -> None:
    with connect(deployments, name) as conn:
        assert conn.health("") == "SERVING"


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_reflection_lists_the_proto_service(deployments: Deployments, name: str) -> None:
    with connect(deployments, name) as conn:
        reflected = conn.reflected_services()
    assert proto_service(name) in reflected
    assert "grpc.health.v1.Health" in reflected


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_info_names_the_service_and_platform_version(deployments: Deployments, name: str) -> None:
    with connect(deployments, name) as conn:
        info = (
            CONTRACTS[name].stub(conn.channel).GetInfo(common_pb2.GetInfoRequest(), timeout=TIMEOUT)
        )
    assert info.service == name
    assert info.concord_version == __version__


@pytest.mark.parametrize("name", with_model_checks(SERVICE_NAMES))
def test_info_without_a_model_is_not_ready_and_says_why(
    deployments: Deployments, name: str
) -> None:
    contract = CONTRACTS[name]
    with connect(deployments, name) as conn:
        # readiness (the proto service) follows the model and the peers; liveness ("") not
        wait_until(
            lambda: conn.health(proto_service(name)) == "NOT_SERVING",
            f"{name} health NOT_SERVING without its {contract.depends_on or 'model'}",
            timeout=15,
        )
        assert conn.health("") == "SERVING"
        info = contract.stub(conn.channel).GetInfo(common_pb2.GetInfoRequest(), timeout=TIMEOUT)
    assert not info.ready and not info.models
    if contract.depends_on:
        _, settings = deployments.get((name,))
        assert contract.depends_on in info.not_ready_reason
        assert settings.serving.address_for(contract.depends_on) in info.not_ready_reason
    else:
        assert deployments.missing(name) in info.not_ready_reason


@pytest.mark.parametrize("name", with_model_checks(SERVICE_NAMES))
def test_model_rpc_without_a_model_fails_precondition_naming_it(
    deployments: Deployments, name: str
) -> None:
    call = CONTRACTS[name].precondition
    with connect(deployments, name, call) as conn:
        err = send(conn, name, call)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
    assert deployments.missing(call.names_model_of or name) in (err.details() or "")


@pytest.mark.parametrize("name", with_model_checks(SERVICE_NAMES))
def test_bad_input_is_invalid_argument_naming_the_field(
    deployments: Deployments, name: str
) -> None:
    call = CONTRACTS[name].invalid
    with connect(deployments, name, call) as conn:
        err = send(conn, name, call)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert call.field in field_violations(err), err.details()
        assert conn.health("") == "SERVING"  # a bad request never takes the service down
