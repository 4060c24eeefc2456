"""The linker service over real sockets, on a tiny random linker package (a tiny encoder + a
random M3EL) and the embedded Qdrant engine: upsert -> link -> delete -> replay -> restart
(the knowledge base persists), the served ranking equal to M3EL over the whole KB in process,
per-matcher scores present only where a matcher applies, bad input naming fields, UMAEA on a
small planted graph pair (streamed, and as a job with its result fetched by RPC), and a
service that stays up without a model."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch

from concord.clients import Connection
from concord.config import Settings
from concord.proto.v1 import common_pb2, linker_pb2, linker_pb2_grpc
from concord.serving.errors import field_violations
from concord.wire import payload_from_dict
from tests.fixtures.media import png
from tests.fixtures.models import linker_package, tiny_encoder
from tests.fixtures.serving import InProcessDeployment, free_ports
from tests.fixtures.waiting import wait_until

TIMEOUT = 30.0
MAX_MENTIONS = 8
MAX_ENTITIES = 16
# A short UMAEA run: the planted graphs are tiny.
FAST_UMAEA = {"dim": 32, "stage1_epochs": 80, "stage2_epochs": 10, "stage3_epochs": 20}

COLOURS = [(220, 30, 30), (30, 30, 220), (30, 200, 30), (240, 200, 20), (160, 40, 200)]


def linker_settings(tmp: Path, model: str, **extra: Any) -> Settings:
    """Settings for the linker serving package `model` (home under `tmp`) with small limits;
    `candidates` covers a whole tiny KB, so the served ranking is the full-KB ranking."""
    (linker,) = free_ports(1)
    linker_config = {
        "model": model,
        "max_mentions_per_request": MAX_MENTIONS,
        "max_entities_per_request": MAX_ENTITIES,
        "max_text_chars": 200,
        "max_top_k": 20,
        "candidates": 32,
        "max_graph_entities": 64,
        **extra.pop("linker", {}),
    }
    return Settings(
        home=tmp / "home",
        linker=linker_config,
        serving={"ports": {"linker": linker}, "metrics_port": 0},
        **extra,
    )


def tiny_linker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random linker package (once per session) whose UMAEA runs are short."""
    directory = tmp_path_factory.getbasetemp() / "tiny-linker"
    if not (directory / "linker.json").is_file():
        linker_package(directory, tiny_encoder(tmp_path_factory))
        meta = json.loads((directory / "linker.json").read_text())
        meta["umaea"] = FAST_UMAEA
        (directory / "linker.json").write_text(json.dumps(meta))
    return directory


def image(colour: tuple[int, int, int]) -> common_pb2.Image:
    return common_pb2.Image(data=png(colour), media_type="image/png")


def entity(i: int, *, images: int = 1, text: bool = True) -> linker_pb2.Entity:
    return linker_pb2.Entity(
        id=f"e{i}",
        name=f"Shape {i % 3}" if text else "",
        description=f"a {['small', 'large'][i % 2]} shape number {i}" if text else "",
        images=[image(COLOURS[(i + k) % len(COLOURS)]) for k in range(images)],
        attributes=payload_from_dict({"size": ["small", "large"][i % 2]}) if text else None,
    )


ENTITIES = [
    entity(0),
    entity(1, images=2),
    entity(2, images=0),  # text only: no "image" vector
    entity(3),
    entity(4, images=1, text=False),  # image only
    entity(5, images=0),
]


def mention(
    text: str, start: int, end: int, colour: tuple[int, int, int] | None = None
) -> linker_pb2.Mention:
    kwargs: dict[str, Any] = {"image": image(colour)} if colour is not None else {}
    return linker_pb2.Mention(text=text, span=common_pb2.Span(start=start, end=end), **kwargs)


MENTIONS = [
    mention("I saw Shape 1 today, the large one", 6, 13, COLOURS[1]),
    mention("Shape 2 was small", 0, 7),
]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_linker(tmp_path_factory)


@pytest.fixture(scope="module")
def served(
    package: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[InProcessDeployment, Settings]]:
    settings = linker_settings(
        tmp_path_factory.mktemp("linker"),
        str(package),
        batching={"max_batch_size": 16, "max_delay_ms": 30, "max_queue": 64},
    )
    server = InProcessDeployment(["linker"], settings)
    yield server, settings
    server.close()


@pytest.fixture(scope="module")
def stub(
    served: tuple[InProcessDeployment, Settings],
) -> Iterator[linker_pb2_grpc.LinkerServiceStub]:
    with Connection(served[1].serving.address_for("linker")) as conn:
        yield linker_pb2_grpc.LinkerServiceStub(conn.channel)


def upsert(
    stub: linker_pb2_grpc.LinkerServiceStub, kb: str, entities: list[linker_pb2.Entity]
) -> int:
    reply = stub.UpsertEntities(
        linker_pb2.UpsertEntitiesRequest(knowledge_base=kb, entities=entities), timeout=TIMEOUT
    )
    return reply.upserted


def link(
    stub: linker_pb2_grpc.LinkerServiceStub, kb: str, mentions: list[Any], top_k: int = 3
) -> linker_pb2.LinkMentionsResponse:
    return stub.LinkMentions(
        linker_pb2.LinkMentionsRequest(knowledge_base=kb, mentions=mentions, top_k=top_k),
        timeout=TIMEOUT,
    )


def counts(stub: linker_pb2_grpc.LinkerServiceStub) -> dict[str, int]:
    listed = stub.ListKnowledgeBases(linker_pb2.ListKnowledgeBasesRequest(), timeout=TIMEOUT)
    return {kb.name: kb.entities for kb in listed.knowledge_bases}


def ranking(reply: linker_pb2.LinkMentionsResponse) -> list[list[tuple[str, float]]]:
    return [[(c.entity_id, round(c.score, 4)) for c in links.candidates] for links in reply.links]


def full_kb_ranking(servable: Any, top_k: int) -> list[list[str]]:
    """M3EL over every entity of ENTITIES in process (no ANN, no store): what the service
    must answer when its candidates cover the KB."""
    from concord.media import decode_image
    from concord.models.linking.features import (
        entity_text,
        featurize_entities,
        featurize_mentions,
    )
    from concord.models.preprocess import images_to_tensor
    from concord.wire import payload_to_dict
    from services.linker.servable import NO_TEXT

    loaded = servable.require()
    encoder, tokenizer, size = (
        loaded.encoder.torch_model(),
        loaded.encoder.tokenizer,
        loaded.image_size,
    )
    texts = [
        entity_text(e.name, e.description, payload_to_dict(e.attributes)) or NO_TEXT
        for e in ENTITIES
    ]
    pixels = [
        images_to_tensor([decode_image(i.data) for i in e.images], size) if e.images else None
        for e in ENTITIES
    ]
    m_pixels = [
        images_to_tensor([decode_image(m.image.data)], size)[0] if m.HasField("image") else None
        for m in MENTIONS
    ]
    with torch.inference_mode():
        ents = featurize_entities(encoder, tokenizer, texts, pixels)
        ments = featurize_mentions(
            encoder,
            tokenizer,
            [m.text for m in MENTIONS],
            [(m.span.start, m.span.end) for m in MENTIONS],
            m_pixels,
        )
        final = loaded.m3el.match(ments, ents).final
    order = torch.argsort(final, dim=1, descending=True)[:, :top_k]
    return [[ENTITIES[j].id for j in row] for row in order.tolist()]


# ----------------------------------------------------------------------------- tests


def test_upsert_link_delete_replay(
    served: tuple[InProcessDeployment, Settings], stub: linker_pb2_grpc.LinkerServiceStub
) -> None:
    assert upsert(stub, "shapes", ENTITIES) == len(ENTITIES)
    assert counts(stub)["shapes"] == len(ENTITIES)
    listed = stub.ListKnowledgeBases(linker_pb2.ListKnowledgeBasesRequest(), timeout=TIMEOUT)
    assert [kb.model.name for kb in listed.knowledge_bases if kb.name == "shapes"] == [
        "tiny-linker"
    ]

    reply = link(stub, "shapes", MENTIONS, top_k=4)
    assert reply.model.name == "tiny-linker" and reply.model.version.startswith("local-")
    assert len(reply.links) == 2 and all(len(x.candidates) == 4 for x in reply.links)
    servable = served[0].servicer("linker").servable
    assert [[c.entity_id for c in x.candidates] for x in reply.links] == full_kb_ranking(
        servable, 4
    )
    by_id = {e.id: e for e in ENTITIES}
    for links, m in zip(reply.links, MENTIONS, strict=True):
        scores = [c.score for c in links.candidates]
        assert scores == sorted(scores, reverse=True)
        for c in links.candidates:
            assert c.HasField("text_coarse") and c.HasField("text_fine")
            entity_image = bool(by_id[c.entity_id].images)
            # A matcher that does not apply is absent, not zero: visual needs both images,
            # cross-modal (text->visual at least) the entity's.
            assert c.HasField("visual") == (m.HasField("image") and entity_image)
            assert c.HasField("cross_modal") == entity_image
            present = [
                getattr(c, f)
                for f in ("text_coarse", "text_fine", "visual", "cross_modal")
                if c.HasField(f)
            ]
            assert c.score == pytest.approx(float(np.mean(present)), abs=1e-4)
            assert c.name == by_id[c.entity_id].name

    # Upserting the same entities again (a replay) changes nothing.
    assert upsert(stub, "shapes", ENTITIES) == len(ENTITIES)
    assert counts(stub)["shapes"] == len(ENTITIES)
    assert ranking(link(stub, "shapes", MENTIONS, top_k=4)) == ranking(reply)

    # Delete: the entity is gone from counts and from candidates; a repeat deletes nothing.
    top = reply.links[0].candidates[0].entity_id
    deleted = stub.DeleteEntities(
        linker_pb2.DeleteEntitiesRequest(knowledge_base="shapes", ids=[top, "no-such-id"]),
        timeout=TIMEOUT,
    )
    assert deleted.deleted == 1
    again = stub.DeleteEntities(
        linker_pb2.DeleteEntitiesRequest(knowledge_base="shapes", ids=[top]), timeout=TIMEOUT
    )
    assert again.deleted == 0
    assert counts(stub)["shapes"] == len(ENTITIES) - 1
    after = link(stub, "shapes", MENTIONS, top_k=10)
    assert all(top not in [c.entity_id for c in x.candidates] for x in after.links)
    assert all(len(x.candidates) == len(ENTITIES) - 1 for x in after.links)


def test_knowledge_base_survives_a_restart(package: Path, tmp_path: Path) -> None:
    settings = linker_settings(tmp_path, str(package))
    first = InProcessDeployment(["linker"], settings)
    try:
        with Connection(settings.serving.address_for("linker")) as conn:
            stub = linker_pb2_grpc.LinkerServiceStub(conn.channel)
            upsert(stub, "kept", ENTITIES[:4])
            upsert(stub, "dropped", ENTITIES[4:])
            before = ranking(link(stub, "kept", MENTIONS))
            reply = stub.DeleteKnowledgeBase(
                linker_pb2.DeleteKnowledgeBaseRequest(name="dropped"), timeout=TIMEOUT
            )
            assert reply.deleted
    finally:
        first.close()
    second = InProcessDeployment(["linker"], settings)
    try:
        with Connection(settings.serving.address_for("linker")) as conn:
            stub = linker_pb2_grpc.LinkerServiceStub(conn.channel)
            assert counts(stub) == {"kept": 4}
            assert ranking(link(stub, "kept", MENTIONS)) == before
            with pytest.raises(grpc.RpcError) as gone:
                link(stub, "dropped", MENTIONS)
            assert gone.value.code() == grpc.StatusCode.NOT_FOUND
            assert "'dropped'" in (gone.value.details() or "")
    finally:
        second.close()


def test_concurrent_mentions_coalesce_into_batches(
    served: tuple[InProcessDeployment, Settings], stub: linker_pb2_grpc.LinkerServiceStub
) -> None:
    upsert(stub, "batched", ENTITIES)
    batcher = served[0].servicer("linker").servable.mentions
    batcher.batch_sizes.clear()
    texts = [f"Shape {i % 3} number {i}" for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda t: link(stub, "batched", [mention(t, 0, 7)]), texts))
    assert sum(batcher.batch_sizes) == 8 and max(batcher.batch_sizes) > 1, batcher.batch_sizes
    alone = link(stub, "batched", [mention(texts[5], 0, 7)])
    assert ranking(alone) == ranking(replies[5])


def test_bad_input_names_fields_and_service_keeps_serving(
    stub: linker_pb2_grpc.LinkerServiceStub,
) -> None:
    def invalid(call: Any, request: Any) -> dict[str, str]:
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        return field_violations(caught.value)

    corrupt = common_pb2.Image(data=png((1, 2, 3))[:40])
    bad_entities = [
        entity(0),
        linker_pb2.Entity(id="e1", name="x", images=[corrupt]),
        entity(2),
        linker_pb2.Entity(id="e3"),
        linker_pb2.Entity(id="", name="no id"),
        entity(0),
        linker_pb2.Entity(id="e6", name="x", attributes=payload_from_dict({"w": float("nan")})),
    ]
    fields = invalid(
        stub.UpsertEntities,
        linker_pb2.UpsertEntitiesRequest(knowledge_base="shapes", entities=bad_entities),
    )
    assert set(fields) == {
        "entities[1].images[0].data",
        "entities[3]",
        "entities[4].id",
        "entities[5].id",
        "entities[6].attributes",
    }
    assert "neither text" in fields["entities[3]"]
    assert "knowledge_base" in invalid(
        stub.UpsertEntities,
        linker_pb2.UpsertEntitiesRequest(knowledge_base="no/slashes", entities=[entity(0)]),
    )
    mentions = [
        mention("  ", 0, 1),
        mention("Shape 1", 0, 7),
        mention("Shape 1", 0, 7, None),
        mention("Shape 1", 3, 40),
    ]
    mentions[1].image.CopyFrom(corrupt)
    fields = invalid(
        stub.LinkMentions,
        linker_pb2.LinkMentionsRequest(knowledge_base="shapes", mentions=mentions, top_k=99),
    )
    assert set(fields) == {
        "mentions[0].text",
        "mentions[1].image.data",
        "mentions[3].span",
        "top_k",
    }
    assert "mentions" in invalid(
        stub.LinkMentions, linker_pb2.LinkMentionsRequest(knowledge_base="shapes")
    )
    with pytest.raises(grpc.RpcError) as unknown:
        link(stub, "no-such-kb", MENTIONS)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'no-such-kb'" in (unknown.value.details() or "")
    with pytest.raises(grpc.RpcError) as unknown_delete:
        stub.DeleteKnowledgeBase(
            linker_pb2.DeleteKnowledgeBaseRequest(name="no-such-kb"), timeout=TIMEOUT
        )
    assert unknown_delete.value.code() == grpc.StatusCode.NOT_FOUND
    upsert(stub, "shapes", ENTITIES[:1])
    assert len(link(stub, "shapes", MENTIONS).links) == 2  # still serving


# ----------------------------------------------------------------------------- alignment


def planted_graphs(
    n: int = 24, seed: int = 0
) -> tuple[linker_pb2.Graph, linker_pb2.Graph, list[tuple[str, str]]]:
    """Two copies of one random graph under different ids (target = a permutation), ~half the
    entities with an image of their own colour; returns (source, target, true pairs)."""
    rng = random.Random(seed)
    edges = {(i, (i + 1) % n) for i in range(n)} | {
        (rng.randrange(n), rng.randrange(n)) for _ in range(2 * n)
    }
    edges = {(h, t) for h, t in edges if h != t}
    perm = list(range(n))
    rng.shuffle(perm)
    colours = [(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(n)]

    def graph(prefix: str, index: list[int]) -> linker_pb2.Graph:
        entities = [linker_pb2.Entity(id=f"{prefix}{index[i]}") for i in range(n)]
        for i in range(n):
            if i % 2 == 0:
                entities[i].images.append(image(colours[i]))
            entities[i].attributes.CopyFrom(payload_from_dict({f"k{i % 4}": 1}))
        triples = [
            linker_pb2.Triple(
                head=f"{prefix}{index[h]}", relation=f"r{(h + t) % 3}", tail=f"{prefix}{index[t]}"
            )
            for h, t in sorted(edges)
        ]
        return linker_pb2.Graph(entities=entities, triples=triples)

    source = graph("s", list(range(n)))
    target = graph("t", perm)
    truth = [(f"s{i}", f"t{perm[i]}") for i in range(n)]
    return source, target, truth


def align_request(top_k: int = 1) -> tuple[linker_pb2.AlignGraphsRequest, dict[str, str], set[str]]:
    source, target, truth = planted_graphs()
    seeds = truth[::2]
    request = linker_pb2.AlignGraphsRequest(
        source=source,
        target=target,
        seeds=[linker_pb2.AlignedPair(source_id=s, target_id=t) for s, t in seeds],
        top_k=top_k,
    )
    return request, dict(truth), {s for s, _ in seeds}


def test_align_streams_pairs_for_a_planted_graph_pair(
    stub: linker_pb2_grpc.LinkerServiceStub,
) -> None:
    request, truth, seeded = align_request(top_k=2)
    pairs = list(stub.AlignGraphs(request, timeout=120))
    sources = list(dict.fromkeys(p.source_id for p in pairs))
    assert set(sources) == set(truth) - seeded  # every non-seed source entity, two candidates each
    assert len(pairs) == 2 * len(sources)
    assert all(p.target_id.startswith("t") and np.isfinite(p.score) for p in pairs)
    best = {p.source_id: p.target_id for p in pairs[::2]}
    hits = sum(best[s] == truth[s] for s in sources)
    assert hits / len(sources) >= 0.75, (
        f"{hits}/{len(sources)} right (chance: {1 / len(truth):.2f})"
    )


def test_align_rejects_bad_graphs(stub: linker_pb2_grpc.LinkerServiceStub) -> None:
    request, _, _ = align_request()
    request.source.triples[2].head = "ghost"
    request.seeds[0].source_id = "nobody"
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.AlignGraphs(request, timeout=TIMEOUT))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {"source.triples[2].head", "seeds[0].source_id"} <= set(field_violations(caught.value))
    no_seeds, _, _ = align_request()
    del no_seeds.seeds[:]
    with pytest.raises(grpc.RpcError) as empty:
        list(stub.AlignGraphs(no_seeds, timeout=TIMEOUT))
    assert "seeds" in field_violations(empty.value)


def test_align_job_runs_and_its_result_is_fetchable(
    served: tuple[InProcessDeployment, Settings], stub: linker_pb2_grpc.LinkerServiceStub
) -> None:
    request, truth, seeded = align_request()
    status = stub.SubmitAlignJob(
        linker_pb2.SubmitAlignJobRequest(graphs=request, job_id="planted-1"), timeout=TIMEOUT
    )
    assert status.job_id == "planted-1" and status.state == linker_pb2.ALIGN_JOB_STATE_QUEUED

    def state() -> int:
        got = stub.GetAlignJob(linker_pb2.GetAlignJobRequest(job_id="planted-1"), timeout=TIMEOUT)
        return got.state

    wait_until(lambda: state() == linker_pb2.ALIGN_JOB_STATE_SUCCEEDED, "the job to succeed", 90)
    pairs: list[linker_pb2.AlignedPair] = []
    token = ""
    while True:
        page = stub.GetAlignResult(
            linker_pb2.GetAlignResultRequest(
                job_id="planted-1", page=common_pb2.PageRequest(page_size=5, page_token=token)
            ),
            timeout=TIMEOUT,
        )
        pairs += page.pairs
        token = page.page.next_page_token
        if not token:
            break
    assert page.page.total_size == len(pairs) == len(truth) - len(seeded)
    assert page.status.pairs == len(pairs) and page.status.progress == pytest.approx(1.0)
    # The same job id again returns the job, it does not queue a second one.
    again = stub.SubmitAlignJob(
        linker_pb2.SubmitAlignJobRequest(graphs=request, job_id="planted-1"), timeout=TIMEOUT
    )
    assert again.state == linker_pb2.ALIGN_JOB_STATE_SUCCEEDED
    with pytest.raises(grpc.RpcError) as unknown:
        stub.GetAlignJob(linker_pb2.GetAlignJobRequest(job_id="no-such-job"), timeout=TIMEOUT)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_info_lists_package_and_encoder(served: tuple[InProcessDeployment, Settings]) -> None:
    with Connection(served[1].serving.address_for("linker")) as conn:
        info = conn.info("linker")
        assert conn.health("concord.v1.LinkerService") == "SERVING"
    assert info.ready and [m.name for m in info.models] == ["tiny-linker", "tiny-encoder"]


def test_without_a_model_knowledge_bases_answer_and_models_fail_precondition(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-linker"
    settings = linker_settings(tmp_path, str(missing))
    server = InProcessDeployment(["linker"], settings)
    try:
        with Connection(settings.serving.address_for("linker")) as conn:
            stub = linker_pb2_grpc.LinkerServiceStub(conn.channel)
            assert counts(stub) == {}
            for call in (
                lambda: link(stub, "shapes", MENTIONS),
                lambda: upsert(stub, "shapes", ENTITIES[:1]),
                lambda: list(stub.AlignGraphs(align_request()[0], timeout=TIMEOUT)),
            ):
                with pytest.raises(grpc.RpcError) as caught:
                    call()
                assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert str(missing) in (caught.value.details() or "")
            assert conn.health("") == "SERVING"
            info = conn.info("linker")
            assert not info.ready and str(missing) in info.not_ready_reason
    finally:
        server.close()


# ----------------------------------------------------------------------------- both backends


@pytest.mark.parametrize("backend", ["embedded", "qdrant-client"])
def test_knowledge_bases_on_both_vector_backends(backend: str, tmp_path: Path) -> None:
    """The KB layer alone (no model) on qdrant-edge and on the Qdrant client API (local mode
    stands in for a server): a missing image vector, raw features scaled back from the unit
    vectors a cosine collection keeps, counts, deletes, drops and the model check."""
    from concord.errors import FailedPrecondition, NotFound
    from concord.vectors import EdgeVectorStore, QdrantServerStore
    from concord.wire import ModelId
    from services.linker.kb import EntityRecord, KnowledgeBases, entity_point

    store = (
        EdgeVectorStore(tmp_path) if backend == "embedded" else QdrantServerStore(path=":memory:")
    )
    rng = np.random.default_rng(0)
    model = ModelId("tiny-linker", "local-1")
    with store:
        kbs = KnowledgeBases(store)
        kbs.ensure("people", model, (4, 3, 2))
        records = [
            EntityRecord(
                f"p{i}", f"Person {i}", "", {"age": i}, i % 2,
                rng.normal(size=4).astype(np.float32) * 3,
                rng.normal(size=3).astype(np.float32) * 2 if i % 2 else None,
                rng.normal(size=2).astype(np.float32),
            )
            for i in range(5)
        ]  # fmt: skip
        assert kbs.upsert("people", records) == 5
        assert kbs.upsert("people", records[:2]) == 2  # replaced, not added
        assert [(e.name, n) for e, n in kbs.summaries()] == [("people", 5)]
        assert records[1].image is not None
        hits = kbs.search("people", "image", records[1].image, 10, exact=True)
        assert {str(h.id) for h in hits} == {entity_point("people", f"p{i}") for i in (1, 3)}
        fetched = kbs.fetch("people", [entity_point("people", r.id) for r in records])
        for record, got in zip(records, fetched, strict=True):
            assert got.id == record.id and got.attributes == record.attributes
            np.testing.assert_allclose(got.text, record.text, rtol=1e-5, atol=1e-5)
            if record.image is None:
                assert got.image is None
            else:
                np.testing.assert_allclose(got.image, record.image, rtol=1e-5, atol=1e-5)
        assert kbs.delete("people", ["p0", "p0", "ghost"]) == 1
        assert kbs.count("people") == 4
        with pytest.raises(FailedPrecondition, match="tiny-linker@local-1"):
            kbs.ensure("people", ModelId("tiny-linker", "local-2"), (4, 3, 2))
        assert kbs.drop("people")
        with pytest.raises(NotFound, match="'people'"):
            kbs.entry("people")
        assert kbs.summaries() == []


def test_sdk_calls(served: tuple[InProcessDeployment, Settings]) -> None:
    """The typed SDK on `Concord`: dataclasses in and out, domain errors raised."""
    from concord.clients import Concord, Entity, Graph, Mention
    from concord.errors import InvalidArgument, NotFound

    settings = served[1]
    red, blue = png(COLOURS[0]), png(COLOURS[1])
    with Concord(settings) as sdk:
        entities = [
            Entity("a", "Alpha", "a red thing", (red,), {"colour": "red"}),
            Entity("b", "Beta", "a blue thing", (blue, red)),
            Entity("c", "Gamma", "no picture"),
        ]
        assert sdk.upsert_entities("sdk", entities) == 3
        links = sdk.link("sdk", [Mention("I met Alpha", (6, 11), red), ("Beta again", (0, 4))])
        assert links.model.name == "tiny-linker" and len(links.candidates) == 2
        first = {c.entity_id: c for c in links.candidates[0]}
        assert set(first) == {"a", "b", "c"}
        assert first["c"].visual is None and first["a"].visual is not None
        assert all(c.visual is None for c in links.candidates[1])  # no image on the mention
        assert {kb.name: kb.entities for kb in sdk.list_knowledge_bases()}["sdk"] == 3
        assert sdk.delete_entities("sdk", ["c"]) == 1
        with pytest.raises(InvalidArgument) as bad:
            sdk.link("sdk", [("Alpha", (3, 99))])
        assert [v.field for v in bad.value.violations] == ["mentions[0].span"]
        assert sdk.delete_knowledge_base("sdk")
        with pytest.raises(NotFound):
            sdk.link("sdk", [("Alpha", (0, 5))])

        request, truth, seeded = align_request()

        def graph(g: linker_pb2.Graph) -> Graph:
            return Graph(
                tuple(Entity(e.id) for e in g.entities),
                tuple((t.head, t.relation, t.tail) for t in g.triples),
            )

        seeds = [(p.source_id, p.target_id) for p in request.seeds]
        streamed = list(sdk.align(graph(request.source), graph(request.target), seeds))
        assert len(streamed) == len(truth) - len(seeded)
        job = sdk.submit_align_job(graph(request.source), graph(request.target), seeds)
        assert job.state == "QUEUED" and job.id
        done = sdk.wait_align_job(job.id, timeout=90, poll=0.2)
        assert done.state == "SUCCEEDED" and done.pairs == len(streamed)
        assert [(p.source_id, p.target_id) for p in sdk.align_result(job.id, page_size=4)] == [
            (p.source_id, p.target_id) for p in streamed
        ]


def test_mention_by_mention_scoring_equals_the_joint_call(
    served: tuple[InProcessDeployment, Settings],
    stub: linker_pb2_grpc.LinkerServiceStub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A large batch is re-ranked mention by mention; the ranking must not depend on it."""
    from services.linker import servable as servable_module
    from services.linker.convert import Limits, decode_mentions
    from services.linker.types import LinkIn

    upsert(stub, "joint", ENTITIES)
    servable = served[0].servicer("linker").servable
    limits = Limits.of(served[1].linker)
    items = [LinkIn("joint", m, 6) for m in decode_mentions(MENTIONS, limits)]
    joint = servable.link_sync(items)
    monkeypatch.setattr(servable_module, "MAX_JOINT_SCORES", 0)
    alone = servable.link_sync(items)
    assert [[r.entity_id for r in x] for x in alone] == [[r.entity_id for r in x] for x in joint]
    for a, b in zip(alone, joint, strict=True):
        assert [r.score for r in a] == pytest.approx([r.score for r in b], abs=1e-4)
