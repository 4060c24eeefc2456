"""The scorer, raw vs served: its model package, AlignmentScorer.score in this process and
gRPC Score."""

from __future__ import annotations

from pathlib import Path

from benchmarks.gpu_bench_encoder_raw import Models
from benchmarks.gpu_bench_inputs import Sizes
from benchmarks.gpu_bench_report import Bench
from benchmarks.gpu_bench_serving import channels, client_rate
from benchmarks.gpu_check import rate as synced_rate
from benchmarks.harness import latencies, pct, placeholder_scorer


def scorer_package(home: Path, encoder: Path, layers: int) -> Path:
    return placeholder_scorer(home / "scorer", encoder, "benchmarks.gpu_bench", layers=layers)


def raw_scorer(bench: Bench, m: Models, sizes: Sizes, jpegs: list[bytes], texts: list[str]) -> None:
    """AlignmentScorer.score in fp32 on the device (as the scorer service runs it)."""
    from concord.checkpoints import load_clip_checkpoint
    from concord.media import decode_image
    from concord.models.alignment import AlignmentScorer
    from concord.models.preprocess import images_to_tensor

    device, b = bench.device, sizes.scorer_batch
    model = load_clip_checkpoint(m.directory).to(device).eval()  # its own copy: hooks go in
    scorer = AlignmentScorer(model, model.tokenizer, layers=min(3, m.text_depth))
    pil = [decode_image(d, "image/jpeg") for d in jpegs[:b]]
    pixels = images_to_tensor(pil, m.image_size).to(device)
    split = f"pairs batch={b}"

    def ceiling() -> float:
        return synced_rate(lambda: scorer.score(pixels, texts[:b]), b, device, sizes.seconds)

    def with_decode() -> float:
        def call() -> object:
            images = [decode_image(d, "image/jpeg") for d in jpegs[:b]]
            return scorer.score(images_to_tensor(images, m.image_size).to(device), texts[:b])

        return synced_rate(call, b, device, sizes.seconds)

    bench.measure(
        "scorer raw", lambda: bench.row("pairs/s", split, "raw score (ceiling)", ceiling())
    )
    bench.measure(
        "scorer raw + decode",
        lambda: bench.row("pairs/s", split, "raw decode + preprocess + score", with_decode()),
    )
    one = pixels[:1]
    samples = bench.measure(
        "scorer raw latency",
        lambda: latencies(lambda: scorer.score(one, texts[:1]), n=sizes.latency_calls),
    )
    if samples is not None:
        bench.row("p50 ms", "score batch=1", "raw", pct(samples, 50) * 1e3)


def served_scorer(
    bench: Bench, sizes: Sizes, address: str, jpegs: list[bytes], texts: list[str]
) -> None:
    from concord.proto.v1 import common_pb2, scorer_pb2, scorer_pb2_grpc

    chans = channels(address, sizes.many)
    stubs = [scorer_pb2_grpc.ScorerServiceStub(c) for c in chans]
    b = sizes.scorer_batch
    pairs = [
        scorer_pb2.ScorePair(image=common_pb2.Image(data=d, media_type="image/jpeg"), text=t)
        for d, t in zip(jpegs[:b], texts[:b], strict=True)
    ]
    request = scorer_pb2.ScoreRequest(pairs=pairs)
    split = f"pairs batch={b}"
    base = "raw score (ceiling)"
    for c in (1, sizes.many):
        bench.measure(
            f"scorer served {c}",
            lambda c=c: bench.row(
                "pairs/s",
                split,
                f"gRPC Score, {c} clients",
                client_rate(
                    stubs, lambda s: len(s.Score(request, timeout=300).scores), c, sizes.seconds
                ),
                base if bench.has("pairs/s", split, base) else None,
            ),
        )
    one = scorer_pb2.ScoreRequest(pairs=pairs[:1])
    samples = bench.measure(
        "scorer served latency",
        lambda: latencies(lambda: stubs[0].Score(one, timeout=60), n=sizes.latency_calls),
    )
    if samples is not None:
        base1 = "raw" if bench.has("p50 ms", "score batch=1", "raw") else None
        bench.row("p50 ms", "score batch=1", "gRPC", pct(samples, 50) * 1e3, base1)
    for c in chans:
        c.close()
