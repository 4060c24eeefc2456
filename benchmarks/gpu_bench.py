"""The GPU path in one run: a ViT-B/32-size CLIP (image and text towers, bf16) raw vs served.

    python -m benchmarks.gpu_bench [--device cuda|cpu] [--quick] [--out DIR]   (benchmarks/gpu.sh)

The model is a randomly initialised CLIP ViT-B/32 (224 px, 32 px patches, 12+12 layers, 512-d,
49,408-token vocabulary) saved as a transformers CLIP directory and loaded through Concord's
public-CLIP loader (`concord.checkpoints.load_clip_checkpoint`): speed does not depend on what
the weights learned. `--quick` uses a tiny CLIP of the same kind (the CPU dry run of the tests).

Measured in the same run, each figure with its error when it fails (a partial failure still
reports what worked):

- encoder, raw: the forward ceiling (pixels or token ids already on the device) at batch
  1/32/256 in the variants the benchmark can toggle: autocast bf16 as the service runs it, bf16
  weights, channels_last, CUDA graphs for the fixed batch shapes, torch.compile (--compile);
  and a raw end-to-end pipeline (JPEG bytes -> embeddings) with decode on the GPU
  (torchvision.io.decode_jpeg, nvjpeg) or in a thread pool (PIL) with pinned-memory copies, and
  more than one batch in flight (--inflight worker threads, each on its own CUDA stream);
- encoder, served: gRPC EncodeImages (JPEG bytes: decode + preprocess + forward in the service)
  and EncodeTexts at batch 1/32/256 with 1 and several concurrent clients, against the ceiling;
  embeddings served vs raw agree (cosine);
- search: gRPC Search vs the raw Qdrant engine (vector queries), and text queries (encoder on
  the device + engine) served vs raw, 1 and several clients;
- scorer: gRPC Score vs raw AlignmentScorer.score (fp32 on the device, as the service runs it:
  CLIP4DM takes gradients), 1 and several clients.

The services run as one `concord serve encoder retrieval scorer` process (started with
`python -c`, so a python with torch but without the installed `concord` script works) with the
service's own settings: CONCORD_DEVICE__DEFAULT, CONCORD_DEVICE__PRECISION=bf16,
CONCORD_BATCHING__MAX_BATCH_SIZE / MAX_QUEUE sized to the largest batch and client count.

Writes bench_gpu.md + bench_gpu.json (rows in the reports/ shape, plus the options used, the
failures and the GPU) to --out, else $OUT when set, else reports/ -- only for a GPU run: a CPU
run without --out writes under a temporary directory, never a GPU report. The report is
rewritten after each section, so a run stopped at a time limit still leaves what it measured.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from benchmarks.gpu_bench_encoder_raw import (
    compiled_ceiling,
    load_models,
    raw_encoder,
    raw_pipelines,
    reference_embeddings,
)
from benchmarks.gpu_bench_encoder_served import served_encoder
from benchmarks.gpu_bench_inputs import FULL, QUICK, Sizes, make_jpegs, texts_for, write_clip
from benchmarks.gpu_bench_report import Bench, ratios
from benchmarks.gpu_bench_scorer import raw_scorer, scorer_package, served_scorer
from benchmarks.gpu_bench_search import build_collection, raw_search, served_search
from benchmarks.gpu_bench_serving import RECORD_ENV, serve
from benchmarks.gpu_check import environment
from concord.config import DeviceSettings
from concord.devices import DeviceUnavailable, configure_torch_threads, resolve_device

app = typer.Typer(add_completion=False)


def record_imports() -> None:
    path = os.environ.get(RECORD_ENV)
    if not path:
        return

    def dump() -> None:
        with open(path, "a") as f:
            f.write("\n".join(sorted({m.split(".")[0] for m in sys.modules})) + "\n")

    atexit.register(dump)


def options_used(
    device: torch.device,
    quick: bool,
    cuda_graphs: bool,
    channels_last: bool,
    compile_: bool,
    gpu_decode: bool,
    pinned: bool,
    inflight: int,
) -> dict[str, Any]:
    try:
        import torchvision

        tv: str | None = torchvision.__version__
    except ImportError:
        tv = None
    return {
        "quick": quick,
        "device": str(device),
        "raw precision": "bf16 (autocast as served; bf16 weights)"
        if device.type == "cuda"
        else "fp32",
        "cuda_graphs": cuda_graphs and device.type == "cuda",
        "channels_last": channels_last,
        "torch_compile": compile_,
        "torchvision_decode": tv if (gpu_decode and tv) else None,
        "decode": (
            f"torchvision {tv} decode_jpeg on {device.type} + PIL thread pool"
            if gpu_decode and tv
            else "PIL thread pool (torchvision not installed or --no-gpu-decode)"
        ),
        "pinned_memory": pinned and device.type == "cuda",
        "inflight": inflight,
        "served settings": {},
    }


@app.command()
def main(
    device_name: Annotated[
        str, typer.Option("--device", help="cuda (default), cuda:N or cpu (a dry run)")
    ] = "cuda",
    quick: Annotated[bool, typer.Option(help="tiny model, few points, short windows")] = False,
    out: Annotated[
        Path | None, typer.Option(help="report dir (default: $OUT, else reports/ on a GPU)")
    ] = None,
    seconds: Annotated[float | None, typer.Option(help="timing window per figure")] = None,
    cuda_graphs: Annotated[bool, typer.Option(help="CUDA graphs for fixed shapes")] = True,
    channels_last: Annotated[bool, typer.Option(help="channels_last pixels and model")] = True,
    compile_: Annotated[
        bool, typer.Option("--compile/--no-compile", help="torch.compile ceiling (slow)")
    ] = False,
    gpu_decode: Annotated[bool, typer.Option(help="torchvision.io.decode_jpeg path")] = True,
    pinned: Annotated[bool, typer.Option(help="pinned host memory for copies")] = True,
    inflight: Annotated[int, typer.Option(help="batches in flight (raw pipeline)")] = 2,
    budget: Annotated[float, typer.Option(help="seconds; optional work past it is skipped")] = 420,
) -> None:
    """Raw ceilings vs served, encoder / search / scorer, on one device; see the module doc."""
    record_imports()
    try:
        device = resolve_device(device_name, setting="--device")
    except DeviceUnavailable as err:
        print(f"{err}\n(--device cpu runs the same code on the CPU: a dry run)", flush=True)
        raise typer.Exit(2) from None
    sizes = QUICK if quick else FULL
    if seconds is not None:
        sizes = dataclasses.replace(sizes, seconds=seconds)
    if out is None:
        env_out = os.environ.get("OUT")
        if env_out:
            out = Path(env_out)
        elif device.type == "cuda":
            out = Path("reports")
        else:  # never a CPU figure in reports/bench_gpu.md
            out = Path(tempfile.gettempdir()) / "concord-gpu-bench-dry-run"
    opts = options_used(
        device, quick, cuda_graphs, channels_last, compile_, gpu_decode, pinned, inflight
    )
    bench = Bench(device, out, opts, budget=budget)
    # torch's pools as the services size theirs (intra-op and inter-op: with torch's default
    # inter-op pool, CLIP4DM's backward ran 20x slower on a busy 2-core machine); one thread on
    # a CPU dry run, which shares the machine with the service process.
    configure_torch_threads(DeviceSettings(torch_threads=1 if device.type == "cpu" else None))
    bench.facts["environment"] = environment(device)
    print(json.dumps(bench.facts["environment"], indent=1), flush=True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            bench.facts["nvidia-smi"] = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
    try:
        run_all(bench, sizes, device)
    finally:
        path = bench.write()
        print(f"wrote {path} and {path.with_suffix('.json')}", flush=True)
        for g in bench.goals():
            print(f"GOAL {g['goal']}: {g['value']} -> met={g['met']}", flush=True)
        if bench.failures:
            print(
                f"{len(bench.failures)} measurement(s) FAILED: "
                + "; ".join(f["what"] for f in bench.failures),
                flush=True,
            )


def run_all(bench: Bench, sizes: Sizes, device: torch.device) -> None:
    opts = bench.options
    with tempfile.TemporaryDirectory(prefix="concord-gpu-bench-") as tmp:
        home = Path(tmp)
        texts = texts_for(max(max(sizes.batches), 64))
        with bench.section("inputs"):
            directory = write_clip(home / "clip", sizes.clip, " ".join(texts).split())
            jpegs = make_jpegs(max(max(sizes.batches) * 2, 64), sizes.image_side)
            bench.facts["jpeg bytes (mean)"] = int(np.mean([len(j) for j in jpegs]))
            m = load_models(bench, directory, opts["channels_last"])
            vision, text = sizes.clip["vision_config"], sizes.clip["text_config"]
            bench.facts["model"] = (
                f"random CLIP (Concord's public-CLIP loader): vision "
                f"{vision['hidden_size']}x{vision['num_hidden_layers']} layers, "
                f"{vision['image_size']} px / {vision['patch_size']} px patches; text "
                f"{text['hidden_size']}x{text['num_hidden_layers']} layers, vocab "
                f"{text['vocab_size']}; {sizes.clip['projection_dim']}-d; JPEGs "
                f"{sizes.image_side} px"
            )
            lengths = m.tokenizer(texts[:8]).attention_mask.sum(1)
            bench.facts["caption tokens (first 8)"] = [int(x) for x in lengths]
            gen = torch.Generator().manual_seed(0)
            side = m.image_size
            pixels = torch.rand(max(sizes.batches), 3, side, side, generator=gen).to(device)
            rng = np.random.default_rng(1)
            queries = rng.standard_normal((200, m.embed_dim)).astype(np.float32)
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)

        with bench.section("search: raw engine"):
            store = bench.measure(
                "build collection", lambda: build_collection(bench, home, sizes, m.embed_dim)
            )
            if store is not None:
                raw_search(bench, store, sizes, queries, m, texts)
                store.close()  # one process owns a shard: the service opens it next

        with bench.section("encoder: raw forward ceilings"):
            raw_encoder(bench, m, sizes, pixels, texts)
        pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
        with pool, bench.section("encoder: raw JPEG -> embedding pipelines"):
            raw_pipelines(bench, m, sizes, jpegs, pool)
        with bench.section("scorer: raw"):
            raw_scorer(bench, m, sizes, jpegs, texts)

        # What the served path must give back: the service's preprocessing and precision.
        reference = bench.measure(
            "raw reference embeddings", lambda: reference_embeddings(bench, m, jpegs, texts)
        )
        largest = max(sizes.batches)
        env = {
            "CONCORD_ENCODER_MODEL": str(directory),
            "CONCORD_SCORER__MODEL": str(scorer_package(home, directory, min(3, m.text_depth))),
            "CONCORD_DEVICE__DEFAULT": str(device),
            "CONCORD_DEVICE__PRECISION": "bf16" if device.type == "cuda" else "auto",
            "CONCORD_BATCHING__MAX_BATCH_SIZE": str(largest),
            "CONCORD_BATCHING__MAX_QUEUE": str(max(sizes.max_queue, 2 * largest * sizes.many)),
        }
        if device.type == "cpu":  # a dry run on a shared machine: no spinning thread pools
            env["CONCORD_DEVICE__TORCH_THREADS"] = "1"
        opts["served settings"] = {k: v for k, v in env.items() if "MODEL" not in k}

        def served() -> None:
            with serve(home, env) as addresses:
                bench.facts["section seconds"]["served: start"] = round(
                    time.perf_counter() - start, 1
                )
                served_encoder(bench, sizes, addresses["encoder"], jpegs, texts, reference)
                bench.write()
                served_search(bench, sizes, addresses["retrieval"], queries, texts)
                bench.write()
                served_scorer(bench, sizes, addresses["scorer"], jpegs, texts)

        with bench.section("served: encoder + retrieval + scorer"):
            start = time.perf_counter()
            bench.measure("serve encoder + retrieval + scorer", served)
            log = home / "serve.log"
            if log.is_file() and any(f["what"].startswith("serve") for f in bench.failures):
                bench.facts["serve.log (tail)"] = log.read_text()[-3000:]
            ratios(bench, sizes)

        if opts["torch_compile"]:
            if bench.left() < 90:
                bench.skip("torch.compile ceiling", f"time budget ({bench.left():.0f} s left)")
            else:
                with bench.section("encoder: torch.compile ceiling"):
                    compiled_ceiling(bench, m, sizes, pixels)


if __name__ == "__main__":
    app()
