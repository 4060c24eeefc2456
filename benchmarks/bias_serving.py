"""Bias serving vs the model in process, on the same batches in one run: pairs/s through gRPC
Detect / `BiasDetector.detect` at batch 32 (one client and several), and the batch-1 latency
the service adds, for both Detect modes: labels only (P(biased), label, inconsistency) and with
cues (word and region occlusion, rationale).

    python -m benchmarks.bias_serving [--package DIR] [--batch 32] [--clients 4] [--seconds 3]

Without --package a bias package (the default BiasConfig: MiniLM with LoRA on q/v, frozen
image tower, concat fusion) is written around a `tiny` encoder with random weights: speed does
not depend on what the weights learned. Both sides run with the same torch thread count.
Writes reports/bench_bias.md and .json.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import grpc
import numpy as np
import torch
import typer

from benchmarks.harness import concurrent_rate, latencies, pct, rate, serve
from concord.checkpoints import build_encoder, load_encoder, save_encoder
from concord.checkpoints.bias import load_bias, write_bias_package
from concord.config import load_settings
from concord.media import decode_image, encode_png
from concord.models.bias import BiasClassifier, BiasConfig
from concord.models.config import load_config
from concord.models.preprocess import images_to_tensor
from concord.proto.v1 import bias_pb2, bias_pb2_grpc, common_pb2
from concord.registry import Registry
from concord.wire import ModelId
from pipelines.evaluate.report import MetricRow, write_report
from services.bias import convert
from services.bias.types import Cue, Verdict

app = typer.Typer(add_completion=False)
N_LATENCY = 30  # calls per latency figure
MODES = {"labels only": False, "with cues": True}


@dataclass(frozen=True)
class Figures:
    """One mode's figures; `best` keeps the better of two rounds for each."""

    raw_rate: float  # pairs/s in process at the full batch (the ceiling)
    raw_latency1: np.ndarray  # seconds per one-pair call in process
    rate: float  # pairs/s, one gRPC client sending full batches
    rate_n: float  # pairs/s, several clients sending full batches
    rate_1xn: float  # pairs/s, twice as many clients sending one pair each
    latency1: np.ndarray  # seconds per one-pair gRPC call

    def best(self, other: Figures | None) -> Figures:
        if other is None:
            return self

        def faster(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            return x if pct(x, 50) <= pct(y, 50) else y

        return Figures(
            max(self.raw_rate, other.raw_rate),
            faster(self.raw_latency1, other.raw_latency1),
            max(self.rate, other.rate),
            max(self.rate_n, other.rate_n),
            max(self.rate_1xn, other.rate_1xn),
            faster(self.latency1, other.latency1),
        )


def service_work(pairs: list[bias_pb2.BiasPair], n: int, repeats: int = 20) -> float:
    """Seconds the service spends on a Detect of `n` pairs outside the model (min of
    `repeats`: robust to other load): decoding and validating the request's images and texts,
    and building the response (three cues per verdict, as a loaded pair gets)."""
    cues = (
        Cue("linguistic", 0.2, "the word 'x' raises P(biased) by 0.20", (2, 10), "reckless"),
        Cue("visual", 0.1, "the image's top-left region raises P(biased)", region=(0, 0, 0.5, 0.5)),
        Cue("inconsistency", 0.8, "the text claims what the image does not show"),
    )
    verdicts = [Verdict(True, 0.9, 0.5, 0.8, cues, "biased (P(biased) = 0.90): ...")] * n
    model = ModelId("concord-bias", "1")
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        convert.decode_pairs(pairs[:n], n, 10_000)
        convert.detect_response(verdicts, model).SerializeToString()
        best = min(best, time.perf_counter() - started)
    return best


def _images(n: int, size: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    return [encode_png(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def _texts(n: int) -> list[str]:
    loaded = ["reckless", "shameful", "heroic", "sinister", "calm", "ordinary"]
    shapes = ["circle", "square", "star", "cross"]
    return [
        f"a {loaded[i % 6]} {shapes[(i // 6) % 4]} crowds the {shapes[(i + 1) % 4]} near the "
        f"{['red', 'blue', 'green'][i % 3]} wall"
        for i in range(n)
    ]


def _package(home: Path) -> Path:
    encoder_dir = home / "encoder"
    save_encoder(*build_encoder(load_config("tiny")), encoder_dir)
    encoder, _ = load_encoder(encoder_dir)
    classifier = BiasClassifier.from_encoder(BiasConfig(), encoder)
    return write_bias_package(
        home / "bias", classifier, encoder=str(encoder_dir), extra={"created_by": "benchmark"}
    )


@app.command()
def main(
    package: Annotated[Path | None, typer.Option(help="bias package dir (default: tiny)")] = None,
    batch: Annotated[int, typer.Option(help="pairs per request and per in-process call")] = 32,
    clients: Annotated[int, typer.Option(help="concurrent clients in the several-client rows")] = 4,
    seconds: Annotated[float, typer.Option(help="measuring time per figure")] = 3.0,
    threads: Annotated[int, typer.Option(help="torch threads here and in the service")] = 1,
    rounds: Annotated[int, typer.Option(help="alternating rounds (best of each kept)")] = 2,
    out: Annotated[Path, typer.Option(help="report directory")] = Path("reports"),
) -> None:
    if os.environ.get("OMP_NUM_THREADS") != str(threads):
        # OpenMP sizes its pool from the environment when torch loads: set_num_threads alone
        # left the in-process side up to 3x slower than the service (started with the same
        # OMP_NUM_THREADS), so restart this process with the same environment as the service.
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.execv(sys.executable, [sys.executable, "-m", "benchmarks.bias_serving", *sys.argv[1:]])
    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        if package is None:
            package = _package(home)
        loaded = load_bias(str(package), lambda: Registry.from_settings(load_settings()))
        detector, size = loaded.detector, loaded.image_size
        pngs, texts = _images(batch, size), _texts(batch)
        pil = [decode_image(p) for p in pngs]

        def raw(n: int, explain: bool) -> int:
            # What the servable does per batch: pixels from decoded images, then the model.
            detector.detect(images_to_tensor(pil[:n], size), texts[:n], explain=explain)
            return n

        def raw_call(n: int, explain: bool) -> Callable[[], int]:
            return lambda: raw(n, explain)

        env = {
            "CONCORD_BIAS__MODEL": str(package),
            "CONCORD_BIAS__MAX_PAIRS_PER_REQUEST": str(max(batch, 64)),
            "CONCORD_DEVICE__TORCH_THREADS": str(threads),
            "OMP_NUM_THREADS": str(threads),
        }
        figures: dict[str, Figures | None] = dict.fromkeys(MODES)
        with serve(["bias"], home, **env) as service:
            channel = grpc.insecure_channel(service.address("bias"))
            stub = bias_pb2_grpc.BiasServiceStub(channel)
            pairs = [
                bias_pb2.BiasPair(image=common_pb2.Image(data=p, media_type="image/png"), text=t)
                for p, t in zip(pngs, texts, strict=True)
            ]

            def call(request: bias_pb2.DetectRequest) -> Callable[[], int]:
                return lambda: len(stub.Detect(request, timeout=600).verdicts)

            # In process and served alternate, `rounds` times, and the better figure of each is
            # kept: a burst of load from other processes on a shared machine hits one round of
            # one side, not the ratio.
            for _ in range(rounds):
                for mode, explain in MODES.items():
                    full = bias_pb2.DetectRequest(pairs=pairs, labels_only=not explain)
                    one = bias_pb2.DetectRequest(pairs=pairs[:1], labels_only=not explain)
                    measured = Figures(
                        raw_rate=rate(raw_call(batch, explain), seconds, warmup=1),
                        raw_latency1=latencies(raw_call(1, explain), n=N_LATENCY, warmup=3),
                        rate=rate(call(full), seconds, warmup=1),
                        rate_n=concurrent_rate(call(full), clients, seconds),
                        rate_1xn=concurrent_rate(call(one), 2 * clients, seconds),
                        latency1=latencies(call(one), n=N_LATENCY, warmup=3),
                    )
                    figures[mode] = measured.best(figures[mode])
            channel.close()
        work = {n: service_work(pairs, n) for n in sorted({1, batch})}
    load_after = os.getloadavg()[0]

    rows: list[MetricRow] = []
    b = f"batch={batch}"
    summary = []
    for n, seconds_n in work.items():
        rows.append(
            MetricRow(
                "service work outside the model, min ms",
                f"batch={n}",
                "decode + validate request, build response",
                seconds_n * 1e3,
            )
        )
    for mode in MODES:
        s = figures[mode]
        assert s is not None
        ceiling, raw1, srv1 = s.raw_rate, s.raw_latency1, s.latency1
        base = f"in-process BiasDetector.detect, {mode} (ceiling)"
        grpc_1 = f"gRPC Detect, {mode}"
        grpc_n = f"gRPC Detect, {mode}, {clients} clients"
        grpc_1xn = f"gRPC Detect of 1 pair, {mode}, {2 * clients} clients (batched)"
        rows += [
            MetricRow("pairs/s", b, base, ceiling),
            MetricRow("pairs/s", b, grpc_1, s.rate, base),
            MetricRow("pairs/s", b, grpc_n, s.rate_n, base),
            MetricRow("pairs/s", b, grpc_1xn, s.rate_1xn, base),
            MetricRow("served/ceiling", b, grpc_1, s.rate / ceiling),
            MetricRow("served/ceiling", b, grpc_n, s.rate_n / ceiling),
        ]
        split = f"batch=1, {mode}"
        for q in (50, 99):
            rows.append(MetricRow(f"p{q} ms", split, "in-process", pct(raw1, q) * 1e3))
            rows.append(MetricRow(f"p{q} ms", split, "gRPC", pct(srv1, q) * 1e3, "in-process"))
        overhead = (pct(srv1, 50) - pct(raw1, 50)) * 1e3
        rows.append(MetricRow("overhead p50 ms", split, "gRPC - in-process", overhead))
        # The fastest call of each side: what a call costs when nothing else competes for the
        # cores (the p50s above move with the load on a shared machine).
        rows.append(MetricRow("min ms", split, "in-process", float(raw1.min()) * 1e3))
        rows.append(MetricRow("min ms", split, "gRPC", float(srv1.min()) * 1e3, "in-process"))
        overhead_min = (float(srv1.min()) - float(raw1.min())) * 1e3
        rows.append(MetricRow("overhead min ms", split, "gRPC - in-process", overhead_min))
        model_s = batch / ceiling  # seconds of model work per full batch
        bound = model_s / (model_s + work[batch])
        summary.append(
            f"- {mode}: served / in-process at batch {batch} = "
            f"{s.rate / ceiling:.2f}x with one client (goal >= 0.9x), "
            f"{s.rate_n / ceiling:.2f}x with {clients}; the service's own work outside the "
            f"model ({work[batch] * 1e3:.2f} ms per request) bounds it at {bound:.3f}x. "
            f"Batch-1 overhead p50 {overhead:+.2f} ms, fastest call {overhead_min:+.2f} ms "
            f"(goal <= 2 ms)."
        )
    notes = "\n".join(
        [
            f"torch threads: {threads} here and in the service; load average "
            f"{load_before:.2f} before, {load_after:.2f} after (a shared machine: other work "
            f"competes for the same cores). In process and served alternate for {rounds} "
            "rounds and each figure is the better of its rounds. Served = `concord serve bias` in its own "
            "process, called over loopback gRPC with PNG bytes (decode and validation "
            "included); in-process = `BiasDetector.detect` on already decoded images.",
            "",
            *summary,
        ]
    )
    files = write_report(
        "bench_bias",
        rows,
        out,
        title="Bias serving vs BiasDetector in process",
        notes=notes,
    )
    for row in rows:
        typer.echo(f"{row.metric:>16} {row.split:>24} {row.method:<60} {row.value:10.2f}")
    typer.echo("\n".join(summary))
    typer.echo(f"wrote {files.markdown}")


if __name__ == "__main__":
    app()
