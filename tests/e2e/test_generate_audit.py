"""End to end: a generated image is scored with its flagged words.

1. `pipelines.train_generator.train` the `tiny` preset (32x32 GCDP, frozen MiniLM) briefly in
   a temporary sqlite MLflow store, registered as `concord-generator` and aliased `production`
   (quality is not asserted here: the generator report measures it).
2. Serve the generator (model resolved through the registry: `models:/concord-generator@
   production`) and the scorer (a scorer package over a tiny random encoder, as the scorer's
   own tests build it) on the real Kafka broker.
3. Publish a GenerationJob (GenerationSpec) to `concord.generation.jobs`; the generator
   publishes a `concord.generated` event with the image and its layout; the scorer's auditor
   consumes it and publishes an AuditResult on `concord.audit` for `<job_id>/0`, whose flagged
   words point into the prompt.
"""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Iterator

import pytest
import torch
from PIL import Image

from concord.bus import Delivery, make_bus, topics
from concord.clients import Concord
from concord.clients.generator import layout_from_tensor
from concord.config import Settings
from concord.proto.v1 import events_pb2
from pipelines.train_generator import MODEL_NAME, TrainConfig, train
from tests.fixtures.models import scorer_package, tiny_encoder
from tests.fixtures.serving import InProcessDeployment, free_ports
from tests.fixtures.waiting import wait_until
from tools.kafka.broker import KafkaBroker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PROMPT = "a red circle above a blue square"
TRAIN_STEPS = 60  # seconds on 2 cores; enough to register a model that runs end to end
WAIT = 180.0


@pytest.fixture(scope="module")
def settings(own_kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("generate-audit")
    # A random encoder has no opinion on words; the smallest threshold flags every word with a
    # negative attribution, so the verdict has words to compare with the scorer's own answer.
    package = scorer_package(root / "tiny-scorer", tiny_encoder(tmp_path_factory), threshold=1e-12)
    generator, scorer = free_ports(2)
    return Settings(
        home=root / "home",
        bus="kafka",
        kafka={
            "bootstrap_servers": own_kafka_broker.bootstrap,
            "group_prefix": f"t{uuid.uuid4().hex[:8]}",
            "max_retries": 1,
            "retry_backoff_seconds": 0.05,
        },
        serving={"ports": {"generator": generator, "scorer": scorer}, "metrics_port": 0},
        generator={"model": f"models:/{MODEL_NAME}@production"},
        scorer={"model": str(package)},
    )


@pytest.fixture(scope="module")
def trained(settings: Settings) -> int:
    before = torch.get_num_threads()
    try:
        result = train(
            TrainConfig(
                preset="tiny",
                steps=TRAIN_STEPS,
                batch_size=16,
                data_count=256,
                data_dir=settings.home / "data",
                out=settings.home / "generator",
                threads=1,
                checkpoint_every=10**6,
                sample_every=10**6,
                log_every=20,
                sample_steps=2,
                tracking_uri=settings.tracking_uri,
                register=True,
                alias="production",
                progress=False,
            )
        )
    finally:
        torch.set_num_threads(before)
    assert result.version is not None
    return result.version


@pytest.fixture(scope="module")
def served(settings: Settings, trained: int) -> Iterator[InProcessDeployment]:
    server = InProcessDeployment(["generator", "scorer"], settings)
    yield server
    server.close()


def test_a_generation_job_is_audited_with_its_flagged_words(
    settings: Settings, trained: int, served: InProcessDeployment
) -> None:
    with Concord(settings) as sdk:
        model = sdk.generator.model()
    assert model is not None and (model.name, model.version) == (MODEL_NAME, str(trained))

    job_id = f"e2e-{uuid.uuid4().hex[:8]}"
    lock = threading.Lock()
    generated: list[events_pb2.Generated] = []
    audits: list[events_pb2.AuditResult] = []

    def on_generated(message: events_pb2.Generated, _: Delivery) -> None:
        if message.job_id == job_id:
            with lock:
                generated.append(message)

    def on_audit(message: events_pb2.AuditResult, _: Delivery) -> None:
        if message.subject_id.startswith(f"{job_id}/"):
            with lock:
                audits.append(message)

    job = events_pb2.GenerationJob(
        job_id=job_id,
        generate=events_pb2.GenerationSpec(prompts=[PROMPT], seed=0, steps=10, with_layout=True),
    )
    with make_bus(settings) as bus:
        observers = [
            bus.subscribe(
                topics.GENERATED, f"obs-g-{job_id}", on_generated, events_pb2.Generated
            ).start(),
            bus.subscribe(
                topics.AUDIT, f"obs-a-{job_id}", on_audit, events_pb2.AuditResult
            ).start(),
        ]
        try:
            bus.publish(topics.GENERATION_JOBS, job_id, job)
            bus.flush()
            try:
                wait_until(lambda: bool(generated), "the Generated event", WAIT)
            except AssertionError as err:
                with Concord(settings) as sdk:
                    raise AssertionError(f"{err}; the job: {sdk.get_job(job_id)}") from None
            wait_until(lambda: bool(audits), "the AuditResult of the generated image", WAIT)
        finally:
            for observer in observers:
                observer.stop()

    (image,) = generated
    assert image.prompt == PROMPT and image.model.name == MODEL_NAME
    assert Image.open(io.BytesIO(image.image.data)).size == (32, 32)
    assert layout_from_tensor(image.layout).shape == (32, 32)

    audit = audits[0]
    assert audit.subject_id == f"{job_id}/0" and audit.text == PROMPT
    assert audit.model.name == "tiny-scorer"
    assert 0.0 <= audit.aligned_probability <= 1.0
    for word in audit.flagged_words:
        assert PROMPT[word.span.start : word.span.end] == word.word
    with Concord(settings) as sdk:
        assert sdk.get_job(job_id).state == "SUCCEEDED"
        # The audit carries the scorer's per-word verdict on exactly this image and prompt.
        explained = sdk.explain(image.image.data, PROMPT)
    flagged = [(w.word, (w.span.start, w.span.end)) for w in audit.flagged_words]
    assert flagged == [(w.word, w.span) for w in explained.flagged]
    assert len(explained.words) == len(PROMPT.split())
