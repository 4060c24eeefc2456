"""Explained search hits over real sockets: encoder + retrieval + scorer on tiny random models.
A text search with explain=True gives each image hit the scorer's word verdicts (spans into
the query) and alignment; without explain the scorer is never called; top_k over the limit and
non-text queries are INVALID_ARGUMENT naming the field; with the scorer down, UNAVAILABLE (and
FAILED_PRECONDITION when it serves no model); images ingested through the bus are explainable."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import grpc
import pytest
from typer.testing import CliRunner

from concord.bus import topics
from concord.cli import app
from concord.cli.search import marked_query
from concord.clients import Concord, Connection, IndexItem
from concord.config import Settings
from concord.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from concord.proto.v1 import common_pb2, events_pb2, retrieval_pb2, retrieval_pb2_grpc
from concord.serving.errors import field_violations
from concord.wire import payload_from_dict
from tests.fixtures.media import png
from tests.fixtures.models import scorer_package, tiny_encoder
from tests.fixtures.serving import (
    InProcessDeployment,
    encoder_settings,
    free_ports,
    scorer_settings,
)

QUERY = "a red circle left of a blue square"
COLLECTION = "explained"
RED, BLUE, GREEN = png((220, 30, 30)), png((30, 30, 220)), png((30, 200, 30))
BIG = png((200, 200, 40), size=300)  # kept as a 224 px thumbnail
GREY = png((128, 128, 128))  # indexed without thumbnails


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[InProcessDeployment, Settings]]:
    encoder = tiny_encoder(tmp_path_factory)
    package = scorer_package(tmp_path_factory.mktemp("explain") / "tiny-scorer", encoder)
    settings = scorer_settings(
        tmp_path_factory.mktemp("explain-home"), str(package), encoder_model=str(encoder)
    )
    server = InProcessDeployment(["encoder", "retrieval", "scorer"], settings)
    with Concord(settings) as sdk:
        sdk.index(
            [
                IndexItem(image=i, payload={"name": n})
                for n, i in {"red": RED, "blue": BLUE, "green": GREEN, "big": BIG}.items()
            ],
            collection=COLLECTION,
            store_thumbnails=True,
        )
        sdk.index(
            [IndexItem(image=GREY, payload={"name": "grey"}), IndexItem(text=QUERY)],
            collection=COLLECTION,
        )
    yield server, settings
    server.close()


@pytest.fixture(scope="module")
def sdk(served: tuple[InProcessDeployment, Settings]) -> Iterator[Concord]:
    with Concord(served[1]) as client:
        yield client


@pytest.fixture()
def scorer_calls(
    served: tuple[InProcessDeployment, Settings], monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """The texts the scorer was asked to explain during one test."""
    servable = served[0].servicer("scorer").servable
    calls: list[str] = []
    original = servable.explain

    async def counted(image, text, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(text)
        return await original(image, text, *args, **kwargs)

    monkeypatch.setattr(servable, "explain", counted)
    return calls


def test_explain_marks_query_words_of_each_image_hit(sdk: Concord, scorer_calls: list[str]) -> None:
    result = sdk.search_text(QUERY, collection=COLLECTION, top_k=6, explain=True)
    assert len(result.hits) == 6
    assert result.scorer_model is not None and result.scorer_model.name == "tiny-scorer"
    names = {}
    for hit in result.hits:
        assert "thumbnail" not in hit.payload  # the stored pixels never leave the service
        if hit.modality == "text":
            assert hit.explanation is None
            continue
        names[hit.payload["name"]] = hit.explanation
    assert set(names) == {"red", "blue", "green", "big", "grey"}
    assert names["grey"] is not None and not names["grey"].words
    assert "store_thumbnails" in names["grey"].unavailable
    for name in ("red", "blue", "green", "big"):
        why = names[name]
        assert why is not None and not why.unavailable
        assert [w.word for w in why.words] == QUERY.split()
        for word in why.words:
            start, end = word.span
            assert QUERY[start:end] == word.word
            assert word.verdict in ("supports", "contradicts", "neutral")
            if word.verdict == "contradicts":
                assert word.attribution < 0
            if word.verdict == "supports":
                assert word.attribution > 0
        assert why.score is not None and 0.0 <= why.score.aligned_probability <= 1.0
    # One scorer call per explained image (the grey one has no pixels to send).
    assert scorer_calls == [QUERY] * 4
    # The explanation is the scorer's own for (image, query): the thumbnail of a small PNG
    # is lossless, so explaining the original gives the same attributions.
    direct = sdk.explain(RED, QUERY)
    assert [round(w.attribution, 6) for w in direct.words] == [
        round(w.attribution, 6) for w in names["red"].words
    ]
    assert names["red"].score is not None
    assert names["red"].score.clip_score == pytest.approx(direct.score.clip_score, abs=1e-5)


def test_without_explain_the_scorer_is_not_called(sdk: Concord, scorer_calls: list[str]) -> None:
    result = sdk.search_text(QUERY, collection=COLLECTION, top_k=6)
    assert all(hit.explanation is None for hit in result.hits)
    assert result.scorer_model is None
    assert scorer_calls == []
    # Explain without payloads: the explanations still come, the payloads do not.
    bare = sdk.search_text(QUERY, collection=COLLECTION, top_k=3, with_payload=False, explain=True)
    assert all(not hit.payload for hit in bare.hits)
    assert all(hit.explanation is not None for hit in bare.hits if hit.modality == "image")


def test_explain_limits_are_invalid_argument_naming_the_field(
    served: tuple[InProcessDeployment, Settings], sdk: Concord, scorer_calls: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as err:
        sdk.search_text(QUERY, collection=COLLECTION, top_k=21, explain=True)
    assert err.value.violations[0].field == "top_k" and "20" in err.value.message
    with pytest.raises(InvalidArgument) as err:
        sdk.search_image(RED, collection=COLLECTION, top_k=3, explain=True)
    assert err.value.violations[0].field == "explain"
    with pytest.raises(InvalidArgument) as err:  # the thumbnail key is the service's own
        sdk.index([IndexItem(image=RED, payload={"thumbnail": "x"})], collection=COLLECTION)
    assert err.value.violations[0].field == "items[0].payload.thumbnail"
    address = f"127.0.0.1:{served[1].serving.port_for('retrieval')}"
    with Connection(address) as conn:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(conn.channel)
        batch = retrieval_pb2.SearchBatchRequest(
            searches=[
                retrieval_pb2.SearchRequest(text=QUERY, collection=COLLECTION, top_k=2),
                retrieval_pb2.SearchRequest(
                    text=QUERY, collection=COLLECTION, top_k=50, explain=True
                ),
            ]
        )
        with pytest.raises(grpc.RpcError) as rpc:
            stub.SearchBatch(batch, timeout=30)
        assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "searches[1].top_k" in field_violations(rpc.value)
        # SearchBatch explains too, each search on its own.
        batch.searches[1].top_k = 2
        reply = stub.SearchBatch(batch, timeout=60)
        assert not any(h.HasField("explanation") for h in reply.results[0].hits)
        images = [h for h in reply.results[1].hits if h.modality == common_pb2.MODALITY_IMAGE]
        assert images and all(h.HasField("explanation") for h in images)
    assert scorer_calls == [QUERY] * sum(1 for h in images if h.explanation.words)


def test_images_ingested_through_the_bus_can_be_explained(
    served: tuple[InProcessDeployment, Settings], sdk: Concord
) -> None:
    """The ingest worker keeps thumbnails: what arrives on concord.ingest is explainable."""
    bus = served[0].deployment.platform.bus
    event = events_pb2.IngestRequest(
        collection="ingested",
        item=common_pb2.Item(image=common_pb2.Image(data=RED, media_type="image/png")),
        payload=payload_from_dict({"name": "red"}),
    )
    bus.publish(topics.INGEST, "red", event)
    deadline = time.monotonic() + 60
    while True:
        try:
            if sdk.retrieval.collection("ingested").points:
                break
        except NotFound:
            pass
        assert time.monotonic() < deadline, "the ingest worker indexed nothing"
        time.sleep(0.1)
    (hit,) = sdk.search_text(QUERY, collection="ingested", top_k=1, explain=True).hits
    assert hit.payload == {"name": "red"}
    assert hit.explanation is not None and len(hit.explanation.words) == len(QUERY.split())


def test_cli_search_explain_prints_marked_words(
    served: tuple[InProcessDeployment, Settings], sdk: Concord
) -> None:
    settings = served[1]
    env = {
        "CONCORD_HOME": str(settings.home),
        "CONCORD_SERVING__PORTS": json.dumps(settings.serving.ports),
    }
    args = ["search", QUERY, "--collection", COLLECTION, "--top-k", "3", "--target", "image"]
    result = CliRunner().invoke(app, [*args, "--explain"], env=env)
    assert result.exit_code == 0, result.output
    assert "explained by tiny-scorer@" in result.output
    expected = sdk.search_text(QUERY, collection=COLLECTION, top_k=3, target="image", explain=True)
    for hit in expected.hits:
        assert hit.explanation is not None
        if hit.explanation.words:
            assert marked_query(QUERY, hit.explanation).plain in result.output
    assert "P(aligned)" in result.output
    plain = CliRunner().invoke(app, args, env=env)
    assert plain.exit_code == 0 and "explained by" not in plain.output


def test_scorer_down_is_unavailable_and_search_still_works(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    (scorer_port,) = free_ports(1)  # nothing listens there
    home = tmp_path_factory.mktemp("no-scorer")
    settings = encoder_settings(
        home,
        str(tiny_encoder(tmp_path_factory)),
        scorer={"model": str(home / "no-such-scorer")},  # when it starts: up, no model
    )
    settings.serving.ports["scorer"] = scorer_port
    server = InProcessDeployment(["encoder", "retrieval"], settings)
    try:
        with Concord(settings) as sdk:
            sdk.index([IndexItem(image=RED)], collection="c", store_thumbnails=True)
            with pytest.raises(Unavailable) as err:
                sdk.search_text(QUERY, collection="c", top_k=1, explain=True)
            assert f"scorer at 127.0.0.1:{scorer_port}" in err.value.message
            assert "search without explain still works" in err.value.message
            hits = sdk.search_text(QUERY, collection="c", top_k=1).hits
            assert len(hits) == 1 and hits[0].explanation is None
            # A scorer that is up but serves no model: FAILED_PRECONDITION, saying so.
            scorer = InProcessDeployment(["scorer"], settings)
            try:
                deadline = time.monotonic() + 30
                while True:  # the channel redials within its 2 s backoff
                    try:
                        sdk.search_text(QUERY, collection="c", top_k=1, explain=True)
                    except Unavailable:
                        assert time.monotonic() < deadline
                        time.sleep(0.2)
                        continue
                    except FailedPrecondition as err:
                        assert f"explain needs the scorer at 127.0.0.1:{scorer_port}" in str(err)
                        break
                    raise AssertionError("explain without a scorer model succeeded")
            finally:
                scorer.close()
    finally:
        server.close()


def test_thumbnail_keeps_small_images_and_shrinks_big_ones() -> None:
    import io

    from PIL import Image

    from concord.wire import ImageData
    from services.retrieval import thumbnails

    for data, side in ((RED, 64), (BIG, 224)):
        kept = thumbnails.read({"thumbnail": thumbnails.make(ImageData(data))})
        assert kept is not None and kept.media_type == "image/png"
        with Image.open(io.BytesIO(kept.data)) as image:
            assert image.size == (side, side)
    assert thumbnails.read({"thumbnail": "not base64!"}) is None
    assert thumbnails.read({}) is None and thumbnails.read(None) is None
