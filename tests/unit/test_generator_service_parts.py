"""The generator service's parts without a model: defaults and limits of request validation,
the gate that admits one torch job at a time, the bounded job table, and concepts in a real
(sqlite) MLflow registry: registered once per job, listed by tag, NOT_FOUND when missing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from concord.config import GeneratorSettings
from concord.errors import InvalidArgument, NotFound, ResourceExhausted
from concord.models.diffusion.pipeline import ConceptWeights
from concord.registry import Registry
from services.generator.concepts import ConceptCatalog
from services.generator.jobs import JobRecord, JobTable
from services.generator.params import (
    DEFAULT_CLASS_WORD,
    DEFAULT_CUSTOMIZE_STEPS,
    ModelShape,
    customize_params,
    generate_params,
)
from services.generator.servable import Gate

LIMITS = GeneratorSettings(max_steps=100, default_steps=30, default_guidance_scale=4.0)
MODEL = ModelShape(image_size=32, layout=True)


def params(**changes: object):  # type: ignore[no-untyped-def]
    fields: dict[str, object] = {
        "prompts": ["a red circle"],
        "seed": 0,
        "steps": 0,
        "guidance_scale": 0.0,
        "sampler": "",
        "width": 0,
        "height": 0,
        "with_layout": True,
        "preview_every": 0,
        "concept": "",
        "unwanted": (),
        "alpha": 0.0,
        "directions": 0,
    }
    fields.update(changes)
    return generate_params(**fields, model=MODEL, limits=LIMITS)  # type: ignore[arg-type]


def test_zero_means_the_settings_default() -> None:
    p = params()
    assert (p.steps, p.guidance_scale, p.sampler, p.directions) == (30, 4.0, "ddim", 1)
    explicit = params(steps=7, guidance_scale=1.5, sampler="ddpm", width=32, height=32)
    assert (explicit.steps, explicit.guidance_scale, explicit.sampler) == (7, 1.5, "ddpm")


def test_every_bad_field_is_reported_at_once_with_a_prefix() -> None:
    with pytest.raises(InvalidArgument) as caught:
        params(prompts=["", "ok"], steps=101, alpha=float("nan"), sampler="euler")
    fields = [v.field for v in caught.value.violations]
    assert fields == ["prompts[0]", "steps", "sampler", "concept.alpha"]
    with pytest.raises(InvalidArgument) as prefixed:
        params(prompts=[], prefix="generate.")
    assert [v.field for v in prefixed.value.violations] == ["generate.prompts"]


def test_customize_defaults_and_names() -> None:
    p = customize_params(concept="zorv", class_word="", steps=0, references=[object()])
    assert (p.class_word, p.steps) == (DEFAULT_CLASS_WORD, DEFAULT_CUSTOMIZE_STEPS)
    assert (
        customize_params(concept="zorv2", class_word=" Shape ", steps=5, references=[1]).class_word
        == "shape"
    )
    for bad in ("z", "Zorv", "zo rv", "2zorv", "zorv!", "x" * 33):
        with pytest.raises(InvalidArgument, match="not a concept name"):
            customize_params(concept=bad, class_word="", steps=1, references=[1])


def test_gate_admits_one_runner_and_a_bounded_queue() -> None:
    gate = Gate(max_waiting=1)
    first, second = gate.admit(), gate.admit()
    with pytest.raises(ResourceExhausted, match="busy"):
        gate.admit()
    third = gate.admit(wait=True)  # Kafka jobs are never refused: they wait their turn
    assert gate.admitted == 3
    order: list[str] = []
    entered = threading.Event()

    def waiter() -> None:
        with second.run():
            order.append("second")

    with first.run():
        thread = threading.Thread(target=waiter)
        thread.start()
        entered.wait(0.2)  # the waiter cannot enter while the first job runs
        order.append("first")
    thread.join(10)
    assert order == ["first", "second"]
    third.release()
    third.release()  # idempotent
    assert gate.admitted == 0


def test_job_table_updates_and_forgets_finished_jobs_first() -> None:
    table = JobTable(max_jobs=3)
    table.put(JobRecord("a", "customize"))
    table.put(JobRecord("b", "generate", "SUCCEEDED"))
    table.put(JobRecord("c", "generate", "FAILED"))
    assert table.update("a", state="RUNNING", progress=0.5).state == "RUNNING"  # type: ignore[union-attr]
    assert table.update("nope", state="RUNNING") is None
    table.put(JobRecord("d", "customize"))
    assert len(table) == 3 and table.get("b") is None  # the oldest finished job went
    assert table.get("a").progress == 0.5  # type: ignore[union-attr]


def concept(name: str = "zorv") -> ConceptWeights:
    state = {"down.weight": torch.ones(2, 4), "up.weight": torch.zeros(4, 2)}
    return ConceptWeights(name, "shape", 2, state, reference_count=3)


def test_concepts_are_registered_once_per_job_listed_by_tag_and_loaded(tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path / 'mlflow.db'}")
    catalog = ConceptCatalog(lambda: registry)
    assert catalog.list() == []
    with pytest.raises(NotFound, match=r"concept\.concept: concept 'zorv' is not registered"):
        catalog.load("zorv")
    first = catalog.register(concept(), "job-1")
    assert (first.name, first.version) == ("concord-concept-zorv", "1")
    assert catalog.register(concept(), "job-1") == first  # a replayed job changes nothing
    second = catalog.register(concept(), "job-2")
    assert second.version == "2"
    registry.client.create_registered_model("unrelated")  # not a concept: not listed
    (listed,) = catalog.list()
    assert (listed.name, listed.class_word, listed.reference_count) == ("zorv", "shape", 3)
    assert listed.model == second  # `production` follows the newest registration
    weights, model = catalog.load("zorv")
    assert model == second and weights.name == "zorv"
    assert torch.equal(weights.state["down.weight"], torch.ones(2, 4))
    with pytest.raises(NotFound, match=r"^generate\.concept: "):
        catalog.load("other", field="generate.concept")
