"""Aligned generation jobs through the real Kafka broker: a GenerationSpec with `aligned` set
makes the generator audit each prompt's tries with the scorer service (over gRPC) and publish
one `concord.generated` event per prompt carrying the best try's image and the audit trail;
a bad policy is dead-lettered naming `generate.aligned.<field>`."""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Iterator

import pytest
from PIL import Image

from concord.bus import Delivery, DlqHeaders, make_bus, topics
from concord.clients import Concord
from concord.config import Settings
from concord.proto.v1 import events_pb2, generator_pb2
from tests.fixtures.models import scorer_package, tiny_encoder, tiny_generator
from tests.fixtures.serving import InProcessDeployment, generator_settings
from tests.fixtures.waiting import wait_until
from tools.kafka.broker import KafkaBroker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WAIT = 120.0
JOBS, GENERATED = topics.GENERATION_JOBS, topics.GENERATED


@pytest.fixture(scope="module")
def settings(own_kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("generate-aligned-kafka")
    package = scorer_package(root / "tiny-scorer", tiny_encoder(tmp_path_factory), threshold=1e-12)
    kafka = {
        "bootstrap_servers": own_kafka_broker.bootstrap,
        "group_prefix": f"t{uuid.uuid4().hex[:8]}",
        "max_retries": 1,
        "retry_backoff_seconds": 0.05,
    }
    return generator_settings(
        root,
        str(tiny_generator(tmp_path_factory)),
        bus="kafka",
        kafka=kafka,
        scorer={"model": str(package)},
    )


@pytest.fixture(scope="module")
def served(settings: Settings) -> Iterator[InProcessDeployment]:
    server = InProcessDeployment(["generator", "scorer"], settings)
    yield server
    server.close()


def _run_job(
    settings: Settings, job: events_pb2.GenerationJob, count: int
) -> list[events_pb2.Generated]:
    lock = threading.Lock()
    seen: list[events_pb2.Generated] = []

    def on_generated(message: events_pb2.Generated, _: Delivery) -> None:
        if message.job_id == job.job_id:
            with lock:
                seen.append(message)

    with make_bus(settings) as bus:
        observer = bus.subscribe(GENERATED, f"obs-{job.job_id}", on_generated, events_pb2.Generated)
        observer.start()
        try:
            bus.publish(JOBS, job.job_id, job)
            bus.flush()
            wait_until(lambda: len(seen) >= count, f"{count} Generated events", WAIT, interval=0.05)
        finally:
            observer.stop()
    return sorted(seen, key=lambda e: e.prompt_index)


def test_an_aligned_job_publishes_the_best_image_with_its_audit_trail(
    settings: Settings, served: InProcessDeployment
) -> None:
    prompts = ["a red circle", "a blue square"]
    never = events_pb2.GenerationJob(
        job_id=f"aligned-{uuid.uuid4().hex[:8]}",
        generate=events_pb2.GenerationSpec(
            prompts=prompts,
            seed=100,
            steps=2,
            with_layout=True,
            aligned=generator_pb2.AlignmentPolicy(max_tries=3, min_score=1.0),
        ),
    )
    events = _run_job(settings, never, 2)
    assert [e.prompt for e in events] == prompts
    for i, event in enumerate(events):
        assert not event.aligned_passed
        assert [t.index for t in event.tries] == [0, 1, 2]
        assert [t.seed for t in event.tries] == [100 + 3 * i + k for k in range(3)]
        scores = [t.score.aligned_probability for t in event.tries]
        best = event.tries[scores.index(max(scores))]
        assert event.seed == best.seed  # the image is the best try's
        assert Image.open(io.BytesIO(event.image.data)).size == (16, 16)
        for t in event.tries:
            for w in t.flagged:
                assert event.prompt[w.span.start : w.span.end] == w.word
    with Concord(settings) as sdk:
        state = sdk.get_job(never.job_id)
    assert state.state == "SUCCEEDED" and "0 passed the audit" in state.message

    always = events_pb2.GenerationJob(
        job_id=f"aligned-{uuid.uuid4().hex[:8]}",
        generate=events_pb2.GenerationSpec(
            prompts=["a green star"],
            seed=7,
            steps=2,
            aligned=generator_pb2.AlignmentPolicy(max_tries=4, min_score=1e-6, word_threshold=1e9),
        ),
    )
    (event,) = _run_job(settings, always, 1)
    assert event.aligned_passed and len(event.tries) == 1 and event.tries[0].passed
    assert event.seed == 7 and not event.tries[0].flagged


def test_a_bad_alignment_policy_is_dead_lettered_naming_the_field(
    settings: Settings, served: InProcessDeployment
) -> None:
    job_id = f"aligned-bad-{uuid.uuid4().hex[:8]}"
    job = events_pb2.GenerationJob(
        job_id=job_id,
        generate=events_pb2.GenerationSpec(
            prompts=["a red circle"], aligned=generator_pb2.AlignmentPolicy(max_tries=9)
        ),
    )
    dead: list[Delivery] = []

    def on_dead(_: bytes, delivery: Delivery) -> None:
        if delivery.key == job_id.encode():
            dead.append(delivery)

    with make_bus(settings) as bus:
        observer = bus.subscribe_raw(f"{JOBS}.dlq", f"dlq-{job_id}", on_dead).start()
        try:
            bus.publish(JOBS, job_id, job)
            bus.flush()
            wait_until(lambda: bool(dead), "the bad job in the DLQ", WAIT, interval=0.05)
        finally:
            observer.stop()
    assert dead[0].headers[DlqHeaders.ERROR].startswith("generate.aligned.max_tries: is 9")
    with Concord(settings) as sdk:
        assert sdk.get_job(job_id).state == "FAILED"
