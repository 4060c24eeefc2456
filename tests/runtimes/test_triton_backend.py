"""The encoder service with `encoder_backend="triton"`: its batched model calls go through
`tritonclient.grpc` to a v2 endpoint, and EncodeTexts / EncodeImages answer exactly as the
torch backend does (token strings and spans included: tokenization stays in the service).

Triton itself cannot run on this machine (no server binary, no container engine), so the
endpoint is Concord's KServe runtime in a subprocess, serving the same `<name>-image` and
`<name>-text` models (same tensor contract, `concord.runtimes.v2`) that `concord export
triton` writes for Triton; the export's numerics are checked in test_triton_export.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from concord.clients import Concord
from concord.config import Settings
from concord.errors import Unavailable
from tests.fixtures.media import png
from tests.fixtures.serving import InProcessDeployment, encoder_settings, free_ports
from tests.runtimes.conftest import TOKEN, KServeEndpoint

TEXTS = ["a red circle", "a blue square left of a green star", "three yellow moons"]
ATOL = 1e-5

# The v2 endpoint is the KServe runtime as a subprocess server.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def services(
    kserve_endpoint: KServeEndpoint, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Concord, Concord]]:
    """(torch-backed, triton-backed) encoder services on their own ports."""
    batching = {"max_batch_size": 16, "max_delay_ms": 20, "max_queue": 64}
    torch_settings = encoder_settings(
        tmp_path_factory.mktemp("torch"), str(model_dir), batching=batching
    )
    triton_settings = encoder_settings(
        tmp_path_factory.mktemp("triton"),
        str(model_dir),
        batching=batching,
        encoder_backend="triton",
        triton_url=kserve_endpoint.grpc,
        triton_model=kserve_endpoint.model,
    )
    torch_served = InProcessDeployment(["encoder"], torch_settings)
    triton_served = InProcessDeployment(["encoder"], triton_settings)
    servable = triton_served.servicer("encoder").servable
    assert servable.remote is not None and servable.loaded.model is None  # no local weights
    try:
        with Concord(torch_settings) as a, Concord(triton_settings) as b:
            yield a, b
    finally:
        triton_served.close()
        torch_served.close()


def test_texts_match_torch_backend(services: tuple[Concord, Concord]) -> None:
    local, remote = services
    expected = local.encode_texts(TEXTS, include_tokens=True)
    got = remote.encode_texts(TEXTS, include_tokens=True)
    assert got.model == expected.model  # same model id: same retrieval collection
    np.testing.assert_allclose(got.matrix, expected.matrix, atol=ATOL)
    for a, b in zip(got.embeddings, expected.embeddings, strict=True):
        assert a.tokens is not None and b.tokens is not None
        assert a.tokens.tokens == b.tokens.tokens and a.tokens.spans == b.tokens.spans
        np.testing.assert_allclose(a.tokens.vectors, b.tokens.vectors, atol=ATOL)


def test_images_match_torch_backend(services: tuple[Concord, Concord]) -> None:
    local, remote = services
    images = [png((255, 0, 0)), png((0, 0, 255), 80), png((10, 200, 30), 64)]
    expected = local.encode_images(images, include_tokens=True)
    got = remote.encode_images(images, include_tokens=True)
    np.testing.assert_allclose(got.matrix, expected.matrix, atol=ATOL)
    for a, b in zip(got.embeddings, expected.embeddings, strict=True):
        assert a.tokens is not None and b.tokens is not None
        np.testing.assert_allclose(a.tokens.vectors, b.tokens.vectors, atol=ATOL)


def test_unreachable_endpoint_is_unavailable(model_dir: Path, tmp_path: Path) -> None:
    from services.encoder.servable import EncoderServable

    (port,) = free_ports(1)
    settings = Settings(
        home=tmp_path,
        encoder_model=str(model_dir),
        encoder_backend="triton",
        triton_url=f"127.0.0.1:{port}",
    )

    async def run() -> None:
        servable = EncoderServable(settings, lambda: None)  # type: ignore[arg-type,return-value]
        await servable.start()
        try:
            assert servable.ready  # the model is known even while the endpoint is down
            with pytest.raises(Unavailable, match=f"127.0.0.1:{port}"):
                await servable.encode_texts(["a red circle"])
        finally:
            await servable.stop()

    asyncio.run(run())


def test_the_gateway_carries_the_token_to_a_guarded_predictor(
    kserve_with_token: KServeEndpoint, model_dir: Path, tmp_path: Path
) -> None:
    """The chart's KServe mode: a gRPC encoder (triton backend) in front of a predictor that
    refuses inference without the bearer token; one Secret gives both the same token."""
    (port,) = free_ports(1)
    settings = Settings(
        home=tmp_path / "home",
        encoder_model=str(model_dir),
        encoder_backend="triton",
        triton_url=kserve_with_token.grpc,
        triton_model=kserve_with_token.model,
        serving={"ports": {"encoder": port}, "metrics_port": 0, "auth_token": TOKEN},
    )
    served = InProcessDeployment(["encoder"], settings)
    try:
        with Concord(settings) as client:
            encoded = client.encode_texts(TEXTS[:1])  # a refused infer would raise here
        assert encoded.matrix.shape == (1, encoded.dim)
    finally:
        served.close()
