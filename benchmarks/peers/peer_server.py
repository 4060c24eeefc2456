"""Serve clip-as-service (a jina Flow: gRPC gateway + clip-server's torch CLIPEncoder) on the
local random ViT-B/32. Runs in the peer venv (benchmarks/peers/install.sh):

    .cache/peers/venv/bin/python benchmarks/peers/peer_server.py --model FILE --port N

Prints "READY" once the Flow answers. Stops on SIGTERM.
"""

import argparse
import os
import signal
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="OpenAI-layout ViT-B-32 state dict")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--minibatch", type=int, default=32)
    parser.add_argument("--preprocess-workers", type=int, default=4)
    args = parser.parse_args()
    os.environ["CONCORD_PEER_MODEL"] = str(Path(args.model).resolve())

    from jina import Flow  # type: ignore[import-not-found]

    flow = Flow(port=args.port, protocol="grpc").add(
        name="clip_t",
        uses="LocalCLIPEncoder",
        py_modules=[str(Path(__file__).with_name("peer_executor.py"))],
        uses_with={
            "name": "ViT-B-32::openai",
            "device": "cpu",
            "minibatch_size": args.minibatch,
            "num_worker_preprocess": args.preprocess_workers,
        },
        timeout_ready=600_000,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with flow:
        print("READY", flush=True)
        flow.block()


if __name__ == "__main__":
    main()
