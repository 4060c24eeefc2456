"""The generator's jobs through the real Kafka broker: Customize -> `concord.generation.jobs`
-> the worker fine-tunes and registers the concept -> GetJob SUCCEEDED -> ListConcepts shows
it -> Generate uses it; a GenerationSpec job -> one `concord.generated` event per prompt;
malformed jobs -> `concord.generation.jobs.dlq` with the reason, and GetJob says FAILED."""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from PIL import Image

from concord.bus import Delivery, DlqHeaders, make_bus, topics
from concord.clients import Concord
from concord.clients.generator import layout_from_tensor
from concord.config import Settings
from concord.proto.v1 import events_pb2
from tests.fixtures.media import png
from tests.fixtures.models import tiny_generator
from tests.fixtures.serving import InProcessDeployment, generator_settings
from tests.fixtures.waiting import wait_until as _wait_until
from tools.kafka.broker import KafkaBroker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WAIT = 120.0
JOBS, GENERATED = topics.GENERATION_JOBS, topics.GENERATED


def wait_until(cond: Callable[[], bool], what: str) -> None:
    _wait_until(cond, what, WAIT, interval=0.05)


@pytest.fixture(scope="module")
def settings(own_kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    kafka = {
        "bootstrap_servers": own_kafka_broker.bootstrap,
        "group_prefix": f"t{uuid.uuid4().hex[:8]}",
        "max_retries": 1,
        "retry_backoff_seconds": 0.05,
    }
    return generator_settings(
        tmp_path_factory.mktemp("generator-kafka"),
        str(tiny_generator(tmp_path_factory)),
        bus="kafka",
        kafka=kafka,
    )


@pytest.fixture(scope="module")
def served(settings: Settings) -> Iterator[InProcessDeployment]:
    server = InProcessDeployment(["generator"], settings)
    yield server
    server.close()


def test_customize_job_registers_a_concept_listed_and_usable(
    settings: Settings, served: InProcessDeployment
) -> None:
    references = [png((30, 200, 40), 24), png((40, 180, 60), 24)]
    with Concord(settings) as sdk:
        job = sdk.customize("quibble", references, class_word="shape", steps=10)
        assert job.state == "QUEUED"
        updates: list[str] = []
        done = sdk.generator.wait_job(
            job.id, timeout=WAIT, poll=0.1, on_update=lambda j: updates.append(j.state)
        )
        assert done.state == "SUCCEEDED", done.message
        assert "RUNNING" in updates or updates[0] == "SUCCEEDED"
        concepts = {c.name: c for c in sdk.list_concepts()}
        assert concepts["quibble"].reference_count == 2
        assert concepts["quibble"].model.name == "concord-concept-quibble"
        (image,) = sdk.generate(["a quibble shape"], seed=1, steps=2, concept="quibble")
        assert image.array.shape == (16, 16, 3)


def test_generation_job_publishes_one_generated_event_per_prompt(
    settings: Settings, served: InProcessDeployment
) -> None:
    job_id = f"gen-{uuid.uuid4().hex[:8]}"
    prompts = ["a red circle above a blue square", "a green star"]
    lock = threading.Lock()
    seen: list[tuple[events_pb2.Generated, Delivery]] = []

    def on_generated(message: events_pb2.Generated, delivery: Delivery) -> None:
        if message.job_id == job_id:
            with lock:
                seen.append((message, delivery))

    job = events_pb2.GenerationJob(
        job_id=job_id,
        generate=events_pb2.GenerationSpec(prompts=prompts, seed=9, steps=2, with_layout=True),
    )
    with make_bus(settings) as bus:
        observer = bus.subscribe(GENERATED, f"obs-{job_id}", on_generated, events_pb2.Generated)
        observer.start()
        try:
            bus.publish(JOBS, job_id, job)
            bus.flush()
            wait_until(lambda: len(seen) >= 2, "two Generated events")
        finally:
            observer.stop()
    events = sorted(seen, key=lambda item: item[0].prompt_index)
    assert [e.prompt_index for e, _ in events] == [0, 1]
    assert [e.prompt for e, _ in events] == prompts
    assert [e.seed for e, _ in events] == [9, 10]
    assert all(d.key == job_id.encode() for _, d in events)
    for event, _ in events:
        assert Image.open(io.BytesIO(event.image.data)).size == (16, 16)
        layout = layout_from_tensor(event.layout)
        assert layout.shape == (16, 16) and int(np.max(layout)) < 11
        assert event.model.name == "tiny-generator" and event.generated_at.seconds > 0
    with Concord(settings) as sdk:
        state = sdk.get_job(job_id)
    assert state.state == "SUCCEEDED" and "published 2 images" in state.message


def test_malformed_jobs_are_dead_lettered_with_the_reason(
    settings: Settings, served: InProcessDeployment
) -> None:
    tag = uuid.uuid4().hex[:8]
    bad = {
        f"{tag}-empty": events_pb2.GenerationJob(
            job_id=f"{tag}-empty", generate=events_pb2.GenerationSpec(prompts=["ok", ""])
        ),
        f"{tag}-nowork": events_pb2.GenerationJob(job_id=f"{tag}-nowork"),
        f"{tag}-concept": events_pb2.GenerationJob(
            job_id=f"{tag}-concept",
            customize=events_pb2.CustomizationSpec(concept="x"),
        ),
    }
    lock = threading.Lock()
    dead: dict[str, Delivery] = {}

    def on_dead(_: bytes, delivery: Delivery) -> None:
        key = (delivery.key or b"").decode()
        if key.startswith(tag):
            with lock:
                dead[key] = delivery

    with make_bus(settings) as bus:
        observer = bus.subscribe_raw(f"{JOBS}.dlq", f"dlq-{tag}", on_dead).start()
        try:
            for key, job in bad.items():
                bus.publish(JOBS, key, job)
            bus.flush()
            wait_until(lambda: len(dead) == len(bad), "every malformed job in the DLQ")
        finally:
            observer.stop()
    errors = {k: d.headers[DlqHeaders.ERROR] for k, d in dead.items()}
    assert errors[f"{tag}-empty"].startswith("generate.prompts[1]: is empty")
    assert errors[f"{tag}-nowork"].startswith("work: ")
    assert "customize.concept" in errors[f"{tag}-concept"]
    assert "customize.references" in errors[f"{tag}-concept"]
    assert all(d.headers[DlqHeaders.REASON] == "handler-failed" for d in dead.values())
    with Concord(settings) as sdk:
        for key in bad:
            job = sdk.get_job(key)
            assert job.state == "FAILED" and job.message.startswith("invalid job")
