"""Generator serving vs its ceiling: denoising steps/s of a Generate call over gRPC against
raw U-Net forward steps/s (the guided forward a step costs: conditional + unconditional in
one batch) and the in-process pipeline, measured in the same run on the same model.

    python -m benchmarks.generator_serving [--model DIR] [--batches 1,4] [--steps 20]

Without --model the `tiny` preset is built with random weights: speed does not depend on
what the weights learned. The service runs in its own process (`concord serve generator`);
the ceilings run here, one after the other, never at the same time. Writes
reports/bench_generator.md and .json.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import grpc
import torch
import typer

from benchmarks.harness import serve
from concord.clients.generator import generate_request
from concord.generator_checkpoints import build_generator, load_generator, save_generator
from concord.models.diffusion.config import load_preset
from concord.models.diffusion.pipeline import TextToImage
from concord.proto.v1 import generator_pb2_grpc
from pipelines.evaluate.report import MetricRow, write_report

app = typer.Typer(add_completion=False)
PROMPTS = (
    "a red circle above a blue square",
    "a green triangle to the left of a yellow square",
    "a blue cross",
    "a purple circle in the top left corner",
)
GUIDANCE = 3.0


def _prompts(batch: int) -> list[str]:
    return [PROMPTS[i % len(PROMPTS)] for i in range(batch)]


def _best_rate(fn: Callable[[], object], steps: int, repeats: int) -> float:
    """Steps/s of `fn()` (one run of `steps` steps): the best of `repeats` runs after a warm-up,
    so a neighbour's burst on a shared machine does not decide the figure. Runs in a worker
    thread, as the service runs its generations."""
    rates: list[float] = []

    def timed() -> None:
        fn()
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            rates.append(steps / (time.perf_counter() - started))

    worker = threading.Thread(target=timed)
    worker.start()
    worker.join()
    if len(rates) != repeats:
        raise RuntimeError("a timed run failed (see the traceback above)")
    return max(rates)


def raw_unet_rate(pipe: TextToImage, batch: int, steps: int, repeats: int) -> float:
    """Guided U-Net forwards/s: one forward on (2B) inputs = one denoising step's model cost."""
    config = pipe.config
    size, classes = config.image_size, config.num_classes
    text, mask = pipe.encode_prompts(_prompts(batch))
    null, null_mask = pipe.unet.null_condition(batch)
    x = torch.randn(2 * batch, 3, size, size)
    y = torch.randint(0, classes, (2 * batch, size, size)) if config.layout else None
    t = torch.full((2 * batch,), 500, dtype=torch.long)
    cond, cond_mask = torch.cat([text, null]), torch.cat([mask, null_mask])

    @torch.inference_mode()
    def run() -> None:
        for _ in range(steps):
            pipe.unet(x, t, cond, cond_mask, y)

    return _best_rate(run, steps, repeats)


def pipeline_rate(pipe: TextToImage, batch: int, steps: int, repeats: int) -> float:
    """Steps/s of a whole in-process generation (text encoding, sampler, layout diffusion)."""
    prompts = _prompts(batch)
    return _best_rate(
        lambda: pipe.generate(prompts, seed=0, steps=steps, guidance_scale=GUIDANCE), steps, repeats
    )


def served_rate(
    stub: generator_pb2_grpc.GeneratorServiceStub,
    batch: int,
    steps: int,
    repeats: int,
    preview_every: int = 0,
) -> float:
    """Steps/s of a streamed Generate call, counted from request to last result."""
    request = generate_request(
        _prompts(batch), seed=0, steps=steps, guidance_scale=GUIDANCE, preview_every=preview_every
    )
    return _best_rate(lambda: list(stub.Generate(request)), steps, repeats)


@app.command()
def main(
    model: Annotated[Path | None, typer.Option(help="generator dir (default: random tiny)")] = None,
    batches: Annotated[str, typer.Option(help="prompts per call, comma-separated")] = "1,4",
    steps: Annotated[int, typer.Option(help="denoising steps per call")] = 20,
    repeats: Annotated[int, typer.Option(help="timed runs per figure (best kept)")] = 3,
    threads: Annotated[
        int, typer.Option(help="torch threads here and in the service (1: see the notes)")
    ] = 1,
    out: Annotated[Path, typer.Option(help="report directory")] = Path("reports"),
) -> None:
    torch.set_num_threads(threads)
    sizes = [int(b) for b in batches.split(",")]
    rows: list[MetricRow] = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        if model is None:
            model = home / "tiny-generator"
            save_generator(build_generator(load_preset("tiny"), seed=0), model)
        pipe = load_generator(model)
        raw = {b: raw_unet_rate(pipe, b, steps, repeats) for b in sizes}
        inproc = {b: pipeline_rate(pipe, b, steps, repeats) for b in sizes}
        del pipe
        env = {"CONCORD_GENERATOR__MODEL": str(model), "OMP_NUM_THREADS": str(threads)}
        with serve(["generator"], home, **env) as served:
            channel = grpc.insecure_channel(served.address("generator"))
            stub = generator_pb2_grpc.GeneratorServiceStub(channel)
            grpc_rate = {b: served_rate(stub, b, steps, repeats) for b in sizes}
            preview_rate = {b: served_rate(stub, b, steps, repeats, preview_every=1) for b in sizes}
            channel.close()
    for b in sizes:
        split = f"batch={b}, {steps} steps"
        ceiling = "raw U-Net forward (ceiling)"
        rows += [
            MetricRow("denoising steps/s", split, ceiling, raw[b]),
            MetricRow("denoising steps/s", split, "in-process pipeline", inproc[b], ceiling),
            MetricRow("denoising steps/s", split, "gRPC Generate", grpc_rate[b], ceiling),
            MetricRow(
                "denoising steps/s",
                split,
                "gRPC Generate, preview every step",
                preview_rate[b],
                ceiling,
            ),
            MetricRow("served/ceiling", split, "gRPC Generate", grpc_rate[b] / raw[b]),
            MetricRow("served/ceiling", split, "in-process pipeline", inproc[b] / raw[b]),
        ]
    notes = (
        "One denoising step = one guided U-Net forward on 2B inputs (conditional + "
        "unconditional), the sampler update and the layout step. The ceiling is that forward "
        "alone; `in-process pipeline` adds text encoding, sampling and layout diffusion; "
        "`gRPC Generate` adds the service (validation, worker thread, progress events, PNG "
        "encoding, the stream). Best of several runs each, every figure with the same torch "
        f"thread count ({threads}): on a 2-core machine shared with other jobs, 2 intra-op "
        "threads measured 3-10x slower than 1 (OpenMP workers spin while a neighbour holds "
        "the other core), which would measure the neighbours, not the code."
    )
    files = write_report(
        "bench_generator", rows, out, title="Generator serving vs raw U-Net forward", notes=notes
    )
    for row in rows:
        typer.echo(f"{row.metric:>18} {row.split:>20} {row.method:<36} {row.value:10.2f}")
    typer.echo(f"wrote {files.markdown}")


if __name__ == "__main__":
    app()
