"""The retrieval service over real sockets with the real encoder service (tiny random model)
and embedded Qdrant under tmp: index and search across modalities, idempotent re-index,
filters, late-interaction rerank, delete, collection info and paging, events, errors."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import grpc
import pytest

from concord.bus import MemoryBus, topics
from concord.clients import Concord, Connection, IndexItem
from concord.config import Settings
from concord.errors import FailedPrecondition, InvalidArgument, NotFound
from concord.proto.v1 import common_pb2, events_pb2, retrieval_pb2, retrieval_pb2_grpc
from concord.serving.errors import field_violations
from tests.fixtures.media import png
from tests.fixtures.models import tiny_encoder
from tests.fixtures.serving import InProcessDeployment, encoder_settings

COLOURS = {"red": (255, 0, 0), "green": (0, 200, 0), "blue": (0, 0, 255), "grey": (128, 128, 128)}
TEXTS = ["a red circle left of a blue square", "two green stars", "a grey triangle", "one blue dot"]


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[InProcessDeployment, Settings]]:
    settings = encoder_settings(
        tmp_path_factory.mktemp("retrieval"), str(tiny_encoder(tmp_path_factory))
    )
    server = InProcessDeployment(["encoder", "retrieval"], settings)
    yield server, settings
    server.close()


@pytest.fixture(scope="module")
def sdk(served: tuple[InProcessDeployment, Settings]) -> Iterator[Concord]:
    with Concord(served[1]) as client:
        yield client


@pytest.fixture(scope="module")
def stub(
    served: tuple[InProcessDeployment, Settings],
) -> Iterator[retrieval_pb2_grpc.RetrievalServiceStub]:
    with Connection(f"127.0.0.1:{served[1].serving.port_for('retrieval')}") as conn:
        yield retrieval_pb2_grpc.RetrievalServiceStub(conn.channel)


@pytest.fixture(scope="module")
def indexed(sdk: Concord) -> dict[str, str]:
    """Four images and four texts in the default collection, with tokens; name -> id."""
    items = [
        IndexItem(image=png(rgb), payload={"colour": name, "rank": i, "uri": f"/img/{name}.png"})
        for i, (name, rgb) in enumerate(COLOURS.items())
    ] + [IndexItem(text=t, payload={"rank": 10 + i}) for i, t in enumerate(TEXTS)]
    result = sdk.index(items, store_tokens=True)
    assert result.collection == f"{result.model.name}-v{result.model.version}"
    return dict(zip([*COLOURS, *TEXTS], result.ids, strict=True))


def test_text_query_finds_its_own_text_first(sdk: Concord, indexed: dict[str, str]) -> None:
    for text in TEXTS:
        hits = sdk.search_text(text, target="text", top_k=3, exact=True).hits
        assert hits[0].id == indexed[text] and hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert hits[0].modality == "text" and hits[0].payload["text"] == text


def test_image_query_finds_its_own_image_and_target_filters(
    sdk: Concord, indexed: dict[str, str]
) -> None:
    result = sdk.search_image(png(COLOURS["green"]), target="image", top_k=4, exact=True)
    assert result.hits[0].id == indexed["green"] and result.hits[0].modality == "image"
    assert {h.modality for h in result.hits} == {"image"}
    assert result.hits[0].payload == {"colour": "green", "rank": 1, "uri": "/img/green.png"}
    to_text = sdk.search_image(png(COLOURS["green"]), target="text", top_k=10, exact=True)
    assert {h.modality for h in to_text.hits} == {"text"} and len(to_text.hits) == 4


def test_reindexing_the_same_content_changes_nothing(sdk: Concord, indexed: dict[str, str]) -> None:
    collection = sdk.retrieval.collection(sdk.retrieval.collections()[0].name)
    again = sdk.index([IndexItem(text=TEXTS[0], payload={"rank": 10})], store_tokens=True)
    assert again.ids == (indexed[TEXTS[0]],)
    assert sdk.retrieval.collection(collection.name).points == collection.points == 8


def test_payload_filters(sdk: Concord, stub, indexed: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    red = sdk.search_text("anything", filter={"colour": "red"}, exact=True).hits
    assert [h.id for h in red] == [indexed["red"]]
    some = sdk.search_text("anything", filter={"colour": ["red", "blue"]}, exact=True).hits
    assert {h.id for h in some} == {indexed["red"], indexed["blue"]}
    assert [h.id for h in sdk.search_text("x", filter={"rank": 11}).hits] == [indexed[TEXTS[1]]]
    ranged = retrieval_pb2.Filter(
        must=[retrieval_pb2.Condition(field="rank", range=retrieval_pb2.Range(gte=2, lt=11))],
        must_not=[retrieval_pb2.Condition(field="colour", keyword="grey")],
    )
    reply = stub.Search(
        retrieval_pb2.SearchRequest(text="x", filter=ranged, top_k=10, exact=True), timeout=30
    )
    assert {h.id for h in reply.hits} == {indexed["blue"], indexed[TEXTS[0]]}


def test_late_interaction_rerank(sdk: Concord, indexed: dict[str, str]) -> None:
    hits = sdk.search_text(TEXTS[1], target="text", rerank=True, top_k=4, exact=True).hits
    assert hits[0].id == indexed[TEXTS[1]]
    assert len(hits) == 4 and all(a.score >= b.score for a, b in itertools.pairwise(hits))
    # MAX_SIM sums over the query's tokens: its own tokens match with similarity 1 each.
    assert hits[0].score > 1.5
    image_hits = sdk.search_image(png(COLOURS["blue"]), target="image", rerank=True, exact=True)
    assert image_hits.hits[0].id == indexed["blue"]


def test_vector_query_and_batch(sdk: Concord, stub, indexed: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    vector = sdk.encode_texts([TEXTS[2]]).matrix[0]
    hits = sdk.retrieval.search_vector(vector, exact=True, top_k=1).hits
    assert [h.id for h in hits] == [indexed[TEXTS[2]]]
    batch = stub.SearchBatch(
        retrieval_pb2.SearchBatchRequest(
            searches=[
                retrieval_pb2.SearchRequest(
                    text=t, top_k=1, exact=True, target=common_pb2.MODALITY_TEXT
                )
                for t in TEXTS
            ]
        ),
        timeout=30,
    )
    assert [r.hits[0].id for r in batch.results] == [indexed[t] for t in TEXTS]


def test_collection_info_and_paging(sdk: Concord, indexed: dict[str, str]) -> None:
    sdk.index([IndexItem(text="side collection")], collection="side-a")
    sdk.index([IndexItem(text="side collection")], collection="side-b")
    pages = sdk.retrieval.collections(page_size=1)
    names = [c.name for c in pages]
    assert names == sorted(names) and {"side-a", "side-b"} <= set(names)
    main = next(c for c in pages if c.name not in ("side-a", "side-b"))
    assert main.points == 8 and main.has_tokens and main.dim == sdk.encode_texts(["x"]).dim
    side = sdk.retrieval.collection("side-a")
    assert side.points == 1 and not side.has_tokens and side.model == main.model
    with pytest.raises(FailedPrecondition):  # no tokens stored there
        sdk.search_text("side collection", collection="side-a", rerank=True)


def test_delete_by_ids_and_by_filter(sdk: Concord) -> None:
    items = [IndexItem(text=f"doomed {i}", payload={"batch": "doomed"}) for i in range(3)]
    ids = sdk.index(items, collection="deletions").ids
    assert sdk.retrieval.delete([ids[0]], collection="deletions") == 1
    assert sdk.retrieval.delete(collection="deletions", filter={"batch": "doomed"}) == 2
    assert sdk.retrieval.collection("deletions").points == 0


def test_errors_are_typed_and_name_fields(
    sdk: Concord,
    stub,
    indexed: dict[str, str],  # type: ignore[no-untyped-def]
) -> None:
    with pytest.raises(grpc.RpcError) as unknown:
        stub.Search(retrieval_pb2.SearchRequest(collection="nope", text="x"), timeout=30)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(NotFound):
        sdk.retrieval.collection("nope")
    with pytest.raises(InvalidArgument) as wrong_size:
        sdk.retrieval.search_vector([0.1, 0.2, 0.3])
    assert [v.field for v in wrong_size.value.violations] == ["vector.values"]
    with pytest.raises(grpc.RpcError) as empty:
        stub.Search(retrieval_pb2.SearchRequest(text=" "), timeout=30)
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(empty.value)) == ["text"]
    with pytest.raises(InvalidArgument) as corrupt:
        sdk.index([IndexItem(text="ok"), IndexItem(image=png((1, 2, 3))[:50])])
    assert [v.field for v in corrupt.value.violations] == ["items[1].item.image.data"]
    with pytest.raises(InvalidArgument) as reserved:
        sdk.index([IndexItem(text="ok", payload={"modality": "image"})])
    assert [v.field for v in reserved.value.violations] == ["items[0].payload.modality"]
    with pytest.raises(InvalidArgument) as top_k:
        sdk.search_text("x", top_k=5000)
    assert [v.field for v in top_k.value.violations] == ["top_k"]
    with pytest.raises(grpc.RpcError) as bad_filter:
        stub.Search(
            retrieval_pb2.SearchRequest(
                text="x", filter=retrieval_pb2.Filter(must=[retrieval_pb2.Condition(keyword="a")])
            ),
            timeout=30,
        )
    assert list(field_violations(bad_filter.value)) == ["filter.must[0].field"]
    assert sdk.search_text(TEXTS[0], top_k=1, exact=True).hits[0].id == indexed[TEXTS[0]]


def test_index_publishes_indexed_events(
    served: tuple[InProcessDeployment, Settings], sdk: Concord
) -> None:
    bus = served[0].deployment.platform.bus
    assert isinstance(bus, MemoryBus)
    ids = sdk.index([IndexItem(text="an event-worthy caption")], collection="events").ids
    seen: list[events_pb2.Indexed] = []
    consumer = bus.subscribe(
        topics.INDEXED, "test-events", lambda m, d: seen.append(m), events_pb2.Indexed
    ).start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(e.collection == "events" for e in seen):
            time.sleep(0.05)
    finally:
        consumer.stop()
    mine = [e for e in seen if e.collection == "events"]
    assert [e.id for e in mine] == list(ids)
    assert mine[0].modality == common_pb2.MODALITY_TEXT and mine[0].model.name


def test_info_reports_the_encoder_model(served: tuple[InProcessDeployment, Settings]) -> None:
    with Connection(f"127.0.0.1:{served[1].serving.port_for('retrieval')}") as conn:
        info = conn.info("retrieval")
    assert info.ready and info.models[0].name == "tiny-encoder"


def test_collections_of_other_services_in_the_shared_store_are_not_listed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The linker keeps its knowledge bases in the same store (`concord up`): retrieval lists
    only the collections it created, not `kb-*` nor the linker's catalog."""
    from concord.vectors.edge import EdgeVectorStore
    from concord.vectors.types import CollectionSpec
    from concord.wire import ModelId
    from services.retrieval.collections import Collections

    with EdgeVectorStore(tmp_path / "vectors") as store:
        collections = Collections(store)
        collections.ensure("enc-v1", ModelId("enc", "1"), 4, tokens=False)
        store.create_collection(CollectionSpec("kb-shapes", dense={"text": 4}))
        store.create_collection(CollectionSpec("linker-catalog", dense={"marker": 1}))
        assert collections.names() == ["enc-v1"]
