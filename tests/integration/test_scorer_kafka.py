"""The scorer's auditor through the real broker: `concord.generated` events (published here,
as the generator will) become `concord.audit` results keyed by subject id, with flagged words
whose spans point into the prompt; a corrupt image and an empty prompt go to
`concord.generated.dlq` with the reason, and the service keeps auditing and serving."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from concord.bus import Delivery, DlqHeaders, dlq_topic, make_bus, topics
from concord.clients import Concord
from concord.config import Settings
from concord.proto.v1 import common_pb2, events_pb2
from tests.fixtures.media import png
from tests.fixtures.models import scorer_package, tiny_encoder
from tests.fixtures.serving import InProcessDeployment, scorer_settings
from tests.fixtures.waiting import wait_until as _wait_until
from tools.kafka.broker import KafkaBroker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WAIT = 60.0


def wait_until(cond: Callable[[], bool], what: str) -> None:
    _wait_until(cond, what, WAIT, interval=0.05)


@pytest.fixture
def settings(own_kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("scorer-kafka")
    package = scorer_package(root / "tiny-scorer", tiny_encoder(tmp_path_factory))
    kafka = {
        "bootstrap_servers": own_kafka_broker.bootstrap,
        "group_prefix": f"t{uuid.uuid4().hex[:8]}",
        "max_retries": 1,
        "retry_backoff_seconds": 0.05,
    }
    return scorer_settings(root, str(package), bus="kafka", kafka=kafka)


@pytest.fixture
def served(settings: Settings) -> Iterator[InProcessDeployment]:
    server = InProcessDeployment(["scorer"], settings)
    yield server
    server.close()


def generated(job: str, index: int, prompt: str, image: bytes) -> events_pb2.Generated:
    return events_pb2.Generated(
        job_id=job,
        prompt_index=index,
        prompt=prompt,
        image=common_pb2.Image(data=image, media_type="image/png"),
        seed=index,
    )


def test_auditor_scores_generated_events_and_dead_letters_bad_ones(
    settings: Settings, served: InProcessDeployment, tmp_path: Path
) -> None:
    job = f"job-{uuid.uuid4().hex[:8]}"
    good = [
        generated(job, 0, "a red circle above a blue square", png((200, 20, 20))),
        generated(job, 1, "two green stars", png((20, 200, 20))),
    ]
    corrupt = generated(job, 2, "a yellow cross", png((1, 2, 3))[:60])
    no_prompt = generated(job, 3, "  ", png((9, 9, 9)))
    lock = threading.Lock()
    audits: dict[str, events_pb2.AuditResult] = {}
    keys: dict[str, bytes | None] = {}
    dead: dict[bytes | None, Delivery] = {}

    def on_audit(message: events_pb2.AuditResult, delivery: Delivery) -> None:
        if message.subject_id.startswith(job):
            with lock:
                audits[message.subject_id] = message
                keys[message.subject_id] = delivery.key

    def on_dead(_: bytes, delivery: Delivery) -> None:
        if delivery.key and delivery.key.startswith(job.encode()):
            with lock:
                dead[delivery.key] = delivery

    with make_bus(settings) as bus:
        observers = [
            bus.subscribe(topics.AUDIT, f"obs-{job}", on_audit, events_pb2.AuditResult).start(),
            bus.subscribe_raw(dlq_topic(topics.GENERATED), f"dlq-{job}", on_dead).start(),
        ]
        try:
            for event in (good[0], corrupt, good[1], no_prompt):
                bus.publish(topics.GENERATED, f"{job}/{event.prompt_index}", event)
            bus.flush()
            wait_until(lambda: len(audits) >= 2, "AuditResults of both good events")
            wait_until(lambda: len(dead) >= 2, "the corrupt image and empty prompt in the DLQ")

            assert sorted(audits) == [f"{job}/0", f"{job}/1"]
            first = audits[f"{job}/0"]
            assert keys[f"{job}/0"] == f"{job}/0".encode()
            assert first.text == good[0].prompt
            assert first.model.name == "tiny-scorer" and first.model.version.startswith("local-")
            assert 0.0 <= first.aligned_probability <= 1.0
            assert first.HasField("audited_at")
            for result in audits.values():
                for word in result.flagged_words:
                    assert result.text[word.span.start : word.span.end] == word.word
                    assert word.attribution < 0

            bad_image = dead[f"{job}/2".encode()].headers
            assert bad_image[DlqHeaders.ERROR].startswith("image.data: ")
            assert bad_image[DlqHeaders.EXCEPTION].endswith("InvalidArgument")
            assert dead[f"{job}/3".encode()].headers[DlqHeaders.ERROR] == "prompt: is empty"

            # The same verdict on a replay (deterministic scorer), and the API still answers.
            bus.publish(topics.GENERATED, f"{job}/0", good[0])
            bus.flush()
            before = first.alignment_score
            wait_until(lambda: audits[f"{job}/0"] is not first, "the replayed event's audit")
            assert audits[f"{job}/0"].alignment_score == pytest.approx(before, abs=1e-5)
            with Concord(settings) as sdk:
                assert len(sdk.score([(png((1, 1, 1)), "a black square")]).scores) == 1
        finally:
            for observer in observers:
                observer.stop()
