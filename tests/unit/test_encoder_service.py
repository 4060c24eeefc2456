"""The encoder service over real sockets, on a tiny randomly initialised encoder saved to
tmp: shapes, normalisation and model ref, token embeddings with spans, dynamic batching
across concurrent callers, streaming, error classes with field names, not-loaded models."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from concord.clients import Concord, Connection
from concord.config import Settings
from concord.errors import FailedPrecondition, InvalidArgument
from concord.proto.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc
from concord.serving.errors import field_violations
from tests.fixtures.media import png
from tests.fixtures.models import tiny_config, tiny_encoder
from tests.fixtures.serving import InProcessDeployment, encoder_settings


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[InProcessDeployment, Settings]]:
    model = tiny_encoder(tmp_path_factory)
    settings = encoder_settings(
        tmp_path_factory.mktemp("encoder"),
        str(model),
        batching={"max_batch_size": 16, "max_delay_ms": 50, "max_queue": 64},
    )
    server = InProcessDeployment(["encoder"], settings)
    yield server, settings
    server.close()


@pytest.fixture(scope="module")
def sdk(served: tuple[InProcessDeployment, Settings]) -> Iterator[Concord]:
    with Concord(served[1]) as client:
        yield client


@pytest.fixture(scope="module")
def stub(
    served: tuple[InProcessDeployment, Settings],
) -> Iterator[encoder_pb2_grpc.EncoderServiceStub]:
    with Connection(f"127.0.0.1:{served[1].serving.port_for('encoder')}") as conn:
        yield encoder_pb2_grpc.EncoderServiceStub(conn.channel)


def test_texts_have_shape_norm_and_model(sdk: Concord) -> None:
    out = sdk.encode_texts(["a red circle", "a blue square left of a green star"])
    dim = tiny_config().embed_dim
    assert out.dim == dim and out.matrix.shape == (2, dim)
    assert np.allclose(np.linalg.norm(out.matrix, axis=1), 1.0, atol=1e-5)
    assert out.model.name == "tiny-encoder" and out.model.version.startswith("local-")
    again = sdk.encode_texts(["a red circle"])
    assert np.allclose(again.matrix[0], out.matrix[0], atol=1e-5)  # batch-independent


def test_text_tokens_carry_strings_and_spans(sdk: Concord) -> None:
    text = "a red circle"
    (emb,) = sdk.encode_texts([text], include_tokens=True).embeddings
    assert emb.tokens is not None
    assert emb.tokens.tokens == ("[CLS]", "a", "red", "circle", "[SEP]")
    assert emb.tokens.vectors.shape == (5, tiny_config().embed_dim)
    assert [text[a:b] for a, b in emb.tokens.spans] == ["", "a", "red", "circle", ""]
    assert np.allclose(np.linalg.norm(emb.tokens.vectors, axis=1), 1.0, atol=1e-4)


def test_images_have_patch_tokens_without_spans(sdk: Concord) -> None:
    out = sdk.encode_images([png((255, 0, 0)), png((0, 0, 255), 80)], include_tokens=True)
    config = tiny_config()
    assert out.matrix.shape == (2, config.embed_dim)
    assert np.allclose(np.linalg.norm(out.matrix, axis=1), 1.0, atol=1e-5)
    tokens = out.embeddings[0].tokens
    patches = (config.image.image_size // config.image.patch_size) ** 2
    assert tokens is not None and tokens.vectors.shape == (patches, config.embed_dim)
    assert tokens.tokens == () and tokens.spans == ()
    assert not np.allclose(out.matrix[0], out.matrix[1])


def test_concurrent_callers_coalesce_into_batches(
    served: tuple[InProcessDeployment, Settings], sdk: Concord
) -> None:
    batcher = served[0].servicer("encoder").servable.texts
    batcher.batch_sizes.clear()
    texts = [f"caption number {i}" for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda t: sdk.encode_texts([t]), texts))
    assert len(results) == 12 and sum(batcher.batch_sizes) == 12
    assert max(batcher.batch_sizes) > 1, batcher.batch_sizes  # callers shared model calls
    solo = sdk.encode_texts([texts[3]]).matrix[0]
    assert np.allclose(results[3].matrix[0], solo, atol=1e-5)


def test_stream_answers_in_order_with_ids(stub: encoder_pb2_grpc.EncoderServiceStub) -> None:
    def requests() -> Iterator[encoder_pb2.EncodeStreamRequest]:
        for i in range(6):
            item = (
                common_pb2.Item(text=f"text {i}")
                if i % 2
                else common_pb2.Item(image=common_pb2.Image(data=png((i * 40, 10, 10))))
            )
            yield encoder_pb2.EncodeStreamRequest(id=f"id-{i}", item=item)

    replies = list(stub.EncodeStream(requests(), timeout=30))
    assert [r.id for r in replies] == [f"id-{i}" for i in range(6)]
    assert all(len(r.encoding.embedding.values) == tiny_config().embed_dim for r in replies)
    assert replies[0].model.name == "tiny-encoder"


def test_errors_name_fields_and_service_keeps_serving(
    sdk: Concord, stub: encoder_pb2_grpc.EncoderServiceStub
) -> None:
    with pytest.raises(InvalidArgument) as empty_text:
        sdk.encode_texts(["fine", "  "])
    assert [v.field for v in empty_text.value.violations] == ["texts[1]"]
    corrupt = png((1, 2, 3))[:40]
    with pytest.raises(InvalidArgument) as bad_image:
        sdk.encode_images([png((0, 0, 0)), png((1, 1, 1)), corrupt])
    assert [v.field for v in bad_image.value.violations] == ["images[2].data"]
    with pytest.raises(grpc.RpcError) as no_items:
        stub.EncodeTexts(encoder_pb2.EncodeTextsRequest(), timeout=10)
    assert no_items.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "texts" in field_violations(no_items.value)
    with pytest.raises(grpc.RpcError) as too_many:
        stub.EncodeTexts(encoder_pb2.EncodeTextsRequest(texts=["x"] * 65), timeout=10)
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limit" in field_violations(too_many.value)["texts"]
    with pytest.raises(grpc.RpcError) as bad_stream:
        list(
            stub.EncodeStream(
                iter(
                    [
                        encoder_pb2.EncodeStreamRequest(id="ok", item=common_pb2.Item(text="fine")),
                        encoder_pb2.EncodeStreamRequest(id="bad", item=common_pb2.Item(text="")),
                    ]
                ),
                timeout=10,
            )
        )
    assert bad_stream.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bad" in field_violations(bad_stream.value)["item.text"]
    assert sdk.encode_texts(["still serving"]).matrix.shape[0] == 1


def test_info_lists_the_model(served: tuple[InProcessDeployment, Settings]) -> None:
    with Connection(f"127.0.0.1:{served[1].serving.port_for('encoder')}") as conn:
        info = conn.info("encoder")
    assert info.ready and [m.name for m in info.models] == ["tiny-encoder"]


def test_missing_model_answers_failed_precondition(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    settings = encoder_settings(tmp_path, str(missing))
    server = InProcessDeployment(["encoder"], settings)
    try:
        with Concord(settings) as client:
            with pytest.raises(FailedPrecondition) as caught:
                client.encode_texts(["hello"])
            assert str(missing) in caught.value.message
            info = Connection(f"127.0.0.1:{settings.serving.port_for('encoder')}").info("encoder")
            assert not info.ready and not info.models
    finally:
        server.close()
