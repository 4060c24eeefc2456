"""The encoder in this process (no gRPC): the CLIP loaded as served and in bf16, forward
ceilings, torch.compile, JPEG -> embedding pipelines and the reference embeddings."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.gpu_bench_inputs import Sizes
from benchmarks.gpu_bench_report import Bench
from benchmarks.gpu_bench_timing import graphed, pipelined_rate, sync
from benchmarks.gpu_check import rate as synced_rate
from concord.devices import inference


@dataclass
class Models:
    directory: Path
    served_like: Any  # ClipAdapter, fp32 weights on the device (run under autocast, as served)
    bf16: Any | None  # a copy in bf16 weights (channels_last where chosen)
    tokenizer: Any
    image_size: int
    embed_dim: int
    text_depth: int


def load_models(bench: Bench, directory: Path, channels_last: bool) -> Models:
    from concord.checkpoints import load_clip_checkpoint

    model = load_clip_checkpoint(directory).to(bench.device).eval()
    low = load_clip_checkpoint(directory).to(bench.device, torch.bfloat16).eval()
    if channels_last:
        low = low.to(memory_format=torch.channels_last)
    return Models(
        directory,
        model,
        low,
        model.tokenizer,
        model.image_size,
        model.embed_dim,
        model.text_depth,
    )


def raw_encoder(bench: Bench, m: Models, sizes: Sizes, pixels: torch.Tensor, texts: list[str]):
    """Forward ceilings: images and texts, inputs already on the device."""
    for b in sizes.batches:
        raw_encoder_batch(bench, m, sizes, b, pixels, texts)


def raw_encoder_batch(
    bench: Bench, m: Models, sizes: Sizes, b: int, pixels: torch.Tensor, texts: list[str]
) -> None:
    device, opts = bench.device, bench.options
    precision = "bf16" if device.type == "cuda" else "fp32"
    as_served = "eager autocast bf16 (as served)" if device.type == "cuda" else "eager fp32"
    px = pixels[:b].contiguous()
    px_cl = px.contiguous(memory_format=torch.channels_last) if opts["channels_last"] else px
    split = f"forward batch={b}"
    tokens = m.tokenizer(texts[:b])
    ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)

    def img_served(px: torch.Tensor = px) -> torch.Tensor:
        with inference(device, precision):  # type: ignore[arg-type]
            return m.served_like.encode_image(px).pooled

    def img_bf16(px: torch.Tensor = px_cl) -> torch.Tensor:
        with torch.inference_mode():
            return m.bf16.encode_image(px.to(torch.bfloat16)).pooled

    def txt_served(ids: torch.Tensor = ids, mask: torch.Tensor = mask) -> torch.Tensor:
        with inference(device, precision):  # type: ignore[arg-type]
            return m.served_like.encode_text(ids, mask).pooled

    def txt_bf16(ids: torch.Tensor = ids, mask: torch.Tensor = mask) -> torch.Tensor:
        with torch.inference_mode():
            return m.bf16.encode_text(ids, mask).pooled

    variants: list[tuple[str, str, Callable[[], Any]]] = [
        ("images/s", as_served, img_served),
        (
            "images/s",
            "eager bf16 weights" + (", channels_last" * opts["channels_last"]),
            img_bf16,
        ),
        ("texts/s", as_served, txt_served),
        ("texts/s", "eager bf16 weights", txt_bf16),
    ]
    for metric, method, fn in variants:
        bench.measure(
            f"{metric} {split} {method}",
            lambda metric=metric, method=method, fn=fn: bench.row(
                metric, split, method, synced_rate(fn, b, device, sizes.seconds)
            ),
        )
    if not opts["cuda_graphs"]:
        return
    if device.type != "cuda":
        bench.skip(f"CUDA graphs {split}", "needs CUDA")
        return

    def img_graph(px: torch.Tensor = px_cl) -> float:
        with torch.inference_mode():
            x = px.to(torch.bfloat16)
            run = graphed(lambda t: m.bf16.encode_image(t).pooled, x)
            return synced_rate(lambda: run(x), b, device, sizes.seconds)

    def txt_graph(ids: torch.Tensor = ids, mask: torch.Tensor = mask) -> float:
        with torch.inference_mode():
            both = torch.stack([ids, mask])
            run = graphed(lambda t: m.bf16.encode_text(t[0], t[1]).pooled, both)
            return synced_rate(lambda: run(both), b, device, sizes.seconds)

    bench.measure(
        f"images/s {split} CUDA graph",
        lambda: bench.row("images/s", split, "bf16 weights + CUDA graph", img_graph()),
    )
    bench.measure(
        f"texts/s {split} CUDA graph",
        lambda: bench.row("texts/s", split, "bf16 weights + CUDA graph", txt_graph()),
    )


def compiled_ceiling(bench: Bench, m: Models, sizes: Sizes, pixels: torch.Tensor) -> None:
    """torch.compile of the bf16 image tower at the largest batch (compiles take a minute)."""
    b = max(sizes.batches)
    x = pixels[:b].to(torch.bfloat16)
    if bench.options["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    model = m.bf16
    compiled = torch.compile(lambda t: model.encode_image(t).pooled, dynamic=False)

    def run() -> float:
        with torch.inference_mode():
            started = time.perf_counter()
            compiled(x)
            sync(bench.device)
            bench.facts["torch.compile seconds"] = round(time.perf_counter() - started, 1)
            return synced_rate(lambda: compiled(x), b, bench.device, sizes.seconds)

    bench.measure(
        "images/s torch.compile",
        lambda: bench.row("images/s", f"forward batch={b}", "bf16 weights + torch.compile", run()),
    )


def square_gpu(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (B, 3, size, size) float in [0, 1]: shorter side to `size`
    (bicubic, antialiased), centre crop: what images_to_tensor does with PIL."""
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    rh, rw = max(size, round(h * scale)), max(size, round(w * scale))
    y = x.float()
    if (rh, rw) != (h, w):
        y = torch.nn.functional.interpolate(
            y, size=(rh, rw), mode="bicubic", antialias=True, align_corners=False
        )
    top, left = (rh - size) // 2, (rw - size) // 2
    return y[..., top : top + size, left : left + size].clamp_(0, 255).div_(255.0)


def raw_pipelines(
    bench: Bench, m: Models, sizes: Sizes, jpegs: list[bytes], pool: ThreadPoolExecutor
) -> None:
    """JPEG bytes -> embeddings in this process, with what the GPU offers."""
    from concord.media import decode_image
    from concord.models.preprocess import _square

    device, opts = bench.device, bench.options
    size, workers = m.image_size, opts["inflight"]
    pin = opts["pinned_memory"] and device.type == "cuda"
    model = m.bf16

    def forward(px: torch.Tensor) -> torch.Tensor:
        if opts["channels_last"]:
            px = px.contiguous(memory_format=torch.channels_last)
        return model.encode_image(px.to(torch.bfloat16)).pooled

    def pil_one(data: bytes) -> np.ndarray:
        return np.asarray(_square(decode_image(data, "image/jpeg"), size), dtype=np.uint8)

    where = "cuda" if device.type == "cuda" else "cpu"
    for b in [b for b in sizes.batches if b > 1]:
        split = f"JPEG -> embedding batch={b}"
        batches = [jpegs[i : i + b] for i in range(0, len(jpegs) - b + 1, b)] or [jpegs[:b]]

        def pil_batch(i: int, b: int = b, batches: list = batches) -> int:
            arrays = list(pool.map(pil_one, batches[i % len(batches)]))
            host = torch.from_numpy(np.stack(arrays))
            if pin:
                host = host.pin_memory()
            px = host.to(device, non_blocking=pin).permute(0, 3, 1, 2).float().div_(255.0)
            forward(px).float().cpu()
            return b

        method = f"PIL decode, thread pool{', pinned' if pin else ''}, {workers} in flight"
        bench.measure(
            f"{split} {method}",
            lambda split=split, method=method, fn=pil_batch: bench.row(
                "images/s", split, method, pipelined_rate(fn, workers, sizes.seconds, device)
            ),
        )
        if opts["torchvision_decode"] is None:
            continue
        from torchvision.io import decode_jpeg

        raw = [
            [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in batch] for batch in batches
        ]

        def tv_batch(i: int, b: int = b, raw: list = raw) -> int:
            decoded = decode_jpeg(raw[i % len(raw)], device=where)
            x = torch.stack(decoded).to(device, non_blocking=True)
            forward(square_gpu(x, size)).float().cpu()
            return b

        method = f"torchvision decode_jpeg on {where}, {workers} in flight"
        bench.measure(
            f"{split} {method}",
            lambda split=split, method=method, fn=tv_batch: bench.row(
                "images/s", split, method, pipelined_rate(fn, workers, sizes.seconds, device)
            ),
        )


def reference_embeddings(
    bench: Bench, m: Models, jpegs: list[bytes], texts: list[str], n: int = 8
) -> dict[str, np.ndarray]:
    """Pooled embeddings as the encoder service computes them (PIL decode, its preprocessing,
    its precision) for the first `n` images and texts."""
    from concord.media import decode_image
    from concord.models.preprocess import images_to_tensor

    device = bench.device
    precision = "bf16" if device.type == "cuda" else "fp32"
    with inference(device, precision):  # type: ignore[arg-type]
        pil = [decode_image(d, "image/jpeg") for d in jpegs[:n]]
        img = m.served_like.encode_image(images_to_tensor(pil, m.image_size).to(device))
        tok = m.tokenizer(texts[:n])
        txt = m.served_like.encode_text(tok.input_ids.to(device), tok.attention_mask.to(device))
    return {
        "images": img.pooled.float().cpu().numpy(),
        "texts": txt.pooled.float().cpu().numpy(),
    }
