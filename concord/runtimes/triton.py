"""Export the encoder to a Triton model repository: one model per modality (see
`concord.runtimes.v2` for the tensor contract), each ONNX (`onnxruntime_onnx`) or TorchScript
(`pytorch_libtorch`) with a `config.pbtxt` that turns on Triton's dynamic batcher.

    <out>/<name>-image/config.pbtxt   IMAGE UINT8 [B,S,S,3] -> EMBEDDING, TOKENS
    <out>/<name>-image/1/model.onnx   (or model.pt)
    <out>/<name>-text/config.pbtxt    INPUT_IDS, ATTENTION_MASK INT64 [B,T] -> EMBEDDING, TOKENS
    <out>/<name>-text/1/model.onnx

Text tokenization is not part of the exported graph: the encoder service tokenizes (with the
tokenizer saved beside the weights) and sends ids, so spans and token strings stay exact.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from concord.checkpoints import EncoderModel, load_model
from concord.config import Settings, load_settings
from concord.models.dual_encoder import DualEncoder
from concord.models.preprocess import TextTokenizer
from concord.registry import Registry
from concord.runtimes import v2

Format = Literal["onnx", "torchscript"]
PLATFORMS: dict[str, str] = {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_libtorch"}
MODEL_FILES: dict[str, str] = {"onnx": "model.onnx", "torchscript": "model.pt"}
TRITON_TYPES = {"UINT8": "TYPE_UINT8", "INT64": "TYPE_INT64", "FP32": "TYPE_FP32"}
ONNX_OPSET = 17


class ImageModule(nn.Module):
    """UINT8 (B, S, S, 3) -> (EMBEDDING (B, E), TOKENS (B, N, E)); /255 inside the graph."""

    def __init__(self, model: EncoderModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        pixels = images.permute(0, 3, 1, 2).float() / 255.0
        encoded = self.model.encode_image(pixels)
        return encoded.pooled, encoded.tokens


class TextModule(nn.Module):
    """(INPUT_IDS, ATTENTION_MASK) int64 (B, T) -> (EMBEDDING (B, E), TOKENS (B, T, E))."""

    def __init__(self, model: EncoderModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        encoded = self.model.encode_text(input_ids, attention_mask)
        return encoded.pooled, encoded.tokens


@dataclass(frozen=True)
class ExportedModel:
    name: str  # the Triton model name (directory under the repository)
    directory: Path  # <out>/<name>
    model_file: Path  # <out>/<name>/1/model.onnx or model.pt
    config_file: Path  # <out>/<name>/config.pbtxt


def export_triton(
    model: EncoderModel,
    tokenizer: TextTokenizer,
    out: Path,
    *,
    name: str = "concord-encoder",
    fmt: Format = "onnx",
    max_batch_size: int = 64,
    max_queue_delay_us: int = 2000,
) -> list[ExportedModel]:
    """Write the Triton model repository for `model` under `out` (created; files overwritten).

    Args:
        model: the encoder, ours or a public CLIP (put in eval mode here; exported on CPU in
            fp32).
        tokenizer: its tokenizer (only used to make example inputs for tracing).
        out: the model repository directory.
        name: base model name: `<name>-image` and `<name>-text` are written.
        fmt: "onnx" (onnxruntime backend) or "torchscript" (libtorch backend).
        max_batch_size: Triton's max batch size (keep >= the encoder's `batching.max_batch_size`).
        max_queue_delay_us: how long Triton's dynamic batcher waits to fill a batch.
    Returns:
        The two exported models (image first).
    """
    if fmt not in PLATFORMS:
        raise ValueError(f"format must be one of {sorted(PLATFORMS)}, got {fmt!r}")
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    model = model.float().cpu().eval()
    size = model.image_size
    embed_dim = model.config.embed_dim if isinstance(model, DualEncoder) else model.embed_dim
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8, generator=generator)
    batch = tokenizer(["a red circle", "a small blue square left of a green star"])
    jobs: list[tuple[str, nn.Module, tuple[Tensor, ...], Sequence[v2.TensorSpec]]] = [
        (v2.image_model(name), ImageModule(model), (images,), v2.image_inputs(size)),
        (
            v2.text_model(name),
            TextModule(model),
            (batch.input_ids, batch.attention_mask),
            v2.text_inputs(),
        ),
    ]
    out = Path(out)
    exported = []
    for model_name, module, example, inputs in jobs:
        directory = out / model_name
        model_file = directory / "1" / MODEL_FILES[fmt]
        model_file.parent.mkdir(parents=True, exist_ok=True)
        outputs = v2.outputs(embed_dim)
        _export_module(module, example, inputs, outputs, model_file, fmt)
        config_file = directory / "config.pbtxt"
        config_file.write_text(
            config_pbtxt(model_name, fmt, inputs, outputs, max_batch_size, max_queue_delay_us)
        )
        exported.append(ExportedModel(model_name, directory, model_file, config_file))
    return exported


def export_triton_from(
    model: str, out: Path, settings: Settings | None = None, **options: object
) -> list[ExportedModel]:
    """`export_triton` for a model directory (any kind `concord.checkpoints.open_checkpoint`
    reads) or `models:/` URI (resolved through the registry `settings` name)."""

    def registry() -> Registry:
        return Registry.from_settings(settings or load_settings())

    loaded = load_model(model, registry)
    return export_triton(loaded.torch_model(), loaded.tokenizer, out, **options)  # type: ignore[arg-type]


def config_pbtxt(
    name: str,
    fmt: Format,
    inputs: Sequence[v2.TensorSpec],
    outputs: Sequence[v2.TensorSpec],
    max_batch_size: int,
    max_queue_delay_us: int,
) -> str:
    """Returns: the model's `config.pbtxt` (protobuf text format of Triton's ModelConfig)."""

    def tensors(specs: Sequence[v2.TensorSpec]) -> str:
        rows = []
        for spec in specs:
            dims = ", ".join(str(d) for d in spec.shape[1:])  # the batch dim is implicit
            rows.append(
                f'  {{ name: "{spec.name}" data_type: {TRITON_TYPES[spec.datatype]} '
                f"dims: [ {dims} ] }}"
            )
        return ",\n".join(rows)

    return (
        f'name: "{name}"\n'
        f'platform: "{PLATFORMS[fmt]}"\n'
        f'default_model_filename: "{MODEL_FILES[fmt]}"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [\n{tensors(inputs)}\n]\n"
        f"output [\n{tensors(outputs)}\n]\n"
        "dynamic_batching {\n"
        f"  max_queue_delay_microseconds: {max_queue_delay_us}\n"
        "}\n"
        "instance_group [ { count: 1 kind: KIND_AUTO } ]\n"
        "version_policy: { latest: { num_versions: 1 } }\n"
    )


def _export_module(
    module: nn.Module,
    example: tuple[Tensor, ...],
    inputs: Sequence[v2.TensorSpec],
    outputs: Sequence[v2.TensorSpec],
    path: Path,
    fmt: Format,
) -> None:
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and exporter warnings about python branches
        if fmt == "torchscript":
            traced = torch.jit.trace(module, example, strict=False)
            traced.save(str(path))
            return
        dynamic = {
            spec.name: {i: f"{spec.name.lower()}_{i}" for i, d in enumerate(spec.shape) if d < 0}
            for spec in (*inputs, *outputs)
        }
        # The TorchScript-based exporter: the dynamo one needs onnxscript, which Concord lacks.
        torch.onnx.export(
            module,
            example,
            str(path),
            dynamo=False,
            input_names=[s.name for s in inputs],
            output_names=[s.name for s in outputs],
            dynamic_axes=dynamic,
            opset_version=ONNX_OPSET,
        )
