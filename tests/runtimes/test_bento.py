"""The BentoML service: `bentoml serve services.encoder.bento:EncoderBento` on 127.0.0.1 in a
subprocess (BENTOML_HOME in tmp, offline), called over HTTP: embeddings equal the torch
model's, 20 concurrent requests are all answered correctly and are merged by the adaptive
batcher; `bentoml build` packages the Bento from bentofile.yaml."""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from concord.models.preprocess import images_to_tensor
from tests.runtimes.conftest import REPO, Launched, Reference

ATOL = 1e-5

# `bentoml serve` and `bentoml build` run as subprocesses.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bento(launched: Launched) -> Iterator[httpx.Client]:
    """`bentoml serve services.encoder.bento:EncoderBento --host 127.0.0.1` (see conftest)."""
    assert launched.bento is not None
    launched.bento.wait_http(f"http://127.0.0.1:{launched.bento_port}/readyz")
    with httpx.Client(base_url=f"http://127.0.0.1:{launched.bento_port}", timeout=60) as client:
        yield client


def _png(colour: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_texts_and_images_match_torch(bento: httpx.Client, reference: Reference) -> None:
    texts = ["a red circle", "a blue square left of a green star"]
    response = bento.post("/encode_texts", json={"texts": texts})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(np.array(response.json()), reference.texts(texts)[0], atol=ATOL)

    pictures = [_png((255, 0, 0), (64, 64)), _png((0, 0, 255), (90, 70))]
    files = [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(pictures)]
    response = bento.post("/encode_images", files=files)
    assert response.status_code == 200, response.text
    size = reference.model.config.image.image_size  # type: ignore[attr-defined]
    pixels = images_to_tensor([Image.open(io.BytesIO(p)) for p in pictures], size)
    uint8 = (pixels.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_allclose(np.array(response.json()), reference.images(uint8)[0], atol=ATOL)


def test_concurrent_requests_are_batched(bento: httpx.Client, reference: Reference) -> None:
    before = bento.post("/info", json={}).json()
    texts = [f"{n} red circles left of a blue square" for n in range(20)]

    def call(text: str) -> list[list[float]]:
        response = bento.post("/encode_texts", json={"texts": [text]})
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(call, texts))
    expected = reference.texts(texts)[0]
    for i, answer in enumerate(answers):  # each caller gets its own row back
        np.testing.assert_allclose(np.array(answer)[0], expected[i], atol=ATOL)
    after = bento.post("/info", json={}).json()
    assert after["items"] - before["items"] == 20
    assert after["batches"] - before["batches"] < 20  # the adaptive batcher merged callers
    assert after["largest_batch"] > 1
    assert after["model"] == reference.directory.name and after["dim"] == expected.shape[1]


def test_bentoml_build_packages_the_service(bento_build: tuple[int, str, Path]) -> None:
    bentofile = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    assert bentofile["service"] == "services.encoder.bento:EncoderBento"
    code, log, home = bento_build
    assert code == 0, log
    bentos = home / "bentos" / "concord-encoder"
    built = next(p for p in bentos.iterdir() if p.name != "latest")
    src = built / "src"
    assert (src / "services" / "encoder" / "bento.py").is_file()
    assert (src / "concord" / "models" / "configs" / "tiny.json").is_file()
    assert not (src / "tests").exists()
    manifest = yaml.safe_load((built / "bento.yaml").read_text())
    routes = {r["name"]: r for r in manifest["schema"]["routes"]}
    assert routes["encode_texts"]["batchable"] and routes["encode_images"]["batchable"]
