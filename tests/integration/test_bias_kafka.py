"""The bias audit chain through the real broker, the scorer and the bias service in one
deployment as `concord up` runs them: a `concord.generated` event (published here, as the
generator does) is scored by the scorer (`concord.audit`) and checked by the bias service
(`concord.bias.verdicts`), both keyed `<job_id>/<prompt_index>`; a `concord.bias.requests` pair
gets a verdict keyed by its id, or by its content hash when it has none; a replay publishes the
same verdict under the same key; poison messages (a corrupt image, an empty prompt, a pair
without an image, bytes that are not a BiasRequestEvent) land in `<topic>.dlq` with the reason,
and the service keeps checking and serving."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from concord.bus import Delivery, DlqHeaders, Reason, dlq_topic, make_bus, topics
from concord.clients import Concord
from concord.config import Settings
from concord.proto.v1 import bias_pb2, common_pb2, events_pb2
from services.bias.convert import content_hash
from tests.fixtures.media import png
from tests.fixtures.models import bias_package, scorer_package, tiny_encoder
from tests.fixtures.serving import InProcessDeployment, free_ports
from tests.fixtures.waiting import wait_until as _wait_until
from tools.kafka.broker import KafkaBroker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WAIT = 120.0  # generous: a loaded 2-core machine runs the broker, the models and the tests


def wait_until(cond: Callable[[], bool], what: str) -> None:
    _wait_until(cond, what, WAIT, interval=0.05)


@pytest.fixture
def settings(own_kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("bias-kafka")
    encoder = tiny_encoder(tmp_path_factory)
    bias = bias_package(root / "tiny-bias", encoder)
    scorer = scorer_package(root / "tiny-scorer", encoder)
    kafka = {
        "bootstrap_servers": own_kafka_broker.bootstrap,
        "group_prefix": f"t{uuid.uuid4().hex[:8]}",
        "max_retries": 1,
        "retry_backoff_seconds": 0.05,
    }
    bias_port, scorer_port = free_ports(2)
    return Settings(
        home=root / "home",
        bus="kafka",
        kafka=kafka,
        serving={"ports": {"bias": bias_port, "scorer": scorer_port}, "metrics_port": 0},
        bias={"model": str(bias), "max_text_chars": 200},
        scorer={"model": str(scorer)},
    )


@pytest.fixture
def served(settings: Settings) -> Iterator[InProcessDeployment]:
    server = InProcessDeployment(["scorer", "bias"], settings)
    yield server
    server.close()


def image(data: bytes) -> common_pb2.Image:
    return common_pb2.Image(data=data, media_type="image/png")


def generated(job: str, index: int, prompt: str, data: bytes) -> events_pb2.Generated:
    return events_pb2.Generated(job_id=job, prompt_index=index, prompt=prompt, image=image(data))


def test_generated_and_requested_pairs_get_verdicts_and_poison_goes_to_the_dlq(
    settings: Settings, served: InProcessDeployment, tmp_path: Path
) -> None:
    job = f"job-{uuid.uuid4().hex[:8]}"
    red, green = png((200, 20, 20)), png((20, 200, 20))
    good = generated(job, 0, "a red circle above a blue square", red)
    corrupt = generated(job, 1, "a yellow cross", png((1, 2, 3))[:60])
    no_prompt = generated(job, 2, "  ", png((9, 9, 9)))
    named = bias_pb2.BiasRequestEvent(
        id=f"{job}-req", pair=bias_pb2.BiasPair(image=image(green), text="thugs roam the park")
    )
    anonymous = bias_pb2.BiasRequestEvent(
        pair=bias_pb2.BiasPair(image=image(red), text=f"a calm red square {job}")
    )
    hashed = content_hash(anonymous.pair.image.data, anonymous.pair.text)
    no_image = bias_pb2.BiasRequestEvent(
        id=f"{job}-noimage", pair=bias_pb2.BiasPair(text="a square")
    )
    marker = "PLACEHOLDER"
    not_utf8 = (
        bias_pb2.BiasRequestEvent(id=f"{job}-utf8", pair=bias_pb2.BiasPair(text=marker))
        .SerializeToString()
        .replace(marker.encode(), b"bad \xff text!")
    )

    lock = threading.Lock()
    verdicts: dict[str, bias_pb2.BiasVerdictEvent] = {}
    keys: dict[str, bytes | None] = {}
    audits: dict[str, events_pb2.AuditResult] = {}
    dead: dict[tuple[str, str], Delivery] = {}  # (key, consumer group) -> dead letter

    def on_verdict(message: bias_pb2.BiasVerdictEvent, delivery: Delivery) -> None:
        if job in message.subject_id or message.subject_id == hashed:
            with lock:
                verdicts[message.subject_id] = message
                keys[message.subject_id] = delivery.key

    def on_audit(message: events_pb2.AuditResult, delivery: Delivery) -> None:
        if message.subject_id.startswith(job):
            with lock:
                audits[message.subject_id] = message

    def on_dead(_: bytes, delivery: Delivery) -> None:
        # The scorer dead-letters the bad generated events too, under its own group.
        if delivery.key and delivery.key.startswith(job.encode()):
            group = delivery.headers[DlqHeaders.GROUP].rsplit(".", 1)[-1]
            with lock:
                dead[(delivery.key.decode(), group)] = delivery

    with make_bus(settings) as bus:
        observers = [
            bus.subscribe(
                topics.BIAS_VERDICTS, f"obs-{job}", on_verdict, bias_pb2.BiasVerdictEvent
            ).start(),
            bus.subscribe(topics.AUDIT, f"audit-{job}", on_audit, events_pb2.AuditResult).start(),
            bus.subscribe_raw(dlq_topic(topics.GENERATED), f"dlq-g-{job}", on_dead).start(),
            bus.subscribe_raw(dlq_topic(topics.BIAS_REQUESTS), f"dlq-r-{job}", on_dead).start(),
        ]
        try:
            for event in (good, corrupt, no_prompt):
                bus.publish(topics.GENERATED, f"{job}/{event.prompt_index}", event)
            for request in (named, no_image):
                bus.publish(topics.BIAS_REQUESTS, request.id, request)
            bus.publish(topics.BIAS_REQUESTS, f"{job}-anonymous", anonymous)
            bus.send_raw(topics.BIAS_REQUESTS, f"{job}-utf8".encode(), not_utf8, {})
            bus.flush()
            wait_until(lambda: len(verdicts) >= 3, "verdicts of the three good pairs")
            wait_until(lambda: f"{job}/0" in audits, "the scorer's audit of the generated image")
            poison = {
                (f"{job}/1", "bias"),
                (f"{job}/2", "bias"),
                (f"{job}-noimage", "bias-requests"),
                (f"{job}-utf8", "bias-requests"),
            }
            wait_until(lambda: poison <= set(dead), "the bias service's four poison messages")

            assert sorted(verdicts) == sorted([f"{job}/0", f"{job}-req", hashed])
            first = verdicts[f"{job}/0"]
            assert keys[f"{job}/0"] == f"{job}/0".encode()
            assert first.source == bias_pb2.BiasVerdictEvent.SOURCE_GENERATED
            assert first.text == good.prompt
            assert first.content_hash == content_hash(red, good.prompt)
            assert first.model.name == "tiny-bias" and first.model.version.startswith("local-")
            assert 0.0 <= first.verdict.probability <= 1.0 and first.verdict.rationale
            assert first.HasField("checked_at")
            assert audits[f"{job}/0"].text == first.text  # scored and checked: one subject
            assert verdicts[f"{job}-req"].source == bias_pb2.BiasVerdictEvent.SOURCE_REQUEST
            assert keys[hashed] == hashed.encode()
            for verdict in verdicts.values():
                for cue in verdict.verdict.cues:
                    if cue.kind == bias_pb2.Cue.KIND_LINGUISTIC:
                        assert verdict.text[cue.span.start : cue.span.end] == cue.text

            bad_image = dead[(f"{job}/1", "bias")].headers
            assert bad_image[DlqHeaders.ERROR].startswith("image.data: ")
            assert bad_image[DlqHeaders.EXCEPTION].endswith("InvalidArgument")
            assert dead[(f"{job}/2", "bias")].headers[DlqHeaders.ERROR] == "prompt: is empty"
            no_image_reason = dead[(f"{job}-noimage", "bias-requests")].headers
            assert no_image_reason[DlqHeaders.ERROR] == "pair.image.data: is empty"
            undecodable = dead[(f"{job}-utf8", "bias-requests")].headers
            assert undecodable[DlqHeaders.REASON] == Reason.UNDECODABLE

            # A replay publishes the same verdict under the same key; the API still answers.
            bus.publish(topics.BIAS_REQUESTS, f"{job}-anonymous", anonymous)
            bus.flush()
            before = verdicts[hashed]
            wait_until(lambda: verdicts[hashed] is not before, "the replayed request's verdict")
            again = verdicts[hashed]
            assert again.verdict.probability == pytest.approx(before.verdict.probability, abs=1e-6)
            assert again.verdict.label == before.verdict.label
            assert again.verdict.rationale == before.verdict.rationale
            assert keys[hashed] == hashed.encode()
            with Concord(settings) as sdk:
                assert len(sdk.detect_bias([(red, "still serving")]).verdicts) == 1
        finally:
            for observer in observers:
                observer.stop()
