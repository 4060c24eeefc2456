"""The generator service over real sockets, on a tiny randomly initialised generator saved to
tmp: streaming order (progress, previews, then results), layouts and legends, reproducibility
by seed, validation errors naming fields, cancellation that stops the denoising loop, load
shedding, and a service without a model that still answers what it can."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from concord.clients import Concord, Connection
from concord.clients.generator import GenerationCancelled, GeneratorClient, generate_request
from concord.config import Settings
from concord.errors import FailedPrecondition, InvalidArgument, NotFound
from concord.proto.v1 import generator_pb2, generator_pb2_grpc
from concord.serving.errors import field_violations
from tests.fixtures.media import png
from tests.fixtures.models import tiny_generator
from tests.fixtures.serving import InProcessDeployment, generator_settings
from tests.fixtures.waiting import wait_until

WAIT = 120.0


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[InProcessDeployment, Settings]]:
    model = tiny_generator(tmp_path_factory)
    settings = generator_settings(tmp_path_factory.mktemp("generator"), str(model))
    server = InProcessDeployment(["generator"], settings)
    yield server, settings
    server.close()


@pytest.fixture(scope="module")
def client(served: tuple[InProcessDeployment, Settings]) -> Iterator[GeneratorClient]:
    with Concord(served[1]) as sdk:
        yield sdk.generator


@pytest.fixture(scope="module")
def stub(
    served: tuple[InProcessDeployment, Settings],
) -> Iterator[generator_pb2_grpc.GeneratorServiceStub]:
    with Connection(f"127.0.0.1:{served[1].serving.port_for('generator')}") as conn:
        yield generator_pb2_grpc.GeneratorServiceStub(conn.channel)


def servable(served: tuple[InProcessDeployment, Settings]):  # type: ignore[no-untyped-def]
    return served[0].servicer("generator").servable


def test_streams_progress_with_previews_then_one_result_per_prompt(
    stub: generator_pb2_grpc.GeneratorServiceStub,
) -> None:
    request = generate_request(
        ["a red circle", "a blue square above a green star"],
        seed=5,
        steps=4,
        guidance_scale=2.0,
        preview_every=2,
    )
    events = list(stub.Generate(request, timeout=WAIT))
    kinds = [e.WhichOneof("event") for e in events]
    first_result = kinds.index("result")
    assert set(kinds[:first_result]) == {"progress"} and set(kinds[first_result:]) == {"result"}
    progress = [e.progress for e in events[:first_result]]
    # Steps 1 and 3: one batch-wide event; steps 2 and 4: one per prompt, each with a preview.
    assert [(p.step, p.prompt_index) for p in progress] == [
        (1, 0), (2, 0), (2, 1), (3, 0), (4, 0), (4, 1)
    ]  # fmt: skip
    assert all(p.total_steps == 4 for p in progress)
    assert [p.HasField("preview") for p in progress] == [False, True, True, False, True, True]
    preview = Image.open(io.BytesIO(progress[1].preview.data))
    assert preview.format == "PNG" and preview.size == (16, 16)

    results = [e.result for e in events[first_result:]]
    assert [r.prompt_index for r in results] == [0, 1]
    assert [r.seed for r in results] == [5, 6]
    for r in results:
        image = Image.open(io.BytesIO(r.image.data))
        assert image.format == "PNG" and image.size == (16, 16) and image.mode == "RGB"
        assert r.image.media_type == "image/png"
        assert r.model.name == "tiny-generator" and r.model.version.startswith("local-")
        class_map = r.layout.class_map
        assert list(class_map.shape) == [16, 16] and len(class_map.data) == 256
        legend = dict(r.layout.legend)
        assert legend[0] == "background" and "circle" in legend.values()
        assert max(class_map.data) < len(legend)


def test_same_seed_same_images_and_batch_mates_do_not_matter(client: GeneratorClient) -> None:
    prompts = ["a red circle", "a green cross"]
    first = client.generate(prompts, seed=11, steps=3, sampler="ddpm")
    again = client.generate(prompts, seed=11, steps=3, sampler="ddpm")
    other = client.generate(prompts, seed=12, steps=3, sampler="ddpm")
    assert [a.png for a in first] == [b.png for b in again]
    assert first[0].png != other[0].png
    assert first[0].layout is not None and np.array_equal(first[0].layout, again[0].layout)
    # Image i is drawn with seed + i: the second prompt alone with seed 12 is the same image.
    (alone,) = client.generate(["a green cross"], seed=12, steps=3, sampler="ddpm")
    assert alone.seed == 12 and np.array_equal(alone.array, first[1].array)
    assert first[1].array.shape == (16, 16, 3) and first[1].array.dtype == np.uint8
    assert set(first[0].classes_present()) <= set(first[0].legend)


@pytest.mark.parametrize(
    ("request_fields", "field", "says"),
    [
        ({"prompts": []}, "prompts", "empty"),
        ({"prompts": ["ok", "  "]}, "prompts[1]", "empty"),
        ({"prompts": ["x" * 301]}, "prompts[0]", "limit is 300"),
        ({"prompts": ["a"] * 5}, "prompts", "limit per request is 4"),
        ({"steps": 401}, "steps", "between 1 and 400"),
        ({"steps": -1}, "steps", "between 1 and 400"),
        ({"guidance_scale": -1.0}, "guidance_scale", ">= 0"),
        ({"width": 64}, "width", "16x16 only"),
        ({"height": 4096}, "height", "between 1 and 128"),
        ({"preview_every": -2}, "preview_every", ">= 0"),
        ({"sampler": 7}, "sampler", "unknown sampler"),
        (
            {"concept": generator_pb2.ConceptGuidance(unwanted=["red"], alpha=1.5)},
            "concept.alpha",
            "between 0 and 1",
        ),
        (
            {"concept": generator_pb2.ConceptGuidance(unwanted=["red"], directions=-1)},
            "concept.directions",
            "between 1 and",
        ),
        (
            {"concept": generator_pb2.ConceptGuidance(concept="Bad Name!")},
            "concept.concept",
            "not a concept name",
        ),
    ],
)
def test_bad_requests_name_the_field(
    stub: generator_pb2_grpc.GeneratorServiceStub,
    request_fields: dict[str, object],
    field: str,
    says: str,
) -> None:
    request = generator_pb2.GenerateRequest(prompts=["a red circle"], steps=2)
    for key, value in request_fields.items():
        if key == "prompts":
            del request.prompts[:]
            request.prompts.extend(value)  # type: ignore[arg-type]
        elif key == "concept":
            request.concept.CopyFrom(value)  # type: ignore[arg-type]
        else:
            setattr(request, key, value)
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Generate(request, timeout=WAIT))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(caught.value)
    assert field in violations, violations
    assert says in violations[field]


def test_size_zero_or_the_models_own_is_served(client: GeneratorClient) -> None:
    request = generate_request(["a star"], steps=1)
    request.width, request.height = 16, 0
    events = list(client.stream(request))
    assert events[-1].array.shape == (16, 16, 3)  # type: ignore[union-attr]


def test_unknown_concept_is_not_found_naming_the_field(client: GeneratorClient) -> None:
    with pytest.raises(NotFound, match=r"concept\.concept: concept 'zorvian' is not registered"):
        client.generate(["a zorvian shape"], steps=1, concept="zorvian")


def test_sdk_errors_carry_field_violations(client: GeneratorClient) -> None:
    with pytest.raises(InvalidArgument) as caught:
        client.generate(["fine", ""], steps=1)
    assert [v.field for v in caught.value.violations] == ["prompts[1]"]


def test_cancelled_call_stops_the_denoising_loop(
    served: tuple[InProcessDeployment, Settings], client: GeneratorClient
) -> None:
    model = servable(served)
    started = model.steps_done
    seen: list[int] = []

    def on_progress(p):  # type: ignore[no-untyped-def]
        seen.append(p.step)
        return p.step < 2  # cancel after the second step

    with pytest.raises(GenerationCancelled):
        client.generate(["a red circle"], steps=400, on_progress=on_progress)
    # The worker thread notices at its next step and leaves the gate.
    wait_until(lambda: model.gate.admitted == 0, "the cancelled generation to stop", WAIT)
    stopped_at = model.steps_done
    assert stopped_at - started < 400
    # Nothing keeps running: a short generation now goes through and the counter moves only by it.
    client.generate(["a blue square"], steps=2)
    assert model.steps_done == stopped_at + 2
    assert seen[:2] == [1, 2]


def test_busy_generator_sheds_load_with_resource_exhausted(
    served: tuple[InProcessDeployment, Settings], client: GeneratorClient
) -> None:
    model = servable(served)
    model.gate.max_waiting = 0
    running = threading.Event()
    release = threading.Event()
    outcome: list[BaseException] = []

    def long_call() -> None:
        def hold(p):  # type: ignore[no-untyped-def]
            running.set()
            return not release.is_set()

        try:
            client.generate(["a green cross"], steps=400, on_progress=hold)
        except BaseException as err:  # recorded for the assert below
            outcome.append(err)

    thread = threading.Thread(target=long_call)
    thread.start()
    try:
        assert running.wait(WAIT)
        from concord.errors import ResourceExhausted

        with pytest.raises(ResourceExhausted, match="busy"):
            client.generate(["a red circle"], steps=1)
    finally:
        release.set()
        thread.join(WAIT)
        model.gate.max_waiting = 4
    assert outcome and isinstance(outcome[0], GenerationCancelled)
    wait_until(lambda: model.gate.admitted == 0, "the long generation to stop", WAIT)


def test_get_info_reports_the_served_model(client: GeneratorClient) -> None:
    model = client.model()
    assert model is not None and model.name == "tiny-generator"


def test_customize_validates_names_references_and_steps(
    stub: generator_pb2_grpc.GeneratorServiceStub,
) -> None:
    from concord.proto.v1 import common_pb2

    request = generator_pb2.CustomizeRequest(
        concept="Zorv!",
        references=[
            common_pb2.Image(data=png((200, 30, 30), 24)),
            common_pb2.Image(data=png((1, 2, 3), 24)[:40]),
        ],
        steps=100000,
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.Customize(request, timeout=WAIT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(caught.value)
    assert set(violations) == {"concept", "steps", "references[1].data"}
    with pytest.raises(grpc.RpcError) as empty:
        stub.Customize(generator_pb2.CustomizeRequest(concept="zorv"), timeout=WAIT)
    assert "references" in field_violations(empty.value)


def test_get_job_of_an_unknown_id_is_not_found(client: GeneratorClient) -> None:
    with pytest.raises(NotFound, match="not known"):
        client.get_job("no-such-job")


def test_customize_job_registers_a_concept_that_generate_can_use(
    client: GeneratorClient,
) -> None:
    """Through the embedded bus: Customize -> job -> SUCCEEDED -> listed -> usable."""
    references = [png((220, 40, 40), 24), png((200, 60, 30), 24), png((230, 30, 60), 24)]
    job = client.customize("zorv", references, class_word="shape", steps=20)
    assert job.state == "QUEUED" and job.concept == "zorv" and job.id
    done = client.wait_job(job.id, timeout=WAIT, poll=0.1)
    assert done.state == "SUCCEEDED", done.message
    assert done.progress == 1.0 and "concord-concept-zorv" in done.message
    (concept,) = [c for c in client.list_concepts() if c.name == "zorv"]
    assert concept.class_word == "shape" and concept.reference_count == 3
    assert concept.model.name == "concord-concept-zorv" and concept.model.version == "1"
    plain, tuned = (
        client.generate(["a zorv shape"], seed=3, steps=2, concept=c)[0] for c in ("", "zorv")
    )
    assert plain.png != tuned.png  # the LoRA changed the U-Net for this call
    (again,) = client.generate(["a zorv shape"], seed=3, steps=2)
    assert again.png == plain.png  # ... and only for that call
    decor = client.generate(
        ["a zorv shape"], seed=3, steps=2, concept="zorv", unwanted=["red"], alpha=1.0
    )[0]
    assert decor.png != tuned.png


def test_list_concepts_refuses_an_oversized_page(
    stub: generator_pb2_grpc.GeneratorServiceStub,
) -> None:
    from concord.proto.v1 import common_pb2

    request = generator_pb2.ListConceptsRequest(page=common_pb2.PageRequest(page_size=5000))
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListConcepts(request, timeout=WAIT)
    assert "page.page_size" in field_violations(caught.value)


def test_without_a_model_the_service_serves_but_generate_fails_clearly(
    tmp_path: Path,
) -> None:
    settings = generator_settings(tmp_path, str(tmp_path / "no-such-model"))
    server = InProcessDeployment(["generator"], settings)
    try:
        with Concord(settings) as sdk:
            conn = Connection(f"127.0.0.1:{settings.serving.port_for('generator')}")
            assert conn.health() == "SERVING"
            conn.close()
            assert sdk.generator.model() is None
            with pytest.raises(FailedPrecondition, match=r"no-such-model.*not a generator"):
                sdk.generate(["a red circle"])
            with pytest.raises(FailedPrecondition):
                sdk.customize("zorv", [png((1, 2, 3), 24)])
            assert sdk.list_concepts() == []
    finally:
        server.close()
