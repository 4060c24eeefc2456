"""Encoder serving vs its ceiling: gRPC throughput / raw batched forward at the same batch
size, and the batch-1 latency the service adds over a raw forward.

    python -m benchmarks.encoder_serving [--model DIR] [--batch 32] [--seconds 3]

Without --model a `tiny` encoder is built with random weights: speed does not depend on
what the weights learned. Writes reports/bench_encoder.md and .json.
"""

from __future__ import annotations

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
from concord.models.config import load_config
from concord.models.preprocess import images_to_tensor
from concord.proto.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc
from pipelines.evaluate.report import MetricRow, write_report

app = typer.Typer(add_completion=False)


def _images(n: int, size: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    return [encode_png(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def _texts(n: int) -> list[str]:
    colours, shapes = ["red", "blue", "green", "yellow"], ["circle", "square", "star", "cross"]
    return [
        f"a {colours[i % 4]} {shapes[(i // 4) % 4]} left of a {colours[(i + 1) % 4]} square"
        for i in range(n)
    ]


@app.command()
def main(
    model: Annotated[Path | None, typer.Option(help="encoder dir (default: random tiny)")] = None,
    batch: Annotated[int, typer.Option(help="items per request and per raw forward")] = 32,
    seconds: Annotated[float, typer.Option(help="measuring time per figure")] = 3.0,
    out: Annotated[Path, typer.Option(help="report directory")] = Path("reports"),
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        if model is None:
            model = home / "encoder"
            save_encoder(*build_encoder(load_config("tiny")), model)
        encoder, tokenizer = load_encoder(model)
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

        ceiling_img = rate(raw_images, seconds)
        ceiling_txt = rate(raw_texts, seconds)
        raw1_img = latencies(lambda: raw_images(pil[:1]))
        raw1_txt = latencies(lambda: raw_texts(texts[:1]))

        with serve(["encoder"], home, CONCORD_ENCODER_MODEL=str(model)) as served:
            channel = grpc.insecure_channel(served.address("encoder"))
            stub = encoder_pb2_grpc.EncoderServiceStub(channel)
            images = [common_pb2.Image(data=p, media_type="image/png") for p in pngs]
            img_req = encoder_pb2.EncodeImagesRequest(images=images)
            txt_req = encoder_pb2.EncodeTextsRequest(texts=texts)
            one_img = encoder_pb2.EncodeImagesRequest(images=images[:1])
            one_txt = encoder_pb2.EncodeTextsRequest(texts=texts[:1])

            served_img = rate(lambda: len(stub.EncodeImages(img_req).encodings), seconds)
            served_txt = rate(lambda: len(stub.EncodeTexts(txt_req).encodings), seconds)
            served_img_4 = concurrent_rate(
                lambda: len(stub.EncodeImages(img_req).encodings), 4, seconds
            )
            served1_img = latencies(lambda: stub.EncodeImages(one_img))
            served1_txt = latencies(lambda: stub.EncodeTexts(one_txt))
            channel.close()

    b = f"batch={batch}"
    rows = [
        MetricRow("images/s", b, "raw forward (ceiling)", ceiling_img),
        MetricRow("images/s", b, "gRPC EncodeImages", served_img, "raw forward (ceiling)"),
        MetricRow(
            "images/s", b, "gRPC EncodeImages, 4 clients", served_img_4, "raw forward (ceiling)"
        ),
        MetricRow("texts/s", b, "raw forward (ceiling)", ceiling_txt),
        MetricRow("texts/s", b, "gRPC EncodeTexts", served_txt, "raw forward (ceiling)"),
        MetricRow("served/ceiling", b, "images", served_img / ceiling_img),
        MetricRow("served/ceiling", b, "texts", served_txt / ceiling_txt),
    ]
    for kind, raw, srv in (("image", raw1_img, served1_img), ("text", raw1_txt, served1_txt)):
        for q in (50, 99):
            rows.append(MetricRow(f"p{q} ms", f"batch=1 {kind}", "raw forward", pct(raw, q) * 1e3))
            rows.append(
                MetricRow(f"p{q} ms", f"batch=1 {kind}", "gRPC", pct(srv, q) * 1e3, "raw forward")
            )
        rows.append(
            MetricRow(
                "overhead p50 ms",
                f"batch=1 {kind}",
                "gRPC - raw",
                (pct(srv, 50) - pct(raw, 50)) * 1e3,
            )
        )
    files = write_report("bench_encoder", rows, out, title="Encoder serving vs raw forward")
    for row in rows:
        typer.echo(f"{row.metric:>18} {row.split:>16} {row.method:<32} {row.value:10.2f}")
    typer.echo(f"wrote {files.markdown}")


if __name__ == "__main__":
    app()
