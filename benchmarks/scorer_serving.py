"""Scorer serving vs its ceiling: scored pairs/s through gRPC Score / raw `AlignmentScorer.score`
at the same batch size (both include CLIP4DM's backward pass), and the batch-1 latency the
service adds to a raw score and a raw explanation.

    python -m benchmarks.scorer_serving [--package DIR] [--batch 16] [--seconds 3]

Without --package a scorer package is written around a `tiny` encoder with random weights:
speed does not depend on what the weights learned. Writes reports/bench_scorer.md and .json.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import grpc
import numpy as np
import torch
import typer

from benchmarks.harness import concurrent_rate, latencies, pct, rate, serve
from concord.checkpoints import build_encoder, load_encoder, save_encoder
from concord.media import decode_image, encode_png
from concord.models.alignment import AlignmentScorer
from concord.models.config import load_config
from concord.models.preprocess import images_to_tensor
from concord.proto.v1 import common_pb2, scorer_pb2, scorer_pb2_grpc
from pipelines.evaluate.report import MetricRow, write_report

app = typer.Typer(add_completion=False)
N_LATENCY = 30  # calls per latency figure

# Any valid calibration: the probability's cost does not depend on its coefficients.
CALIBRATION = {
    "form": "logistic",
    "features": ["clip_score", "fine_grained_score", "f_clip_score"],
    "mean": [0.5, 0.2, 0.5],
    "scale": [0.5, 0.2, 0.5],
    "coef": [1.0, 0.5, 1.0],
    "intercept": 0.0,
}


def _images(n: int, size: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    return [encode_png(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def _texts(n: int) -> list[str]:
    colours, shapes = ["red", "blue", "green", "yellow"], ["circle", "square", "star", "cross"]
    return [
        f"a {colours[i % 4]} {shapes[(i // 4) % 4]} left of a {colours[(i + 1) % 4]} square"
        for i in range(n)
    ]


def _package(home: Path) -> Path:
    encoder = home / "encoder"
    save_encoder(*build_encoder(load_config("tiny")), encoder)
    package = home / "scorer"
    package.mkdir()
    manifest = {"encoder": str(encoder), "calibration": CALIBRATION, "created_by": "benchmark"}
    (package / "scorer.json").write_text(json.dumps(manifest))
    return package


@app.command()
def main(
    package: Annotated[Path | None, typer.Option(help="scorer package dir (default: tiny)")] = None,
    batch: Annotated[int, typer.Option(help="pairs per request and per raw call")] = 16,
    seconds: Annotated[float, typer.Option(help="measuring time per figure")] = 3.0,
    out: Annotated[Path, typer.Option(help="report directory")] = Path("reports"),
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        if package is None:
            package = _package(home)
        manifest = json.loads((package / "scorer.json").read_text())
        encoder, tokenizer = load_encoder(Path(manifest["encoder"]))
        encoder.eval()
        scorer = AlignmentScorer(encoder, tokenizer)
        size = encoder.image_size
        pngs, texts = _images(batch, size), _texts(batch)
        pil = [decode_image(p) for p in pngs]

        def raw_score(n: int = batch) -> int:
            scorer.score(images_to_tensor(pil[:n], size), texts[:n])
            return n

        def raw_explain() -> None:
            scorer.explain(images_to_tensor(pil[:1], size), texts[0])

        # Raw figures are taken before and after the served ones and the better kept, so a
        # burst of load from other processes on a shared machine does not fake a ratio.
        def measure_raw() -> tuple[float, np.ndarray, np.ndarray]:
            return (
                rate(raw_score, seconds),
                latencies(lambda: raw_score(1), n=N_LATENCY),
                latencies(raw_explain, n=N_LATENCY),
            )

        before = measure_raw()

        with serve(["scorer"], home, CONCORD_SCORER__MODEL=str(package)) as served:
            channel = grpc.insecure_channel(served.address("scorer"))
            stub = scorer_pb2_grpc.ScorerServiceStub(channel)
            pairs = [
                scorer_pb2.ScorePair(image=common_pb2.Image(data=p, media_type="image/png"), text=t)
                for p, t in zip(pngs, texts, strict=True)
            ]
            request = scorer_pb2.ScoreRequest(pairs=pairs)
            one = scorer_pb2.ScoreRequest(pairs=pairs[:1])
            explain = scorer_pb2.ExplainRequest(image=pairs[0].image, text=texts[0])

            def served_score(req: scorer_pb2.ScoreRequest = request) -> int:
                return len(stub.Score(req, timeout=60).scores)

            served_rate = rate(served_score, seconds)
            served_4 = concurrent_rate(served_score, 4, seconds)
            served_1x8 = concurrent_rate(lambda: served_score(one), 8, seconds)
            served1 = latencies(lambda: stub.Score(one, timeout=60), n=N_LATENCY)
            served_ex = latencies(
                lambda: stub.ExplainMisalignment(explain, timeout=60), n=N_LATENCY
            )
            channel.close()
        after = measure_raw()
        ceiling = max(before[0], after[0])
        raw1 = min(before[1], after[1], key=lambda s: pct(s, 50))
        raw_ex = min(before[2], after[2], key=lambda s: pct(s, 50))

    b = f"batch={batch}"
    base = "raw AlignmentScorer.score (ceiling)"
    rows = [
        MetricRow("pairs/s", b, base, ceiling),
        MetricRow("pairs/s", b, "gRPC Score", served_rate, base),
        MetricRow("pairs/s", b, "gRPC Score, 4 clients", served_4, base),
        MetricRow("pairs/s", b, "gRPC Score of 1 pair, 8 clients (batched)", served_1x8, base),
        MetricRow("served/ceiling", b, "gRPC Score", served_rate / ceiling),
        MetricRow("served/ceiling", b, "gRPC Score, 4 clients", served_4 / ceiling),
    ]
    for kind, raw, srv in (("score", raw1, served1), ("explain", raw_ex, served_ex)):
        for q in (50, 99):
            rows.append(MetricRow(f"p{q} ms", f"batch=1 {kind}", "raw", pct(raw, q) * 1e3))
            rows.append(MetricRow(f"p{q} ms", f"batch=1 {kind}", "gRPC", pct(srv, q) * 1e3, "raw"))
        rows.append(
            MetricRow(
                "overhead p50 ms",
                f"batch=1 {kind}",
                "gRPC - raw",
                (pct(srv, 50) - pct(raw, 50)) * 1e3,
            )
        )
    files = write_report(
        "bench_scorer",
        rows,
        out,
        title="Scorer serving vs raw AlignmentScorer",
        notes=f"torch threads: {torch.get_num_threads()}; tiny encoder unless --package is given.",
    )
    for row in rows:
        typer.echo(f"{row.metric:>16} {row.split:>18} {row.method:<44} {row.value:10.2f}")
    typer.echo(f"wrote {files.markdown}")


if __name__ == "__main__":
    app()
