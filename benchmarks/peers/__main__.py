"""Concord's encoder service beside Jina's clip-as-service, same random ViT-B/32, one run.

    benchmarks/peers/install.sh          # once: clip-server + clip-client in .cache/peers/venv
    python -m benchmarks.peers [--rounds 3] [--seconds 3] [--batch 32] [--latency-calls 30]

Both services run in their own processes on the same weights (benchmarks/peers/model.py),
2 torch threads each; two client processes (Concord's gRPC stub in the project venv,
`clip_client` over gRPC in the peer venv, benchmarks/peers/worker.py) take turns: every
figure is measured on both sides back to back, the side that goes first alternating by round
(benchmarks/peers/ab.py). Before measuring, both embed the same inputs and their cosine is
checked (same weights, same network). Writes reports/bench_peers.md and .json.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from benchmarks.harness import serve
from benchmarks.peers import ab
from benchmarks.peers.model import SavedModel, save_model
from concord.ports import free_ports
from pipelines.evaluate.report import MetricRow, write_report

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / ".cache" / "peers"
app = typer.Typer(add_completion=False)

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
SHAPES = ["circle", "square", "star", "cross", "triangle", "heart"]
FILLER = (
    "on a wooden table next to an open window in the warm light of a late summer afternoon "
    "while a small grey cat sleeps on the chair and rain begins to fall outside over the "
    "quiet street with parked bicycles old lamps and a bakery whose door stays open while "
    "two children in yellow raincoats run past a blue van towards the park at the end of the "
    "road where the trees are already turning red and gold"
)


def prioritise() -> str:
    """Give this process's autogroup (its children share it) priority on the shared CPUs."""
    try:
        Path(f"/proc/{os.getpid()}/autogroup").write_text("-10")
        return "autogroup nice -10"
    except OSError as err:
        return f"autogroup unchanged ({err.strerror})"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def write_inputs(directory: Path, n_images: int, side: int) -> None:
    """JPEGs of smooth synthetic scenes (gradients and discs: they compress and decode like
    photos, unlike noise), short captions (~14 tokens) and long ones (past CLIP's 77-token
    context: both sides truncate them to 77); both workers send these same bytes and strings."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:side, 0:side] / side
    for i in range(n_images):
        a, b, c = rng.uniform(0, 255, 3)
        base = np.stack([a * xx + 40 * yy, b * yy + 30, c * (1 - xx)], axis=-1)
        image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x, y, r = [*rng.uniform(0, side, 2).tolist(), rng.uniform(side / 20, side / 5)]
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.integers(0, 255, 3)))
        image.save(directory / "images" / f"{i:04d}.jpg", quality=90)
    texts = [
        f"a {COLOURS[i % 8]} {SHAPES[(i // 8) % 6]} left of a {COLOURS[(i + 3) % 8]} "
        f"{SHAPES[i % 6]}"
        for i in range(max(n_images, 64))
    ]
    (directory / "texts.json").write_text(json.dumps(texts))
    (directory / "texts_long.json").write_text(json.dumps([f"{t} {FILLER}" for t in texts]))


def raw_forward(model: SavedModel, batch: int, seconds: float) -> list[MetricRow]:
    """The two networks' image forward alone (no decode, no serving), in this process, A/B:
    Concord's (transformers CLIP through ClipAdapter) and the peer's (open_clip's CLIP, the
    code clip-server builds OpenAI checkpoints with). Tells model code from serving."""
    import torch

    from benchmarks.harness import rate
    from benchmarks.peers.model import OPENAI_MEAN, OPENAI_STD, reference_model
    from concord.checkpoints import load_weights, open_checkpoint

    ours = load_weights(open_checkpoint(model.concord_dir))
    state = torch.load(model.peer_file, map_location="cpu", weights_only=True)
    theirs = reference_model(model.variant, state)
    pixels = torch.rand(batch, 3, model.image_size, model.image_size)
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)

    @torch.inference_mode()
    def measure(figure: ab.Figure, side: str) -> list[float]:
        if side == ab.CONCORD:
            return [rate(lambda: len(ours.encode_image(pixels).pooled), seconds, warmup=1)]
        return [rate(lambda: len(theirs.encode_image((pixels - mean) / std)), seconds, warmup=1)]

    figure = ab.Figure("raw image forward/s", f"batch={batch}", "rate", 1.0)
    (summary,) = ab.summarise(ab.alternate(2, [figure], measure))
    what = "in-process forward, no serving"
    return [
        MetricRow(
            figure.name, figure.split, f"{ab.PEER}'s network (open_clip), {what}", summary.peer
        ),
        MetricRow(
            figure.name,
            figure.split,
            f"Concord's network (transformers CLIP), {what}",
            summary.concord,
            f"{ab.PEER}'s network (open_clip), {what}",
        ),
    ]


class Worker:
    """A client process (benchmarks/peers/worker.py) driven over its stdin/stdout."""

    def __init__(self, python: str, target: str, address: str, data: Path, env: dict[str, str]):
        self.target = target
        self.process = subprocess.Popen(
            [python, "-m", "benchmarks.peers.worker", "--target", target,
             "--address", address, "--data", str(data)],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        first = self._read()
        if first.get("ready") != target:
            raise RuntimeError(f"{target} worker did not start: {first}")

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.target} worker exited ({self.process.wait(10)})")
        return dict(json.loads(line))

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise RuntimeError(f"{self.target} worker: {answer['error']}")
        return answer

    def close(self) -> None:
        with suppress(RuntimeError, BrokenPipeError, ValueError):
            self.ask(op="quit")
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@contextmanager
def serve_peer(python: Path, model: SavedModel, port: int, threads: int, log: Path):  # type: ignore[no-untyped-def]
    """clip-as-service's Flow (benchmarks/peers/peer_server.py) until the block ends."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "JINA_LOG_LEVEL": "ERROR",
        "JINA_OPTOUT_TELEMETRY": "1",
        "JINA_HUB_NO_IMAGE_REBUILD": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONWARNINGS": "ignore",
    }
    script = ROOT / "benchmarks" / "peers" / "peer_server.py"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(python), str(script), "--model", str(model.peer_file), "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while "READY" not in log.read_text():
                if process.poll() is not None:
                    raise RuntimeError(f"clip-server exited early:\n{log.read_text()[-4000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"clip-server not ready:\n{log.read_text()[-4000:]}")
                time.sleep(0.5)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def cosines(a: list[list[float]], b: list[list[float]]) -> list[float]:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return [float(v) for v in (x * y).sum(axis=1)]


def working_tree() -> str:
    """HEAD and how many files under concord/ and services/ differ from it (measured as is)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "concord", "services"],
            cwd=ROOT, capture_output=True, text=True,
        ).stdout.splitlines()  # fmt: skip
    except OSError:
        return "unknown (no git)"
    return f"HEAD {head} plus {len(dirty)} uncommitted file(s) under concord/ and services/"


def peer_versions(python: Path) -> str:
    code = (
        "import importlib.metadata as m, torch;"
        "print(', '.join(f'{n} {m.version(n)}' for n in "
        "('clip-server','clip-client','jina','docarray','grpcio','protobuf')),"
        "'| torch', torch.__version__)"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
    return out.stdout.strip() or out.stderr.strip()[-300:]


@app.command()
def main(
    rounds: Annotated[int, typer.Option(help="A/B rounds (who goes first alternates)")] = 3,
    seconds: Annotated[float, typer.Option(help="measuring time per throughput figure")] = 3.0,
    batch: Annotated[int, typer.Option(help="items per request for the throughput figures")] = 32,
    latency_calls: Annotated[int, typer.Option(help="batch-1 calls per side per round")] = 30,
    threads: Annotated[int, typer.Option(help="torch threads of each service")] = 2,
    image_side: Annotated[int, typer.Option(help="side of the JPEGs sent (px)")] = 224,
    ceiling: Annotated[bool, typer.Option(help="also time both networks' raw forward")] = True,
    variant: Annotated[str, typer.Option(help="ViT-B-32, or tiny for a smoke run")] = "ViT-B-32",
    peer_venv: Annotated[Path, typer.Option(help="install.sh's venv")] = PEERS / "venv",
    out: Annotated[Path, typer.Option(help="report directory")] = Path("reports"),
    name: Annotated[str, typer.Option(help="report file stem")] = "bench_peers",
) -> None:
    priority = prioritise()
    load_before = uptime()
    peer_python = peer_venv / "bin" / "python"
    if not peer_python.is_file():
        raise typer.BadParameter(f"{peer_python} missing: run benchmarks/peers/install.sh")
    model = save_model(PEERS / "model" / variant, variant)
    pools = {  # figure key -> the worker's input pool
        f"images/s batch={batch}": "images",
        f"texts/s batch={batch}": "texts",
        f"texts/s batch={batch}, 77-token captions": "long_texts",
        "latency batch=1 image": "images",
        "latency batch=1 text": "texts",
    }
    figures = [
        ab.Figure("images/s", f"batch={batch}", "rate", 1.5),
        ab.Figure("texts/s", f"batch={batch}", "rate", 1.5),
        ab.Figure("texts/s", f"batch={batch}, 77-token captions", "rate", 1.5),
        ab.Figure("latency", "batch=1 image", "latency", 1.0),
        ab.Figure("latency", "batch=1 text", "latency", 1.0),
    ]
    ceiling_rows = raw_forward(model, batch, seconds) if ceiling else []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        home = Path(tmp)
        data = home / "inputs"
        write_inputs(data, max(batch, 32), image_side)
        concord = stack.enter_context(
            serve(
                ["encoder"],
                home,
                CONCORD_ENCODER_MODEL=str(model.concord_dir),
                CONCORD_DEVICE__DEFAULT="cpu",
                CONCORD_DEVICE__TORCH_THREADS=str(threads),
                OMP_NUM_THREADS=str(threads),
            )
        )
        (peer_port,) = free_ports(1)
        stack.enter_context(serve_peer(peer_python, model, peer_port, threads, home / "peer.log"))
        worker_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
                      "JINA_LOG_LEVEL": "ERROR", "JINA_OPTOUT_TELEMETRY": "1"}  # fmt: skip
        workers = {
            ab.CONCORD: Worker(
                sys.executable, "concord", concord.address("encoder"), data, worker_env
            ),
            ab.PEER: Worker(str(peer_python), "clip", f"127.0.0.1:{peer_port}", data, worker_env),
        }
        for worker in workers.values():
            stack.callback(worker.close)

        agreement = {
            kind: cosines(
                workers[ab.CONCORD].ask(op="embed", kind=kind, n=4)["embeddings"],
                workers[ab.PEER].ask(op="embed", kind=kind, n=4)["embeddings"],
            )
            for kind in ("images", "texts", "long_texts")
        }

        def measure(figure: ab.Figure, side: str) -> list[float]:
            worker = workers[side]
            kind = pools[figure.key]
            if figure.kind == "rate":
                answer = worker.ask(op="rate", kind=kind, batch=batch, seconds=seconds)
                return [answer["items_per_s"]]
            return list(worker.ask(op="latency", kind=kind, n=latency_calls)["seconds"])

        results = ab.alternate(rounds, figures, measure)
    load_after = uptime()
    summaries = ab.summarise(results)
    rows = ab.rows(summaries) + ceiling_rows
    agree = "; ".join(
        f"{kind}: min cosine {min(v):.6f} over {len(v)} inputs" for kind, v in agreement.items()
    )
    notes = "\n".join(
        [
            f"Same random CLIP {variant} (benchmarks/peers/model.py) in both services; "
            f"Concord via its public-CLIP loader (open_clip checkpoint dir), clip-as-service "
            f"via its torch backend (`ViT-B-32::openai`, local OpenAI-layout file).",
            f"Embeddings of the same inputs, Concord vs clip-as-service: {agree}.",
            f"Inputs: {image_side}x{image_side} JPEGs; short captions (~14 tokens) and captions "
            "past 77 tokens (truncated to 77 by both). Concord pads a batch to its longest "
            f"caption, clip-server always to 77. {threads} torch threads "
            f"per service, CPU. {rounds} A/B rounds, {seconds:g} s per throughput figure, "
            f"{latency_calls} batch-1 calls per side per round. Clients: one process per side "
            "(Concord: gRPC stub; clip-as-service: clip_client over gRPC), one at a time.",
            f"Peer venv: {peer_versions(peer_python)}.",
            f"Concord code: {working_tree()}.",
            "`raw image forward/s` (when measured): both networks' image forward alone in the "
            "driver process (no decode, no serving), A/B: whether a gap is model code or "
            "serving.",
            f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, shared with other jobs; "
            f"{priority}.",
            f"Load before: `{load_before}`; after: `{load_after}`.",
            "",
            "Goals (issue 17): Concord >= 1.5x clip-as-service's images/s and texts/s at "
            "batch 32, and no worse at batch 1:",
            ab.verdict(summaries),
        ]
    )
    files = write_report(
        name, rows, out, title="Concord vs clip-as-service (same random ViT-B/32)", notes=notes
    )
    for row in rows:
        typer.echo(f"{row.metric:>30} {row.split:>22} {row.method:<36} {row.value:10.2f}")
    typer.echo(ab.verdict(summaries))
    typer.echo(f"agreement: {agree}")
    typer.echo(f"load: {load_before} -> {load_after}")
    typer.echo(f"wrote {files.markdown}")


if __name__ == "__main__":
    app()
