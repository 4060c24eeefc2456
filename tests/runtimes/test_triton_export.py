"""`concord export triton`: the model repository's files, config.pbtxt parsed with Triton's own
ModelConfig proto (from tritonclient), and the exported models' embeddings against the torch
model (ONNX through onnxruntime when installed, TorchScript through torch.jit.load)."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from typer.testing import CliRunner

from concord.cli import app
from tests.runtimes.conftest import Reference

ATOL = 1e-4
TEXTS = ["a red circle", "a small blue square left of a green star and a yellow moon", "x"]


def _config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _check_repository(out: Path, reference: Reference, platform: str, filename: str) -> None:
    size = reference.model.config.image.image_size  # type: ignore[attr-defined]
    dim = reference.model.config.embed_dim  # type: ignore[attr-defined]
    t = model_config_pb2.DataType
    expected = {
        "concord-encoder-image": ({"IMAGE": (t.TYPE_UINT8, [size, size, 3])}),
        "concord-encoder-text": {
            "INPUT_IDS": (t.TYPE_INT64, [-1]),
            "ATTENTION_MASK": (t.TYPE_INT64, [-1]),
        },
    }
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    for name, inputs in expected.items():
        assert (out / name / "1" / filename).is_file()
        config = _config(out / name / "config.pbtxt")
        assert config.name == name and config.platform == platform
        assert config.max_batch_size == 64
        assert config.HasField("dynamic_batching")
        assert config.dynamic_batching.max_queue_delay_microseconds > 0
        assert {i.name: (i.data_type, list(i.dims)) for i in config.input} == inputs
        assert {o.name: (o.data_type, list(o.dims)) for o in config.output} == {
            "EMBEDDING": (t.TYPE_FP32, [dim]),
            "TOKENS": (t.TYPE_FP32, [-1, dim]),
        }


def _inputs(reference: Reference) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    size = reference.model.config.image.image_size  # type: ignore[attr-defined]
    _, _, batch = reference.texts(TEXTS)
    images = np.random.default_rng(3).integers(0, 256, (5, size, size, 3), dtype=np.uint8)
    text = {
        "INPUT_IDS": batch.input_ids.numpy(),  # type: ignore[attr-defined]
        "ATTENTION_MASK": batch.attention_mask.numpy(),  # type: ignore[attr-defined]
    }
    return {"IMAGE": images}, text


def _compare(reference: Reference, run) -> None:  # type: ignore[no-untyped-def]
    """run(model, inputs) -> (EMBEDDING, TOKENS) for model in ("image", "text")."""
    image_inputs, text_inputs = _inputs(reference)  # batch sizes differ from the trace's 2
    pooled, tokens, _ = reference.texts(TEXTS)
    embedding, got_tokens = run("text", text_inputs)
    np.testing.assert_allclose(embedding, pooled, atol=ATOL)
    np.testing.assert_allclose(got_tokens, tokens, atol=ATOL)
    pooled, tokens = reference.images(image_inputs["IMAGE"])
    embedding, got_tokens = run("image", image_inputs)
    np.testing.assert_allclose(embedding, pooled, atol=ATOL)
    np.testing.assert_allclose(got_tokens, tokens, atol=ATOL)


def test_cli_exports_onnx(reference: Reference, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    result = CliRunner().invoke(
        app, ["export", "triton", "--model", str(reference.directory), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    _check_repository(out, reference, "onnxruntime_onnx", "model.onnx")
    import onnx

    for name in ("concord-encoder-image", "concord-encoder-text"):
        onnx.checker.check_model(str(out / name / "1" / "model.onnx"))
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime not installed: ONNX numerics unchecked (TorchScript is)")
    import onnxruntime

    def run(kind: str, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        path = out / f"concord-encoder-{kind}" / "1" / "model.onnx"
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["EMBEDDING", "TOKENS"], inputs)

    _compare(reference, run)


def test_torchscript_export(reference: Reference, tmp_path: Path) -> None:
    from concord.runtimes.triton import export_triton

    out = tmp_path / "repo"
    exported = export_triton(reference.model, reference.tokenizer, out, fmt="torchscript")  # type: ignore[arg-type]
    assert [e.name for e in exported] == ["concord-encoder-image", "concord-encoder-text"]
    _check_repository(out, reference, "pytorch_libtorch", "model.pt")

    def run(kind: str, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        path = out / f"concord-encoder-{kind}" / "1" / "model.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; Triton's
            module = torch.jit.load(str(path))  # libtorch backend still loads TorchScript
        with torch.inference_mode():
            outputs = module(*(torch.from_numpy(a) for a in inputs.values()))
        return [o.numpy() for o in outputs]

    _compare(reference, run)


def test_the_shipped_cnn_image_tower_exports_to_onnx(tmp_path: Path) -> None:
    """The recipe's `tiny-cnn` tower (no transformer block, max-pooled tokens) is not the
    session's tiny ViT: its ONNX graph must give the torch embeddings too."""
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime not installed")
    import onnxruntime

    from concord.checkpoints import build_encoder
    from concord.models.config import load_config
    from concord.runtimes.triton import export_triton

    model, tokenizer = build_encoder(load_config("tiny-cnn"), seed=0)
    image = export_triton(model, tokenizer, tmp_path / "repo", fmt="onnx")[0]
    session = onnxruntime.InferenceSession(
        str(image.model_file), providers=["CPUExecutionProvider"]
    )
    uint8 = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    pooled, tokens = session.run(["EMBEDDING", "TOKENS"], {"IMAGE": uint8})
    with torch.inference_mode():
        ref = model.encode_image(torch.from_numpy(uint8).permute(0, 3, 1, 2).float().div_(255.0))
    np.testing.assert_allclose(pooled, ref.pooled.numpy(), atol=ATOL)
    np.testing.assert_allclose(tokens, ref.tokens.numpy(), atol=ATOL)


def test_cli_rejects_unknown_format(reference: Reference, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "export",
            "triton",
            "--model",
            str(reference.directory),
            "--out",
            str(tmp_path),
            "--format",
            "tflite",
        ],
    )
    assert result.exit_code != 0 and "onnx or torchscript" in result.output
