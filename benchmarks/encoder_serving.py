"""Encoder serving vs its ceiling: gRPC throughput / raw batched forward at the same batch
size (1 client and several), the batch-1 latency the service adds over a raw forward, and
where the served time goes (py-spy on the service, grouped into stages).

    python -m benchmarks.encoder_serving [--model DIR] [--batch 32] [--clients 4] [--seconds 3]

Without --model a `tiny` encoder is built with random weights: speed does not depend on
what the weights learned. The raw ceiling is the servable's own work on decoded images
(resize/crop + forward) and on texts (tokenize + forward) in this process, with the same torch
threads and OpenMP environment as the service, measured in alternating rounds with the served figures
(the best of each kept, so a burst of load elsewhere does not fake a ratio). Writes
reports/bench_encoder.md and .json.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import grpc
import numpy as np
import torch
import typer

from benchmarks.harness import concurrent_rate, latencies, pct, rate, serve
from benchmarks.profile import (
    ENCODER_STAGES,
    best,
    child_pid,
    cpu_used,
    load_note,
    prioritise,
    same_threads,
    sample,
)
from concord.checkpoints import build_encoder, load_encoder, save_encoder
from concord.media import decode_image, encode_png
from concord.models.config import load_config
from concord.models.preprocess import images_to_tensor
from concord.proto.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc
from pipelines.evaluate.report import MetricRow, write_report

app = typer.Typer(add_completion=False)
N_LATENCY = 100  # calls per latency sample


def _images(n: int, size: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    return [encode_png(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def _texts(n: int) -> list[str]:
    colours, shapes = ["red", "blue", "green", "yellow"], ["circle", "square", "star", "cross"]
    return [
        f"a {colours[i % 4]} {shapes[(i // 4) % 4]} left of a {colours[(i + 1) % 4]} square"
        for i in range(n)
    ]


def _calls_for(fn: Callable[[], object], seconds: float) -> int:
    """Call `fn` for `seconds`; returns: how many calls."""
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()
        calls += 1
    return calls


@app.command()
def main(
    model: Annotated[Path | None, typer.Option(help="encoder dir (default: random tiny)")] = None,
    batch: Annotated[int, typer.Option(help="items per request and per raw forward")] = 32,
    clients: Annotated[int, typer.Option(help="concurrent clients in the several-client rows")] = 4,
    seconds: Annotated[float, typer.Option(help="measuring time per figure")] = 3.0,
    threads: Annotated[int, typer.Option(help="torch threads here and in the service")] = 1,
    rounds: Annotated[int, typer.Option(help="alternating raw/served rounds (best kept)")] = 2,
    profile: Annotated[bool, typer.Option(help="py-spy the service under load")] = True,
    out: Annotated[Path, typer.Option(help="report directory")] = Path("reports"),
) -> None:
    same_threads(threads, "benchmarks.encoder_serving")
    prioritise()
    load_before = load_note()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        if model is None:
            model = home / "encoder"
            save_encoder(*build_encoder(load_config("tiny")), model)
        encoder, tokenizer = load_encoder(model)
        encoder.eval()
        size = encoder.image_size
        pngs, texts = _images(batch, size), _texts(batch)
        pil = [decode_image(p) for p in pngs]

        @torch.inference_mode()
        def raw_images(items: list = pil) -> int:
            encoder.encode_image(images_to_tensor(items, size))
            return len(items)

        @torch.inference_mode()
        def raw_texts(items: list[str] = texts) -> int:
            tokens = tokenizer(items)
            encoder.encode_text(tokens.input_ids, tokens.attention_mask)
            return len(items)

        def measure_raw() -> dict[str, Any]:
            return {
                "img": rate(raw_images, seconds),
                "txt": rate(raw_texts, seconds),
                "img1": latencies(lambda: raw_images(pil[:1]), n=N_LATENCY),
                "txt1": latencies(lambda: raw_texts(texts[:1]), n=N_LATENCY),
            }

        env = {"CONCORD_ENCODER_MODEL": str(model), "CONCORD_DEVICE__TORCH_THREADS": str(threads)}
        with serve(["encoder"], home, **env) as served:
            pid = child_pid()
            prioritise(pid)
            channel = grpc.insecure_channel(served.address("encoder"))
            stub = encoder_pb2_grpc.EncoderServiceStub(channel)
            images = [common_pb2.Image(data=p, media_type="image/png") for p in pngs]
            img_req = encoder_pb2.EncodeImagesRequest(images=images)
            txt_req = encoder_pb2.EncodeTextsRequest(texts=texts)
            one_img = encoder_pb2.EncodeImagesRequest(images=images[:1])
            one_txt = encoder_pb2.EncodeTextsRequest(texts=texts[:1])

            def calls(req: object, method: Callable[..., encoder_pb2.EncodeResponse]) -> int:
                return len(method(req).encodings)

            def img(req: object = img_req) -> int:
                return calls(req, stub.EncodeImages)

            def txt(req: object = txt_req) -> int:
                return calls(req, stub.EncodeTexts)

            def measure_served() -> dict[str, Any]:
                return {
                    "img": rate(img, seconds),
                    "img_n": concurrent_rate(img, clients, seconds),
                    "txt": rate(txt, seconds),
                    "txt_n": concurrent_rate(txt, clients, seconds),
                    "img1_n": concurrent_rate(lambda: img(one_img), clients, seconds),
                    "txt1_n": concurrent_rate(lambda: txt(one_txt), clients, seconds),
                    "img1": latencies(lambda: stub.EncodeImages(one_img), n=N_LATENCY),
                    "txt1": latencies(lambda: stub.EncodeTexts(one_txt), n=N_LATENCY),
                    "floor1": latencies(lambda: stub.GetInfo(info), n=N_LATENCY),
                }

            info = common_pb2.GetInfoRequest()
            raw_runs, served_runs = [], []
            for _ in range(rounds):  # alternating: raw, served, raw, served, ...
                raw_runs.append(measure_raw())
                served_runs.append(measure_served())
            raw, srv = best(raw_runs), best(served_runs)
            # CPU accounting of one window each: what a 32-item request costs the service and
            # the client, against what the same work costs in-process.
            cpu: dict[str, float] = {}
            for name, served_call in (("images", img), ("texts", txt)):
                with cpu_used({"service": pid, "client": None}) as used:
                    requests = _calls_for(served_call, seconds)
                cpu[f"{name} service"] = used["service"] * 1e3 / requests
                cpu[f"{name} client"] = used["client"] * 1e3 / requests
            profiles = []
            if profile:
                for title, load, n, per_request in (
                    (f"images, batch {batch}, {clients} clients", img, clients, batch),
                    (f"texts, batch {batch}, {clients} clients", txt, clients, batch),
                    ("images, batch 1, 1 client", lambda: img(one_img), 1, 1),
                    ("texts, batch 1, 1 client", lambda: txt(one_txt), 1, 1),
                ):
                    with sample(pid) as prof:
                        items = concurrent_rate(load, n, seconds) * seconds
                    requests = int(items / per_request)
                    profiles.append(
                        prof.breakdown(ENCODER_STAGES, requests).markdown(f"Profile: {title}")
                    )
            channel.close()
        for name, raw_call in (("images", raw_images), ("texts", raw_texts)):
            with cpu_used({"raw": None}) as used:
                requests = _calls_for(raw_call, seconds)
            cpu[f"{name} raw"] = used["raw"] * 1e3 / requests
    load_after = load_note()
    ceiling_img, ceiling_txt = raw["img"], raw["txt"]
    served_img, served_img_n, served_txt, served_txt_n = (
        srv["img"],
        srv["img_n"],
        srv["txt"],
        srv["txt_n"],
    )

    b = f"batch={batch}"
    ceil = "raw forward (ceiling)"
    rows = [
        MetricRow("images/s", b, ceil, ceiling_img),
        MetricRow("images/s", b, "gRPC EncodeImages", served_img, ceil),
        MetricRow("images/s", b, f"gRPC EncodeImages, {clients} clients", served_img_n, ceil),
        MetricRow("images/s", "batch=1", f"gRPC, {clients} clients (batched)", srv["img1_n"]),
        MetricRow("texts/s", b, ceil, ceiling_txt),
        MetricRow("texts/s", b, "gRPC EncodeTexts", served_txt, ceil),
        MetricRow("texts/s", b, f"gRPC EncodeTexts, {clients} clients", served_txt_n, ceil),
        MetricRow("texts/s", "batch=1", f"gRPC, {clients} clients (batched)", srv["txt1_n"]),
        MetricRow("served/ceiling", b, "images, 1 client", served_img / ceiling_img),
        MetricRow("served/ceiling", b, f"images, {clients} clients", served_img_n / ceiling_img),
        MetricRow("served/ceiling", b, "texts, 1 client", served_txt / ceiling_txt),
        MetricRow("served/ceiling", b, f"texts, {clients} clients", served_txt_n / ceiling_txt),
    ]
    for kind, key in (("image", "img1"), ("text", "txt1")):
        raw1, served1 = raw[key], srv[key]
        for q in (50, 99):
            rows.append(MetricRow(f"p{q} ms", f"batch=1 {kind}", "raw forward", pct(raw1, q) * 1e3))
            rows.append(
                MetricRow(
                    f"p{q} ms", f"batch=1 {kind}", "gRPC", pct(served1, q) * 1e3, "raw forward"
                )
            )
        rows.append(
            MetricRow(
                "overhead p50 ms",
                f"batch=1 {kind}",
                "gRPC - raw",
                (pct(served1, 50) - pct(raw1, 50)) * 1e3,
            )
        )
    rows.append(
        MetricRow(
            "p50 ms", "gRPC floor", "GetInfo (no model, no payload)", pct(srv["floor1"], 50) * 1e3
        )
    )
    for kind in ("images", "texts"):
        raw_cpu, service, client = (cpu[f"{kind} {k}"] for k in ("raw", "service", "client"))
        rows += [
            MetricRow("CPU ms / request", f"{kind} batch={batch}", "raw in-process", raw_cpu),
            MetricRow(
                "CPU ms / request", f"{kind} batch={batch}", "service", service, "raw in-process"
            ),
            MetricRow("CPU ms / request", f"{kind} batch={batch}", "client", client),
            # Load-independent: how much CPU the served path spends per unit of model work.
            MetricRow("raw CPU / served CPU", f"batch={batch}", kind, raw_cpu / (service + client)),
        ]
    notes = "\n".join(
        [
            f"torch threads {threads} (OMP_NUM_THREADS={threads}) here and in the service; "
            f"{seconds:.0f} s per figure, {rounds} alternating raw/served rounds (best of "
            "each kept); tiny encoder unless --model is given. The gRPC floor row is a GetInfo "
            "call (no model, no payload): what one loopback round trip costs on this machine "
            "at this load.",
            f"Load before: {load_before}; after: {load_after}.",
            "",
            "## Where the served time goes",
            "",
            f"CPU per {batch}-item request (user + system, all threads, one window each): "
            + "; ".join(
                f"{kind}: raw in-process {cpu[kind + ' raw']:.0f} ms, service "
                f"{cpu[kind + ' service']:.0f} ms, client {cpu[kind + ' client']:.0f} ms"
                for kind in ("images", "texts")
            )
            + ". On 2 shared cores the client's CPU comes out of the same budget.",
            "",
            "Busy time of the service's Python threads per request, sampled with py-spy in "
            "separate windows after the figures above (benchmarks/profile.py). Forward time is "
            "counted once per batch (torch's own threads are not sampled).",
            "",
            *profiles,
        ]
    )
    files = write_report(
        "bench_encoder", rows, out, title="Encoder serving vs raw forward", notes=notes
    )
    for row in rows:
        typer.echo(f"{row.metric:>18} {row.split:>16} {row.method:<32} {row.value:10.2f}")
    typer.echo(notes)
    typer.echo(f"wrote {files.markdown}")


if __name__ == "__main__":
    app()
