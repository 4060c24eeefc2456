"""The KServe runtime (`python -m services.encoder.kserve`, in a subprocess) called from this
process with the clients product teams use: `tritonclient.grpc` and `tritonclient.http`
(binary and JSON). Embeddings must equal the in-process torch model's within 1e-5."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.runtimes.conftest import TOKEN, KServeEndpoint, Reference

TEXTS = ["a red circle", "a small blue square left of a green star", "two"]
ATOL = 1e-5

# The KServe runtime runs as a subprocess server.
pytestmark = pytest.mark.slow


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _text_inputs(module, reference: Reference, binary: bool = True):  # type: ignore[no-untyped-def]
    _, _, batch = reference.texts(TEXTS)
    ids, mask = batch.input_ids.numpy(), batch.attention_mask.numpy()  # type: ignore[attr-defined]
    inputs = []
    for name, array in (("INPUT_IDS", ids), ("ATTENTION_MASK", mask)):
        tensor = module.InferInput(name, list(array.shape), "INT64")
        if module is httpclient:
            tensor.set_data_from_numpy(array, binary_data=binary)
        else:
            tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def test_pytest_process_never_imports_kserve() -> None:
    assert "kserve" not in sys.modules  # it would clash with tritonclient.grpc here


@pytest.mark.parametrize("model", ["encoder", "encoder-text"])
def test_grpc_texts_match_torch(
    kserve_endpoint: KServeEndpoint, reference: Reference, model: str
) -> None:
    pooled, tokens, _ = reference.texts(TEXTS)
    with grpcclient.InferenceServerClient(kserve_endpoint.grpc) as client:
        assert client.is_model_ready(model)
        result = client.infer(model, _text_inputs(grpcclient, reference))
    embedding = result.as_numpy("EMBEDDING")
    assert embedding.dtype == np.float32 and embedding.shape == pooled.shape
    np.testing.assert_allclose(embedding, pooled, atol=ATOL)
    np.testing.assert_allclose(result.as_numpy("TOKENS"), tokens, atol=ATOL)


@pytest.mark.parametrize("model", ["encoder", "encoder-image"])
def test_grpc_images_match_torch(
    kserve_endpoint: KServeEndpoint, reference: Reference, model: str
) -> None:
    size = reference.model.config.image.image_size  # type: ignore[attr-defined]
    images = _images(4, size)
    pooled, tokens = reference.images(images)
    tensor = grpcclient.InferInput("IMAGE", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images)
    with grpcclient.InferenceServerClient(kserve_endpoint.grpc) as client:
        result = client.infer(model, [tensor])
    np.testing.assert_allclose(result.as_numpy("EMBEDDING"), pooled, atol=ATOL)
    np.testing.assert_allclose(result.as_numpy("TOKENS"), tokens, atol=ATOL)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_texts_and_images_match_torch(
    kserve_endpoint: KServeEndpoint, reference: Reference, binary: bool
) -> None:
    headers = None if binary else {"Content-Type": "application/json"}
    pooled, _, _ = reference.texts(TEXTS)
    size = reference.model.config.image.image_size  # type: ignore[attr-defined]
    images = _images(2, size, seed=1)
    image_pooled, _ = reference.images(images)
    image = httpclient.InferInput("IMAGE", list(images.shape), "UINT8")
    image.set_data_from_numpy(images, binary_data=binary)
    embedding_only = [httpclient.InferRequestedOutput("EMBEDDING", binary_data=binary)]
    with httpclient.InferenceServerClient(kserve_endpoint.http) as client:
        text = client.infer(
            "encoder",
            _text_inputs(httpclient, reference, binary),
            outputs=embedding_only,
            headers=headers,
        )
        picture = client.infer("encoder", [image], headers=headers)
    np.testing.assert_allclose(text.as_numpy("EMBEDDING"), pooled, atol=ATOL)
    assert text.as_numpy("TOKENS") is None  # only what was asked for
    np.testing.assert_allclose(picture.as_numpy("EMBEDDING"), image_pooled, atol=ATOL)
    patches = reference.model.config.image.num_patches  # type: ignore[attr-defined]
    assert picture.as_numpy("TOKENS").shape[:2] == (2, patches)


def test_any_image_size_is_resized_like_the_grpc_service(
    kserve_endpoint: KServeEndpoint, reference: Reference
) -> None:
    from PIL import Image

    from concord.models.preprocess import images_to_tensor

    size = reference.model.config.image.image_size  # type: ignore[attr-defined]
    # 11 MB: also past KServe's default 8 MiB gRPC message limit, which the runtime raises
    images = np.random.default_rng(2).integers(0, 256, (4, 1000, 900, 3), dtype=np.uint8)
    pixels = images_to_tensor([Image.fromarray(a) for a in images], size)
    expected, _ = reference.images(
        (pixels.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    )
    tensor = grpcclient.InferInput("IMAGE", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images)
    with grpcclient.InferenceServerClient(kserve_endpoint.grpc) as client:
        result = client.infer(
            "encoder", [tensor], outputs=[grpcclient.InferRequestedOutput("EMBEDDING")]
        )
    np.testing.assert_allclose(result.as_numpy("EMBEDDING"), expected, atol=ATOL)


def test_wrong_inputs_are_invalid_argument(
    kserve_endpoint: KServeEndpoint, reference: Reference
) -> None:
    size = reference.model.config.image.image_size  # type: ignore[attr-defined]
    image = grpcclient.InferInput("IMAGE", [1, size, size, 3], "UINT8")
    image.set_data_from_numpy(_images(1, size))
    floats = grpcclient.InferInput("IMAGE", [1, size, size, 3], "FP32")
    floats.set_data_from_numpy(np.zeros((1, size, size, 3), np.float32))
    with grpcclient.InferenceServerClient(kserve_endpoint.grpc) as client:
        with pytest.raises(InferenceServerException) as wrong_model:
            client.infer("encoder-text", [image])
        with pytest.raises(InferenceServerException) as wrong_type:
            client.infer("encoder", [floats])
    assert wrong_model.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "INPUT_IDS" in wrong_model.value.message()
    assert wrong_type.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_metadata_describes_the_contract(
    kserve_endpoint: KServeEndpoint, reference: Reference
) -> None:
    url = f"http://{kserve_endpoint.http}/v2/models/encoder-image"
    with urllib.request.urlopen(url, timeout=10) as response:
        meta = json.load(response)
    size = reference.model.config.image.image_size  # type: ignore[attr-defined]
    dim = reference.model.config.embed_dim  # type: ignore[attr-defined]
    assert meta["inputs"] == [{"name": "IMAGE", "datatype": "UINT8", "shape": [-1, size, size, 3]}]
    assert {"name": "EMBEDDING", "datatype": "FP32", "shape": [-1, dim]} in meta["outputs"]


# ---------------------------------------------------------------- bearer token


def _status(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_token_guards_rest_inference(kserve_with_token: KServeEndpoint) -> None:
    base = f"http://{kserve_with_token.http}"
    body = json.dumps(
        {
            "inputs": [
                {"name": "INPUT_IDS", "shape": [1, 2], "datatype": "INT64", "data": [101, 102]},
                {"name": "ATTENTION_MASK", "shape": [1, 2], "datatype": "INT64", "data": [1, 1]},
            ]
        }
    ).encode()
    json_type = {"Content-Type": "application/json"}
    for model in ("encoder", "encoder-text"):
        infer = f"{base}/v2/models/{model}/infer"
        assert _status(infer, body, json_type) == 401
        wrong = {**json_type, "Authorization": "Bearer nope"}
        assert _status(infer, body, wrong) == 401
        right = {**json_type, "Authorization": f"Bearer {TOKEN}"}
        assert _status(infer, body, right) == 200
    # probes, metadata and metrics stay open
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/encoder/ready", "/metrics"):
        assert _status(base + path) == 200, path
    assert _status(f"{base}/v2/models/encoder") == 200


def test_token_guards_grpc_inference(
    kserve_with_token: KServeEndpoint, reference: Reference
) -> None:
    inputs = _text_inputs(grpcclient, reference)
    with grpcclient.InferenceServerClient(kserve_with_token.grpc) as client:
        assert client.is_server_live() and client.is_model_ready("encoder")  # open
        for headers in (None, {"authorization": "Bearer nope"}):
            with pytest.raises(InferenceServerException) as refused:
                client.infer("encoder", inputs, headers=headers)
            assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
        result = client.infer("encoder", inputs, headers={"authorization": f"Bearer {TOKEN}"})
    pooled, _, _ = reference.texts(TEXTS)
    np.testing.assert_allclose(result.as_numpy("EMBEDDING"), pooled, atol=ATOL)


def test_no_token_means_no_auth(kserve_endpoint: KServeEndpoint, reference: Reference) -> None:
    """Negative control: the runtime without a token serves the same call with no header."""
    with grpcclient.InferenceServerClient(kserve_endpoint.grpc) as client:
        client.infer("encoder", _text_inputs(grpcclient, reference))
