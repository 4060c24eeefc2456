"""Soak: minutes of mixed traffic, bad input included, through the services in one `concord
serve` process with small random models, while the process's RSS, open files and threads are
sampled. Goal (issue 18): 0 INTERNAL / UNKNOWN, health SERVING throughout, RSS, files and
threads flat (no growth between the first and the last quarter of the run).

    python -m benchmarks.soak [--minutes 5] [--clients 4]      (make soak)

Writes reports/soak.md and .json.
"""

from __future__ import annotations

import io
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import grpc
import numpy as np
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from benchmarks.harness import placeholder_scorer, serve
from concord.checkpoints import build_encoder, build_generator, save_encoder, save_generator
from concord.models.config import load_config
from concord.models.diffusion.config import load_preset
from concord.proto.v1 import (
    common_pb2,
    encoder_pb2,
    encoder_pb2_grpc,
    generator_pb2,
    generator_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
    scorer_pb2,
    scorer_pb2_grpc,
)
from pipelines.evaluate.report import MetricRow, write_report

app = typer.Typer(add_completion=False)
SERVICES = ["encoder", "retrieval", "scorer", "generator"]
TOKEN = "soak-token"
WORDS = ["red", "blue", "green", "circle", "square", "left", "of", "a", "big", "small"]


def _models(home: Path) -> dict[str, str]:
    encoder = home / "encoder"
    save_encoder(*build_encoder(load_config("tiny")), encoder)
    scorer = placeholder_scorer(home / "scorer", encoder, "soak")
    generator = home / "generator"
    config = load_preset("tiny").replace(image_size=16, base_channels=8, channel_mult=(1, 2),
                                         attn_resolutions=(8,), heads=2, max_text_tokens=8)
    save_generator(build_generator(config, seed=0), generator)
    return {
        "CONCORD_ENCODER_MODEL": str(encoder),
        "CONCORD_SCORER__MODEL": str(scorer),
        "CONCORD_GENERATOR__MODEL": str(generator),
        "CONCORD_GENERATOR__MAX_STEPS": "4",
        "CONCORD_SERVING__AUTH_TOKEN": TOKEN,
    }


def _png(rng: random.Random, side: int = 32) -> bytes:
    buffer = io.BytesIO()
    colour = tuple(rng.randrange(256) for _ in range(3))
    Image.new("RGB", (side, side), colour).save(buffer, format="PNG")  # type: ignore[arg-type]
    return buffer.getvalue()


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, 9)))


def _corrupt(data: bytes, rng: random.Random) -> bytes:
    mutated = bytearray(data)
    for _ in range(rng.randrange(1, 5)):
        mutated[rng.randrange(len(mutated))] = rng.randrange(256)
    return bytes(mutated)


Call = Callable[[random.Random], Any]


def _calls(channels: dict[str, grpc.Channel]) -> dict[str, Call]:
    auth = (("authorization", f"Bearer {TOKEN}"),)
    enc = encoder_pb2_grpc.EncoderServiceStub(channels["encoder"])
    ret = retrieval_pb2_grpc.RetrievalServiceStub(channels["retrieval"])
    sco = scorer_pb2_grpc.ScorerServiceStub(channels["scorer"])
    gen = generator_pb2_grpc.GeneratorServiceStub(channels["generator"])
    raw = channels["encoder"].unary_unary("/concord.v1.EncoderService/EncodeTexts")

    def image(rng: random.Random, bad: bool = False) -> common_pb2.Image:
        data = _png(rng)
        return common_pb2.Image(data=_corrupt(data, rng) if bad else data)

    return {
        "EncodeTexts": lambda r: enc.EncodeTexts(
            encoder_pb2.EncodeTextsRequest(texts=[_text(r) for _ in range(r.randrange(1, 9))]),
            metadata=auth, timeout=30),
        "EncodeImages bad image": lambda r: enc.EncodeImages(
            encoder_pb2.EncodeImagesRequest(images=[image(r, bad=True)]), metadata=auth,
            timeout=30),
        "EncodeTexts empty": lambda r: enc.EncodeTexts(
            encoder_pb2.EncodeTextsRequest(texts=[""]), metadata=auth, timeout=30),
        "garbage body": lambda r: raw(r.randbytes(r.randrange(1, 64)), metadata=auth, timeout=30),
        "no token": lambda r: enc.EncodeTexts(
            encoder_pb2.EncodeTextsRequest(texts=["x"]), timeout=30),
        "Index": lambda r: ret.Index(retrieval_pb2.IndexRequest(items=[
            retrieval_pb2.IndexItem(item=common_pb2.Item(image=image(r)))
            for _ in range(r.randrange(1, 5))]), metadata=auth, timeout=30),
        "Search": lambda r: ret.Search(
            retrieval_pb2.SearchRequest(text=_text(r), top_k=5), metadata=auth, timeout=30),
        "Score": lambda r: sco.Score(scorer_pb2.ScoreRequest(pairs=[
            scorer_pb2.ScorePair(image=image(r), text=_text(r))]), metadata=auth, timeout=30),
        "ExplainMisalignment": lambda r: sco.ExplainMisalignment(
            scorer_pb2.ExplainRequest(image=image(r), text=_text(r)), metadata=auth, timeout=30),
        "Generate": lambda r: list(gen.Generate(
            generator_pb2.GenerateRequest(prompts=[_text(r)], steps=2, seed=r.randrange(1 << 20)),
            metadata=auth, timeout=60)),
    }


def _proc(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) // 1024,
        "threads": int(fields["Threads"]),
        "open_files": len(list(Path(f"/proc/{pid}/fd").iterdir())),
    }


@app.command()
def main(
    minutes: Annotated[float, typer.Option(help="length of the soak")] = 5.0,
    clients: Annotated[int, typer.Option(help="concurrent client threads")] = 4,
    out: Annotated[Path, typer.Option(help="report directory")] = Path("reports"),
) -> None:
    codes: dict[str, Counter[str]] = {}
    samples: list[dict[str, float]] = []
    health_failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        env = _models(home)
        with serve(SERVICES, home, **env) as served:
            pid = _server_pid(home)
            channels = {s: grpc.insecure_channel(served.address(s)) for s in SERVICES}
            calls = _calls(channels)
            lock, stop = threading.Lock(), threading.Event()

            def client(seed: int) -> None:
                rng = random.Random(seed)
                names = sorted(calls)
                while not stop.is_set():
                    name = rng.choice(names)
                    try:
                        calls[name](rng)
                        code = "OK"
                    except grpc.RpcError as err:
                        code = err.code().name if isinstance(err, grpc.Call) else "error"
                    with lock:
                        codes.setdefault(name, Counter())[code] += 1

            threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
            started = time.monotonic()
            for t in threads:
                t.start()
            health = {s: health_pb2_grpc.HealthStub(channels[s]) for s in SERVICES}
            while time.monotonic() - started < minutes * 60:
                time.sleep(5)
                sample: dict[str, float] = {"t": time.monotonic() - started, **_proc(pid)}
                samples.append(sample)
                for stub in health.values():
                    try:
                        reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
                        health_failures += reply.status != health_pb2.HealthCheckResponse.SERVING
                    except grpc.RpcError:
                        health_failures += 1
            stop.set()
            for t in threads:
                t.join(60)
            for channel in channels.values():
                channel.close()
    _report(codes, samples, health_failures, minutes, clients, out)


def _server_pid(home: Path) -> int:
    # harness.serve starts one `concord serve` subprocess; find it by its CONCORD_HOME.
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"serve" in cmdline and f"CONCORD_HOME={home}".encode() in environ:
            return int(proc.name)
    raise RuntimeError("the serving process was not found")


def _report(
    codes: dict[str, Counter[str]],
    samples: list[dict[str, float]],
    health_failures: int,
    minutes: float,
    clients: int,
    out: Path,
) -> None:
    quarter = max(1, len(samples) // 4)
    first, last = samples[:quarter], samples[-quarter:]
    rows: list[MetricRow] = []
    for key in ("rss_mb", "open_files", "threads"):
        start = float(np.mean([s[key] for s in first]))
        end = float(np.mean([s[key] for s in last]))
        rows += [
            MetricRow(key, "process", "first quarter", start),
            MetricRow(key, "process", "last quarter", end, "first quarter"),
            MetricRow(key, "process", "max", float(max(s[key] for s in samples))),
        ]
    total = sum(sum(c.values()) for c in codes.values())
    internal = sum(c["INTERNAL"] + c["UNKNOWN"] for c in codes.values())
    rows += [
        MetricRow("calls", "all", "total", float(total)),
        MetricRow("calls", "all", "INTERNAL or UNKNOWN", float(internal)),
        MetricRow("health checks", "all", "not SERVING", float(health_failures)),
    ]
    table = "\n".join(
        f"| {name} | " + ", ".join(f"{code} {n}" for code, n in sorted(c.items())) + " |"
        for name, c in sorted(codes.items())
    )
    notes = (
        f"{minutes:g} minutes, {clients} client threads, services {', '.join(SERVICES)} in one"
        f" `concord serve` process (tiny random models, token auth on); process sampled every"
        f" 5 s. Goal: 0 INTERNAL/UNKNOWN, health SERVING throughout, RSS, open files and"
        f" threads flat.\n\n| call | status codes |\n|---|---|\n{table}"
    )
    files = write_report("soak", rows, out, title="Soak: mixed traffic with bad input", notes=notes)
    typer.echo(f"wrote {files.markdown}: {total} calls, {internal} INTERNAL/UNKNOWN")


if __name__ == "__main__":
    app()
