"""The encoder served over gRPC: EncodeImages / EncodeTexts throughput and latency, and the
served embeddings checked against the raw path's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks.gpu_bench_inputs import Sizes
from benchmarks.gpu_bench_report import Bench
from benchmarks.gpu_bench_serving import channels, client_rate
from benchmarks.gpu_check import cosines
from benchmarks.harness import latencies, pct


def served_point(
    bench: Bench,
    sizes: Sizes,
    stubs: list[Any],
    split: str,
    clients: int,
    served_items: list[int],
    metric: str,
    name: str,
    call: Callable[[Any], Any],
) -> None:
    """One served throughput figure: `clients` threads calling `call(stub)` for sizes.seconds."""

    def count(stub: Any) -> int:
        n = len(call(stub).encodings)
        served_items[0] += n
        return n

    bench.measure(
        f"{metric} {split} {clients} clients",
        lambda: bench.row(
            metric,
            split,
            f"{name}, {clients} clients",
            client_rate(stubs, count, clients, sizes.seconds),
        ),
    )


def served_encoder(
    bench: Bench,
    sizes: Sizes,
    address: str,
    jpegs: list[bytes],
    texts: list[str],
    reference: dict[str, np.ndarray] | None,
) -> None:
    from concord.proto.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc

    chans = channels(address, sizes.many)
    stubs = [encoder_pb2_grpc.EncoderServiceStub(c) for c in chans]
    images = [common_pb2.Image(data=d, media_type="image/jpeg") for d in jpegs]
    opts = encoder_pb2.EncodeOptions(normalize=True)

    def check() -> str:
        """The served embeddings are the raw path's (same preprocessing, same precision)."""
        if reference is None:
            raise RuntimeError("no raw reference to compare with (see its failure)")
        n = len(reference["images"])
        got_img = stubs[0].EncodeImages(
            encoder_pb2.EncodeImagesRequest(images=images[:n], options=opts), timeout=120
        )
        got_txt = stubs[0].EncodeTexts(
            encoder_pb2.EncodeTextsRequest(texts=texts[:n], options=opts), timeout=120
        )
        for kind, got in (("images", got_img), ("texts", got_txt)):
            served = torch.tensor(np.array([e.embedding.values for e in got.encodings]))
            lo, mean = cosines(torch.from_numpy(reference[kind]), served)
            bench.row("cosine", f"served vs raw {kind} (n={n})", "min", lo)
            bench.row("cosine", f"served vs raw {kind} (n={n})", "mean", mean)
        bench.facts["served model"] = f"{got_img.model.name} {got_img.model.version}"
        return ""

    bench.measure("encoder served vs raw embeddings", check)
    served_items = [0]  # responses' encodings, summed: the served path really ran
    for b in sizes.batches:
        img_req = encoder_pb2.EncodeImagesRequest(images=images[:b], options=opts)
        txt_req = encoder_pb2.EncodeTextsRequest(texts=texts[:b], options=opts)
        for c in sizes.clients:
            served_point(
                bench,
                sizes,
                stubs,
                f"served batch={b}",
                c,
                served_items,
                "images/s",
                "gRPC EncodeImages",
                lambda s, r=img_req: s.EncodeImages(r, timeout=300),
            )
            served_point(
                bench,
                sizes,
                stubs,
                f"served batch={b}",
                c,
                served_items,
                "texts/s",
                "gRPC EncodeTexts",
                lambda s, r=txt_req: s.EncodeTexts(r, timeout=300),
            )
    one_img = encoder_pb2.EncodeImagesRequest(images=images[:1], options=opts)
    one_txt = encoder_pb2.EncodeTextsRequest(texts=texts[:1], options=opts)
    for kind, fn in (
        ("image", lambda: stubs[0].EncodeImages(one_img, timeout=60)),
        ("text", lambda: stubs[0].EncodeTexts(one_txt, timeout=60)),
    ):
        samples = bench.measure(
            f"served {kind} latency", lambda fn=fn: latencies(fn, n=sizes.latency_calls)
        )
        if samples is not None:
            bench.row("p50 ms", f"{kind} batch=1", "gRPC", pct(samples, 50) * 1e3)
            bench.row("p99 ms", f"{kind} batch=1", "gRPC", pct(samples, 99) * 1e3)
    bench.facts["encoder items served"] = served_items[0]
    for c in chans:
        c.close()
