"""A client process that measures one service on command: Concord (over its gRPC stub, in the
project's venv) or clip-as-service (over its own `clip_client`, in the peer venv). The driver
(`python -m benchmarks.peers`) runs one of each and sends them the same commands in turn, so
only one service is under load at a time and both are measured from a separate process.

Protocol: one JSON object per line on stdin, one JSON answer per line on stdout.
    {"op": "rate", "kind": "images"|"texts"|"long_texts", "batch": 32, "seconds": 3}
        -> {"items_per_s": float, "calls": int}
    {"op": "latency", "kind": "images"|"texts", "n": 50}
        -> {"seconds": [float, ...]}
    {"op": "embed", "kind": "images"|"texts", "n": 4} -> {"embeddings": [[float, ...], ...]}
    {"op": "quit"}

    python -m benchmarks.peers.worker --target concord|clip --address HOST:PORT --data DIR

DIR holds the inputs both workers send: images/NNN.jpg, texts.json (short captions) and
texts_long.json (captions of 77+ tokens), written by the driver.
This file imports nothing from Concord at module level: the peer venv runs it too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Encode = Callable[[str, Sequence[Any]], list[list[float]] | int]


def read_inputs(data: Path) -> dict[str, list[Any]]:
    """The input pools by kind: images (JPEG bytes), texts and long_texts (strings)."""
    pools: dict[str, list[Any]] = {
        "images": [p.read_bytes() for p in sorted((data / "images").glob("*.jpg"))]
    }
    for kind, name in (("texts", "texts.json"), ("long_texts", "texts_long.json")):
        if (data / name).is_file():
            pools[kind] = json.loads((data / name).read_text())
    return pools


def concord_encoder(address: str) -> Callable[[str, Sequence[Any], bool], Any]:
    import grpc

    from concord.proto.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc

    channel = grpc.insecure_channel(
        address,
        options=[("grpc.max_receive_message_length", 64 << 20)],
    )
    stub = encoder_pb2_grpc.EncoderServiceStub(channel)
    options = encoder_pb2.EncodeOptions(normalize=True)

    def encode(kind: str, items: Sequence[Any], want: bool) -> Any:
        if kind == "images":
            images = [common_pb2.Image(data=b, media_type="image/jpeg") for b in items]
            response = stub.EncodeImages(
                encoder_pb2.EncodeImagesRequest(images=images, options=options)
            )
        else:
            response = stub.EncodeTexts(
                encoder_pb2.EncodeTextsRequest(texts=list(items), options=options)
            )
        if want:
            return [list(e.embedding.values) for e in response.encodings]
        return len(response.encodings)

    return encode


def clip_encoder(address: str) -> Callable[[str, Sequence[Any], bool], Any]:
    from clip_client import Client  # type: ignore[import-not-found]
    from docarray import Document, DocumentArray  # type: ignore[import-not-found]

    client = Client(f"grpc://{address}")

    def encode(kind: str, items: Sequence[Any], want: bool) -> Any:
        if kind == "images":
            docs = DocumentArray([Document(blob=b, mime_type="image/jpeg") for b in items])
        else:
            docs = DocumentArray([Document(text=t) for t in items])
        # One request per call: the client's batch_size is the request size.
        out = client.encode(docs, batch_size=len(items), show_progress=False)
        if want:
            return [[float(x) for x in e] for e in out.embeddings]
        return len(out)

    return encode


def batch_of(pool: Sequence[Any], size: int, start: int) -> list[Any]:
    """`size` items from `pool`, cycling, starting at `start` (so calls do not repeat one input)."""
    return [pool[(start + i) % len(pool)] for i in range(size)]


def run(encode: Callable[[str, Sequence[Any], bool], Any], inputs: dict[str, list[Any]]) -> None:
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "quit":
            break
        pool = inputs[command["kind"]]
        kind = command["kind"]
        if op == "rate":
            batch, seconds = int(command["batch"]), float(command["seconds"])
            encode(kind, batch_of(pool, batch, 0), False)  # warm-up
            items = calls = 0
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                items += encode(kind, batch_of(pool, batch, calls * batch), False)
                calls += 1
            answer: dict[str, Any] = {
                "items_per_s": items / (time.perf_counter() - started),
                "calls": calls,
            }
        elif op == "latency":
            for i in range(3):
                encode(kind, batch_of(pool, 1, i), False)
            seconds_list = []
            for i in range(int(command["n"])):
                started = time.perf_counter()
                encode(kind, batch_of(pool, 1, i), False)
                seconds_list.append(time.perf_counter() - started)
            answer = {"seconds": seconds_list}
        elif op == "embed":
            answer = {"embeddings": encode(kind, pool[: int(command["n"])], True)}
        else:
            answer = {"error": f"unknown op {op!r}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", choices=("concord", "clip"), required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    pools = read_inputs(args.data)
    factory = concord_encoder if args.target == "concord" else clip_encoder
    encode = factory(args.address)
    sys.stdout.write(json.dumps({"ready": args.target}) + "\n")
    sys.stdout.flush()
    run(encode, pools)


if __name__ == "__main__":
    main()
