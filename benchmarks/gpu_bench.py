"""The GPU path in one run: a ViT-B/32-size CLIP (image and text towers, bf16) raw vs served.

    python -m benchmarks.gpu_bench [--device cuda|cpu] [--quick] [--out DIR]   (benchmarks/gpu.sh)

The model is a randomly initialised CLIP ViT-B/32 (224 px, 32 px patches, 12+12 layers, 512-d,
49,408-token vocabulary) saved as a transformers CLIP directory and loaded through Concord's
public-CLIP loader (`concord.checkpoints.load_clip_checkpoint`): speed does not depend on what
the weights learned. `--quick` uses a tiny CLIP of the same kind (the CPU dry run of the tests).

Measured in the same run, each figure with its error when it fails (a partial failure still
reports what worked):

- encoder, raw: the forward ceiling (pixels or token ids already on the device) at batch
  1/32/256 in the variants the benchmark can toggle: autocast bf16 as the service runs it, bf16
  weights, channels_last, CUDA graphs for the fixed batch shapes, torch.compile (--compile);
  and a raw end-to-end pipeline (JPEG bytes -> embeddings) with decode on the GPU
  (torchvision.io.decode_jpeg, nvjpeg) or in a thread pool (PIL) with pinned-memory copies, and
  more than one batch in flight (--inflight worker threads, each on its own CUDA stream);
- encoder, served: gRPC EncodeImages (JPEG bytes: decode + preprocess + forward in the service)
  and EncodeTexts at batch 1/32/256 with 1 and several concurrent clients, against the ceiling;
  embeddings served vs raw agree (cosine);
- search: gRPC Search vs the raw Qdrant engine (vector queries), and text queries (encoder on
  the device + engine) served vs raw, 1 and several clients;
- scorer: gRPC Score vs raw AlignmentScorer.score (fp32 on the device, as the service runs it:
  CLIP4DM takes gradients), 1 and several clients.

The services run as one `concord serve encoder retrieval scorer` process (started with
`python -c`, so a python with torch but without the installed `concord` script works) with the
service's own settings: CONCORD_DEVICE__DEFAULT, CONCORD_DEVICE__PRECISION=bf16,
CONCORD_BATCHING__MAX_BATCH_SIZE / MAX_QUEUE sized to the largest batch and client count.

Writes bench_gpu.md + bench_gpu.json (rows in the reports/ shape, plus the options used, the
failures and the GPU) to --out, else $OUT when set, else reports/ -- only for a GPU run: a CPU
run without --out writes under a temporary directory, never a GPU report. The report is
rewritten after each section, so a run stopped at a time limit still leaves what it measured.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import io
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from benchmarks.gpu_check import captions, cosines, environment
from benchmarks.gpu_check import rate as synced_rate
from benchmarks.harness import concurrent_rate, latencies, pct, wait_serving
from concord.config import DeviceSettings
from concord.devices import (
    DeviceUnavailable,
    configure_torch_threads,
    inference,
    resolve_device,
)
from pipelines.evaluate.report import MetricRow, check_rows, git_commit, machine

app = typer.Typer(add_completion=False)

NAME = "bench_gpu"
COLLECTION = "bench-gpu"
SERVICES = ("encoder", "retrieval", "scorer")
GOAL_IMAGES_PER_S = 10_000.0  # end to end on one H200 (issue 17)
GOAL_SERVED_RATIO = 0.8  # served / bf16 forward ceiling, measured in the same run
RECORD_ENV = "CONCORD_GPU_BENCH_RECORD_IMPORTS"  # file: top-level modules imported, appended
# Any valid calibration: the probability's cost does not depend on its coefficients.
CALIBRATION = {
    "form": "logistic",
    "features": ["clip_score", "fine_grained_score", "f_clip_score"],
    "mean": [0.5, 0.2, 0.5],
    "scale": [0.5, 0.2, 0.5],
    "coef": [1.0, 0.5, 1.0],
    "intercept": 0.0,
}
# The service process: Concord's own runner (`concord serve` without the console script).
SERVER = f"""
import atexit, os, sys
record = os.environ.get({RECORD_ENV!r})
if record:
    def _dump():
        with open(record, "a") as f:
            f.write("\\n".join(sorted({{m.split(".")[0] for m in sys.modules}})) + "\\n")
    atexit.register(_dump)
from concord.serving.runner import serve_main
serve_main(sys.argv[1:])
"""


@dataclass(frozen=True)
class Sizes:
    """What one run measures: the full GPU run or the quick dry run."""

    clip: dict[str, Any]  # transformers CLIPConfig kwargs (without token ids)
    image_side: int  # side of the JPEGs sent (resized to the model's side by the pipeline)
    batches: tuple[int, ...]
    clients: tuple[int, ...]
    seconds: float  # timing window per throughput figure
    latency_calls: int
    points: int  # search collection size
    scorer_batch: int
    max_queue: int

    @property
    def many(self) -> int:
        return max(self.clients)


VIT_B32 = {
    "text_config": {
        "vocab_size": 49408,
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_hidden_layers": 12,
        "num_attention_heads": 8,
        "max_position_embeddings": 77,
    },
    "vision_config": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 224,
        "patch_size": 32,
    },
    "projection_dim": 512,
}
TINY_CLIP = {
    "text_config": {
        "vocab_size": 512,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 32,
    },
    "vision_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    },
    "projection_dim": 32,
}
FULL = Sizes(VIT_B32, 256, (1, 32, 256), (1, 4, 16), 1.5, 50, 10_000, 32, 16_384)
QUICK = Sizes(TINY_CLIP, 48, (1, 4, 8), (1, 2), 0.2, 5, 300, 4, 1024)


# ------------------------------------------------------------------------------- the report


@dataclass
class Bench:
    """Rows ({metric, split, method, value, baseline?}), failures and what was used; written
    after every section."""

    device: torch.device
    out: Path
    options: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    budget: float = 420.0  # seconds; optional work past it is skipped (recorded)
    rows: list[MetricRow] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def row(
        self, metric: str, split: str, method: str, value: float, baseline: str | None = None
    ) -> None:
        if self.has(metric, split, method):  # the report writer refuses duplicates
            self.failures.append({"what": f"{metric} {split} {method}", "error": "measured twice"})
            return
        if baseline is not None and not self.has(metric, split, baseline):
            baseline = None  # its row failed: the value stands alone
        self.rows.append(MetricRow(metric, split, method, float(value), baseline))
        print(f"  {metric:<16} {split:<34} {method:<46} {value:12.2f}", flush=True)

    def has(self, metric: str, split: str, method: str) -> bool:
        return any((r.metric, r.split, r.method) == (metric, split, method) for r in self.rows)

    def value(self, metric: str, split: str, method: str) -> float | None:
        for r in self.rows:
            if (r.metric, r.split, r.method) == (metric, split, method):
                return r.value
        return None

    def measure(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run one measurement; a failure is recorded with its error, not raised."""
        try:
            return fn()
        except Exception as err:
            detail = f"{type(err).__name__}: {err}"[:2000]
            self.failures.append(
                {"what": name, "error": detail, "trace": traceback.format_exc()[-3000:]}
            )
            print(f"  FAILED {name}: {detail}", flush=True)
            return None

    def skip(self, name: str, why: str) -> None:
        self.skipped.append({"what": name, "why": why})
        print(f"  skipped {name}: {why}", flush=True)

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Print and time one section; the report is rewritten after it."""
        print(f"[{name}]", flush=True)
        started = time.perf_counter()
        try:
            yield
        finally:
            seconds = round(time.perf_counter() - started, 1)
            self.facts.setdefault("section seconds", {})[name] = seconds
            self.write()

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.started)

    def write(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        rows = check_rows(self.rows)
        goals = self.goals()
        seconds = time.perf_counter() - self.started
        data = {
            "name": NAME,
            "rows": [r.to_dict() for r in rows],
            "commit": git_commit(),
            "data_seed": 0,
            "machine": machine(),
            "environment": self.facts.get("environment", {}),
            "options": self.options,
            "facts": {k: v for k, v in self.facts.items() if k != "environment"},
            "goals": goals,
            "failures": self.failures,
            "skipped": self.skipped,
            "seconds": round(seconds, 1),
        }
        (self.out / f"{NAME}.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        (self.out / f"{NAME}.md").write_text(self.markdown(data))
        return self.out / f"{NAME}.md"

    def goals(self) -> list[dict[str, Any]]:
        """The issue's two goals, judged from the rows (None when not measured)."""
        served = [
            r.value
            for r in self.rows
            if r.metric == "images/s" and r.method.startswith("gRPC EncodeImages")
        ]
        best_served = max(served) if served else None
        ceilings = [
            r.value for r in self.rows if r.metric == "images/s" and r.split.startswith("forward")
        ]
        ceiling = max(ceilings) if ceilings else None
        ratio = best_served / ceiling if best_served and ceiling else None
        on_gpu = self.device.type == "cuda"
        return [
            {
                "goal": f"served images/s end to end >= {GOAL_IMAGES_PER_S:,.0f} on an H200",
                "value": best_served,
                "met": (best_served >= GOAL_IMAGES_PER_S) if best_served and on_gpu else None,
            },
            {
                "goal": f"served >= {GOAL_SERVED_RATIO}x the bf16 forward ceiling (same run)",
                "value": ratio,
                "ceiling_images_per_s": ceiling,
                "met": (ratio >= GOAL_SERVED_RATIO) if ratio and on_gpu else None,
            },
        ]

    def markdown(self, data: dict[str, Any]) -> str:
        env = data["environment"]
        lines = [
            "# GPU path: raw ceilings vs served (encoder, search, scorer)",
            "",
            f"- commit: `{data['commit']}`; {data['seconds']} s; `python -m benchmarks.gpu_bench"
            f"{' --quick' if self.options.get('quick') else ''} --device {self.device.type}`",
            f"- device: {env.get('device', self.device)}; torch {env.get('torch')} "
            f"(CUDA build {env.get('cuda_build')}); {env.get('cpus')} CPUs",
            f"- model: {self.facts.get('model', '?')}",
            "",
            "## Goals",
            "",
        ]
        for g in data["goals"]:
            value = g["value"]
            shown = "not measured" if value is None else f"{value:,.2f}"
            verdict = {True: "met", False: "**not met**", None: "not judged (no GPU run)"}
            lines.append(f"- {g['goal']}: {shown} -> {verdict[g['met']]}")
        pipelines = [r.value for r in self.rows if r.split.startswith("JPEG -> embedding")]
        if pipelines:
            lines.append(
                f"- for comparison, the best raw JPEG -> embedding pipeline in one process "
                f"(no gRPC; decode on the GPU or in a thread pool): {max(pipelines):,.2f} images/s"
            )
        lines += ["", "## Options used", ""]
        lines += [f"- {k}: {v}" for k, v in self.options.items()]
        if self.failures or self.skipped:
            lines += ["", "## Failures and skips", ""]
            lines += [f"- FAILED {f['what']}: {f['error']}" for f in self.failures]
            lines += [f"- skipped {s['what']}: {s['why']}" for s in self.skipped]
        by_metric: dict[str, list[MetricRow]] = {}
        for r in self.rows:
            by_metric.setdefault(r.metric, []).append(r)
        value = {(r.metric, r.split, r.method): r.value for r in self.rows}
        for metric, rows in by_metric.items():
            lines += ["", f"## {metric}", "", "| split | method | value | baseline | ratio |"]
            lines.append("|---|---|---:|---|---:|")
            for r in rows:
                base = value.get((metric, r.split, r.baseline)) if r.baseline else None
                ratio = f"{r.value / base:.3f}" if base else ""
                lines.append(
                    f"| {r.split} | {r.method} | {r.value:,.2f} | {r.baseline or ''} | {ratio} |"
                )
        facts = data["facts"]
        if facts:
            lines += ["", "## Facts", "", "```", json.dumps(facts, indent=1), "```"]
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- inputs


def write_clip_tokenizer(directory: Path, words: Sequence[str], vocab_size: int) -> tuple[int, int]:
    """A CLIP BPE tokenizer saved to `directory`: the letters, one whole-word token for each
    of `words` (so captions tokenize to about as many tokens as real CLIP gives them) and
    fillers up to `vocab_size`; <|endoftext|> is the last id, as in every CLIP vocabulary.
    Returns: (bos, eos) ids."""
    from transformers import CLIPTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    chars = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(chars)} | {c + "</w>": 26 + i for i, c in enumerate(chars)}
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(w.lower() for w in words):
        if not word.isalpha() or not word.isascii():
            continue
        # Join the word's current BPE pieces with merges ranked after every existing one:
        # words joined earlier keep their single token, this one gets one too.
        while len(parts := _bpe(word, ranks)) > 1:
            ranks[(parts[0], parts[1])] = len(ranks)
            vocab.setdefault(parts[0] + parts[1], len(vocab))
    merges = [f"{a} {b}" for (a, b), _ in sorted(ranks.items(), key=lambda kv: kv[1])]
    if len(vocab) + 2 > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} < {len(vocab) + 2} tokens")
    for i in range(len(vocab), vocab_size - 2):
        vocab[f"<|filler{i}|>"] = i
    bos, eos = vocab_size - 2, vocab_size - 1
    vocab |= {"<|startoftext|>": bos, "<|endoftext|>": eos}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(
        vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt")
    )
    tokenizer.save_pretrained(directory)
    return bos, eos


def write_clip(directory: Path, config_kwargs: dict[str, Any], words: Sequence[str]) -> Path:
    """A random transformers CLIP (`config_kwargs`: CLIPConfig's, without token ids) and its
    tokenizer (`write_clip_tokenizer`) saved to `directory`."""
    from transformers import CLIPConfig, CLIPModel

    text = dict(config_kwargs["text_config"])
    bos, eos = write_clip_tokenizer(directory, words, int(text["vocab_size"]))
    text |= {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": eos}
    config = CLIPConfig(
        text_config=text,
        vision_config=config_kwargs["vision_config"],
        projection_dim=config_kwargs["projection_dim"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIPModel(config).eval()
    model.save_pretrained(directory)
    return directory


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE of one lower-case word: characters, the last with </w>, merged by rank."""
    parts = [*word[:-1], word[-1] + "</w>"]
    while len(parts) > 1:
        rank, i = min(
            (ranks.get(pair, 1 << 30), i) for i, pair in enumerate(itertools.pairwise(parts))
        )
        if rank == 1 << 30:
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


def make_jpegs(n: int, side: int, seed: int = 0) -> list[bytes]:
    """Smooth random pictures (low-frequency colour fields plus grain) as quality-90 JPEGs:
    about the size a real photo of that side has, unlike pure noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        field_ = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
        image = Image.fromarray(field_).resize((side, side), Image.Resampling.BICUBIC)
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(-8, 8, (side, side, 3))
        buf = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def texts_for(n: int) -> list[str]:
    return captions(n)


# ------------------------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def graphed(fn: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor) -> Callable:
    """`fn` captured as a CUDA graph for `example`'s shape: returns x -> fn(x) by replay.
    Call inside torch.inference_mode()."""
    static = example.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn(static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(static)

    def replay(x: torch.Tensor) -> torch.Tensor:
        if x.data_ptr() != static.data_ptr():
            static.copy_(x)
        graph.replay()
        return out

    return replay


def pipelined_rate(
    work: Callable[[int], int], workers: int, seconds: float, device: torch.device
) -> float:
    """Items/s of `work(i)` (one batch; returns items) run by `workers` threads, each on its own
    CUDA stream on a GPU, so that more than one batch is in flight."""
    stop = threading.Event()
    counts = [0] * workers
    errors: list[BaseException] = []

    def loop(k: int) -> None:
        stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        ctx = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
        try:
            with ctx, torch.inference_mode():
                i = 0
                while not stop.is_set():
                    counts[k] += work(k * 1_000_003 + i)
                    i += 1
                if stream is not None:
                    stream.synchronize()
        except BaseException as err:
            errors.append(err)

    with torch.inference_mode():
        work(0)  # warm-up (and the check that it works at all)
    sync(device)
    threads = [threading.Thread(target=loop, args=(k,)) for k in range(workers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    sync(device)
    if errors:
        raise errors[0]
    return sum(counts) / (time.perf_counter() - started)


# ------------------------------------------------------------------------------- raw encoder


@dataclass
class Models:
    directory: Path
    served_like: Any  # ClipAdapter, fp32 weights on the device (run under autocast, as served)
    bf16: Any | None  # a copy in bf16 weights (channels_last where chosen)
    tokenizer: Any
    image_size: int
    embed_dim: int
    text_depth: int


def load_models(bench: Bench, directory: Path, channels_last: bool) -> Models:
    from concord.checkpoints import load_clip_checkpoint

    model = load_clip_checkpoint(directory).to(bench.device).eval()
    low = load_clip_checkpoint(directory).to(bench.device, torch.bfloat16).eval()
    if channels_last:
        low = low.to(memory_format=torch.channels_last)
    return Models(
        directory,
        model,
        low,
        model.tokenizer,
        model.image_size,
        model.embed_dim,
        model.text_depth,
    )


def raw_encoder(bench: Bench, m: Models, sizes: Sizes, pixels: torch.Tensor, texts: list[str]):
    """Forward ceilings: images and texts, inputs already on the device."""
    for b in sizes.batches:
        raw_encoder_batch(bench, m, sizes, b, pixels, texts)


def raw_encoder_batch(
    bench: Bench, m: Models, sizes: Sizes, b: int, pixels: torch.Tensor, texts: list[str]
) -> None:
    device, opts = bench.device, bench.options
    precision = "bf16" if device.type == "cuda" else "fp32"
    as_served = "eager autocast bf16 (as served)" if device.type == "cuda" else "eager fp32"
    px = pixels[:b].contiguous()
    px_cl = px.contiguous(memory_format=torch.channels_last) if opts["channels_last"] else px
    split = f"forward batch={b}"
    tokens = m.tokenizer(texts[:b])
    ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)

    def img_served(px: torch.Tensor = px) -> torch.Tensor:
        with inference(device, precision):  # type: ignore[arg-type]
            return m.served_like.encode_image(px).pooled

    def img_bf16(px: torch.Tensor = px_cl) -> torch.Tensor:
        with torch.inference_mode():
            return m.bf16.encode_image(px.to(torch.bfloat16)).pooled

    def txt_served(ids: torch.Tensor = ids, mask: torch.Tensor = mask) -> torch.Tensor:
        with inference(device, precision):  # type: ignore[arg-type]
            return m.served_like.encode_text(ids, mask).pooled

    def txt_bf16(ids: torch.Tensor = ids, mask: torch.Tensor = mask) -> torch.Tensor:
        with torch.inference_mode():
            return m.bf16.encode_text(ids, mask).pooled

    variants: list[tuple[str, str, Callable[[], Any]]] = [
        ("images/s", as_served, img_served),
        (
            "images/s",
            "eager bf16 weights" + (", channels_last" * opts["channels_last"]),
            img_bf16,
        ),
        ("texts/s", as_served, txt_served),
        ("texts/s", "eager bf16 weights", txt_bf16),
    ]
    for metric, method, fn in variants:
        bench.measure(
            f"{metric} {split} {method}",
            lambda metric=metric, method=method, fn=fn: bench.row(
                metric, split, method, synced_rate(fn, b, device, sizes.seconds)
            ),
        )
    if not opts["cuda_graphs"]:
        return
    if device.type != "cuda":
        bench.skip(f"CUDA graphs {split}", "needs CUDA")
        return

    def img_graph(px: torch.Tensor = px_cl) -> float:
        with torch.inference_mode():
            x = px.to(torch.bfloat16)
            run = graphed(lambda t: m.bf16.encode_image(t).pooled, x)
            return synced_rate(lambda: run(x), b, device, sizes.seconds)

    def txt_graph(ids: torch.Tensor = ids, mask: torch.Tensor = mask) -> float:
        with torch.inference_mode():
            both = torch.stack([ids, mask])
            run = graphed(lambda t: m.bf16.encode_text(t[0], t[1]).pooled, both)
            return synced_rate(lambda: run(both), b, device, sizes.seconds)

    bench.measure(
        f"images/s {split} CUDA graph",
        lambda: bench.row("images/s", split, "bf16 weights + CUDA graph", img_graph()),
    )
    bench.measure(
        f"texts/s {split} CUDA graph",
        lambda: bench.row("texts/s", split, "bf16 weights + CUDA graph", txt_graph()),
    )


def compiled_ceiling(bench: Bench, m: Models, sizes: Sizes, pixels: torch.Tensor) -> None:
    """torch.compile of the bf16 image tower at the largest batch (compiles take a minute)."""
    b = max(sizes.batches)
    x = pixels[:b].to(torch.bfloat16)
    if bench.options["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    model = m.bf16
    compiled = torch.compile(lambda t: model.encode_image(t).pooled, dynamic=False)

    def run() -> float:
        with torch.inference_mode():
            started = time.perf_counter()
            compiled(x)
            sync(bench.device)
            bench.facts["torch.compile seconds"] = round(time.perf_counter() - started, 1)
            return synced_rate(lambda: compiled(x), b, bench.device, sizes.seconds)

    bench.measure(
        "images/s torch.compile",
        lambda: bench.row("images/s", f"forward batch={b}", "bf16 weights + torch.compile", run()),
    )


def square_gpu(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (B, 3, size, size) float in [0, 1]: shorter side to `size`
    (bicubic, antialiased), centre crop: what images_to_tensor does with PIL."""
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    rh, rw = max(size, round(h * scale)), max(size, round(w * scale))
    y = x.float()
    if (rh, rw) != (h, w):
        y = torch.nn.functional.interpolate(
            y, size=(rh, rw), mode="bicubic", antialias=True, align_corners=False
        )
    top, left = (rh - size) // 2, (rw - size) // 2
    return y[..., top : top + size, left : left + size].clamp_(0, 255).div_(255.0)


def raw_pipelines(
    bench: Bench, m: Models, sizes: Sizes, jpegs: list[bytes], pool: ThreadPoolExecutor
) -> None:
    """JPEG bytes -> embeddings in this process, with what the GPU offers."""
    from concord.media import decode_image
    from concord.models.preprocess import _square

    device, opts = bench.device, bench.options
    size, workers = m.image_size, opts["inflight"]
    pin = opts["pinned_memory"] and device.type == "cuda"
    model = m.bf16

    def forward(px: torch.Tensor) -> torch.Tensor:
        if opts["channels_last"]:
            px = px.contiguous(memory_format=torch.channels_last)
        return model.encode_image(px.to(torch.bfloat16)).pooled

    def pil_one(data: bytes) -> np.ndarray:
        return np.asarray(_square(decode_image(data, "image/jpeg"), size), dtype=np.uint8)

    where = "cuda" if device.type == "cuda" else "cpu"
    for b in [b for b in sizes.batches if b > 1]:
        split = f"JPEG -> embedding batch={b}"
        batches = [jpegs[i : i + b] for i in range(0, len(jpegs) - b + 1, b)] or [jpegs[:b]]

        def pil_batch(i: int, b: int = b, batches: list = batches) -> int:
            arrays = list(pool.map(pil_one, batches[i % len(batches)]))
            host = torch.from_numpy(np.stack(arrays))
            if pin:
                host = host.pin_memory()
            px = host.to(device, non_blocking=pin).permute(0, 3, 1, 2).float().div_(255.0)
            forward(px).float().cpu()
            return b

        method = f"PIL decode, thread pool{', pinned' if pin else ''}, {workers} in flight"
        bench.measure(
            f"{split} {method}",
            lambda split=split, method=method, fn=pil_batch: bench.row(
                "images/s", split, method, pipelined_rate(fn, workers, sizes.seconds, device)
            ),
        )
        if opts["torchvision_decode"] is None:
            continue
        from torchvision.io import decode_jpeg

        raw = [
            [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in batch] for batch in batches
        ]

        def tv_batch(i: int, b: int = b, raw: list = raw) -> int:
            decoded = decode_jpeg(raw[i % len(raw)], device=where)
            x = torch.stack(decoded).to(device, non_blocking=True)
            forward(square_gpu(x, size)).float().cpu()
            return b

        method = f"torchvision decode_jpeg on {where}, {workers} in flight"
        bench.measure(
            f"{split} {method}",
            lambda split=split, method=method, fn=tv_batch: bench.row(
                "images/s", split, method, pipelined_rate(fn, workers, sizes.seconds, device)
            ),
        )


# ------------------------------------------------------------------------------- search


def build_collection(bench: Bench, home: Path, sizes: Sizes, dim: int) -> Any:
    from concord.vectors import CollectionSpec, EdgeVectorStore, Point, point_id

    rng = np.random.default_rng(0)
    data = rng.standard_normal((sizes.points, dim)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    store = EdgeVectorStore(home / "vectors")
    store.create_collection(CollectionSpec(COLLECTION, dense={"dense": dim}))
    started = time.perf_counter()
    for lo in range(0, sizes.points, 5000):
        store.upsert(
            COLLECTION,
            [
                Point(point_id(str(i).encode()), {"dense": data[i]}, {"modality": "image", "i": i})
                for i in range(lo, min(lo + 5000, sizes.points))
            ],
        )
    store.optimize(COLLECTION)
    bench.facts["search collection"] = (
        f"{sizes.points} x {dim}, upsert + HNSW {time.perf_counter() - started:.1f} s"
    )
    return store


def raw_search(
    bench: Bench, store: Any, sizes: Sizes, queries: np.ndarray, m: Models, texts: list[str]
) -> None:
    device = bench.device
    precision = "bf16" if device.type == "cuda" else "fp32"
    cursor = iter(range(10**12))
    split = f"{sizes.points} x {queries.shape[1]}, top-10"

    def by_vector() -> int:
        store.search(COLLECTION, queries[next(cursor) % len(queries)], limit=10)
        return 1

    def by_text() -> int:
        tok = m.tokenizer([texts[next(cursor) % len(texts)]])
        with inference(device, precision):  # type: ignore[arg-type]
            vec = m.served_like.encode_text(tok.input_ids.to(device), tok.attention_mask.to(device))
        store.search(COLLECTION, vec.pooled.float().cpu().numpy()[0], limit=10)
        return 1

    for query, fn in (("vector", by_vector), ("text", by_text)):
        for c in (1, sizes.many):
            method = f"raw engine{' + forward' if query == 'text' else ''}, {c} clients"
            bench.measure(
                f"search {query} raw {c}",
                lambda query=query, fn=fn, c=c, method=method: bench.row(
                    "QPS", f"{query} query {split}", method, concurrent_rate(fn, c, sizes.seconds)
                ),
            )
        samples = bench.measure(
            f"search {query} raw latency", lambda fn=fn: latencies(fn, n=sizes.latency_calls * 4)
        )
        if samples is not None:
            bench.row("p50 ms", f"{query} query {split}", "raw", pct(samples, 50) * 1e3)


# ------------------------------------------------------------------------------- scorer


def scorer_package(home: Path, encoder: Path, layers: int) -> Path:
    package = home / "scorer"
    package.mkdir(exist_ok=True)
    manifest = {
        "encoder": str(encoder),
        "calibration": CALIBRATION,
        "layers": layers,
        "created_by": "benchmarks.gpu_bench",
    }
    (package / "scorer.json").write_text(json.dumps(manifest))
    return package


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


# ------------------------------------------------------------------------------- served


def ensure_entry_points(scratch: Path) -> str | None:
    """Services plug in through the `concord.services` entry points; where Concord is not
    pip-installed (a python with torch on a GPU machine, the repo on PYTHONPATH), write a
    dist-info that declares them from pyproject.toml. Returns: a directory for PYTHONPATH."""
    from importlib.metadata import entry_points

    found = {ep.name for ep in entry_points(group="concord.services")}
    if set(SERVICES) <= found:
        return None
    import tomllib

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    info = scratch / "site" / f"concord-{project['version']}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: concord\nVersion: {project['version']}\n"
    )
    groups = project.get("entry-points", {})
    text = ""
    for group, eps in groups.items():
        text += f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
    (info / "entry_points.txt").write_text(text)
    return str(scratch / "site")


@contextlib.contextmanager
def serve(home: Path, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """`concord serve encoder retrieval scorer` in a subprocess until the block ends.
    Yields: service -> address."""
    from concord.config import SERVICE_NAMES
    from concord.ports import free_ports

    *ports, metrics = free_ports(len(SERVICE_NAMES) + 1)
    port_map = dict(zip(SERVICE_NAMES, ports, strict=True))
    root = Path(__file__).resolve().parents[1]
    shim = ensure_entry_points(home)
    path = [str(root), *([shim] if shim else []), os.environ.get("PYTHONPATH", "")]
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in path if p),
        "CONCORD_HOME": str(home),
        "CONCORD_SERVING__PORTS": json.dumps(port_map),
        "CONCORD_SERVING__METRICS_PORT": str(metrics),
        "CONCORD_LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        **env,
    }
    log_path = home / "serve.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, *SERVICES], env=full_env, stdout=log, stderr=log, cwd=root
    )
    addresses = {s: f"127.0.0.1:{port_map[s]}" for s in SERVICES}
    try:
        for name in SERVICES:
            wait_serving(addresses[name], process, log_path, timeout=300)
        yield addresses
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def channels(address: str, n: int) -> list[Any]:
    import grpc

    options = [("grpc.max_receive_message_length", 256 << 20)]
    return [grpc.insecure_channel(address, options=options) for _ in range(n)]


def client_rate(
    stubs: list[Any], call: Callable[[Any], int], clients: int, seconds: float
) -> float:
    """Items/s with `clients` threads, each on its own channel, calling `call(stub)`."""
    counter = iter(range(10**12))
    lock = threading.Lock()

    def one() -> int:
        with lock:
            k = next(counter)
        return call(stubs[k % clients])

    return concurrent_rate(one, clients, seconds)


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


def served_search(
    bench: Bench, sizes: Sizes, address: str, queries: np.ndarray, texts: list[str]
) -> None:
    from concord.proto.v1 import common_pb2, retrieval_pb2, retrieval_pb2_grpc

    chans = channels(address, sizes.many)
    stubs = [retrieval_pb2_grpc.RetrievalServiceStub(c) for c in chans]
    split = f"{sizes.points} x {queries.shape[1]}, top-10"
    by_vector = [
        retrieval_pb2.SearchRequest(
            collection=COLLECTION,
            vector=common_pb2.Embedding(values=q.tolist()),
            top_k=10,
            with_payload=True,
        )
        for q in queries
    ]
    by_text = [
        retrieval_pb2.SearchRequest(collection=COLLECTION, text=t, top_k=10, with_payload=True)
        for t in texts
    ]
    cursor = iter(range(10**12))
    for query, requests in (("vector", by_vector), ("text", by_text)):

        def call(stub: Any, requests: list = requests) -> int:
            response = stub.Search(requests[next(cursor) % len(requests)], timeout=60)
            if not response.hits:
                raise AssertionError("Search answered no hits")
            return 1

        for c in (1, sizes.many):
            method = f"gRPC Search, {c} clients"
            base = f"raw engine{' + forward' if query == 'text' else ''}, {c} clients"
            bench.measure(
                f"search {query} served {c}",
                lambda query=query, c=c, method=method, base=base, call=call: bench.row(
                    "QPS",
                    f"{query} query {split}",
                    method,
                    client_rate(stubs, call, c, sizes.seconds),
                    base if bench.has("QPS", f"{query} query {split}", base) else None,
                ),
            )
        samples = bench.measure(
            f"search {query} served latency",
            lambda call=call: latencies(lambda: call(stubs[0]), n=sizes.latency_calls * 4),
        )
        if samples is not None:
            base = "raw" if bench.has("p50 ms", f"{query} query {split}", "raw") else None
            bench.row("p50 ms", f"{query} query {split}", "gRPC", pct(samples, 50) * 1e3, base)
    for c in chans:
        c.close()


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


def ratios(bench: Bench, sizes: Sizes) -> None:
    """served / ceiling rows, from rows of this run."""
    ceilings = {
        kind: [
            r.value for r in bench.rows if r.metric == f"{kind}/s" and r.split.startswith("forward")
        ]
        for kind in ("images", "texts")
    }
    for kind, name in (("images", "gRPC EncodeImages"), ("texts", "gRPC EncodeTexts")):
        if not ceilings[kind]:
            continue
        ceiling = max(ceilings[kind])
        for b in sizes.batches:
            for c in sizes.clients:
                value = bench.value(f"{kind}/s", f"served batch={b}", f"{name}, {c} clients")
                if value is not None:
                    bench.row(
                        "served/ceiling", f"{kind} batch={b}", f"{c} clients", value / ceiling
                    )
    for split in sorted({r.split for r in bench.rows if r.metric == "QPS"}):
        for c in sorted({1, sizes.many}):
            served = bench.value("QPS", split, f"gRPC Search, {c} clients")
            for base in (f"raw engine, {c} clients", f"raw engine + forward, {c} clients"):
                raw = bench.value("QPS", split, base)
                if served is not None and raw:
                    bench.row("served/raw", f"search {split}", f"{c} clients", served / raw)
    b = sizes.scorer_batch
    raw = bench.value("pairs/s", f"pairs batch={b}", "raw score (ceiling)")
    for c in sorted({1, sizes.many}):
        served = bench.value("pairs/s", f"pairs batch={b}", f"gRPC Score, {c} clients")
        if served is not None and raw:
            bench.row("served/raw", f"scorer batch={b}", f"{c} clients", served / raw)


# ------------------------------------------------------------------------------- main


def record_imports() -> None:
    path = os.environ.get(RECORD_ENV)
    if not path:
        return

    def dump() -> None:
        with open(path, "a") as f:
            f.write("\n".join(sorted({m.split(".")[0] for m in sys.modules})) + "\n")

    atexit.register(dump)


def options_used(
    device: torch.device,
    quick: bool,
    cuda_graphs: bool,
    channels_last: bool,
    compile_: bool,
    gpu_decode: bool,
    pinned: bool,
    inflight: int,
) -> dict[str, Any]:
    try:
        import torchvision

        tv: str | None = torchvision.__version__
    except ImportError:
        tv = None
    return {
        "quick": quick,
        "device": str(device),
        "raw precision": "bf16 (autocast as served; bf16 weights)"
        if device.type == "cuda"
        else "fp32",
        "cuda_graphs": cuda_graphs and device.type == "cuda",
        "channels_last": channels_last,
        "torch_compile": compile_,
        "torchvision_decode": tv if (gpu_decode and tv) else None,
        "decode": (
            f"torchvision {tv} decode_jpeg on {device.type} + PIL thread pool"
            if gpu_decode and tv
            else "PIL thread pool (torchvision not installed or --no-gpu-decode)"
        ),
        "pinned_memory": pinned and device.type == "cuda",
        "inflight": inflight,
        "served settings": {},
    }


@app.command()
def main(
    device_name: Annotated[
        str, typer.Option("--device", help="cuda (default), cuda:N or cpu (a dry run)")
    ] = "cuda",
    quick: Annotated[bool, typer.Option(help="tiny model, few points, short windows")] = False,
    out: Annotated[
        Path | None, typer.Option(help="report dir (default: $OUT, else reports/ on a GPU)")
    ] = None,
    seconds: Annotated[float | None, typer.Option(help="timing window per figure")] = None,
    cuda_graphs: Annotated[bool, typer.Option(help="CUDA graphs for fixed shapes")] = True,
    channels_last: Annotated[bool, typer.Option(help="channels_last pixels and model")] = True,
    compile_: Annotated[
        bool, typer.Option("--compile/--no-compile", help="torch.compile ceiling (slow)")
    ] = False,
    gpu_decode: Annotated[bool, typer.Option(help="torchvision.io.decode_jpeg path")] = True,
    pinned: Annotated[bool, typer.Option(help="pinned host memory for copies")] = True,
    inflight: Annotated[int, typer.Option(help="batches in flight (raw pipeline)")] = 2,
    budget: Annotated[float, typer.Option(help="seconds; optional work past it is skipped")] = 420,
) -> None:
    """Raw ceilings vs served, encoder / search / scorer, on one device; see the module doc."""
    record_imports()
    try:
        device = resolve_device(device_name, setting="--device")
    except DeviceUnavailable as err:
        print(f"{err}\n(--device cpu runs the same code on the CPU: a dry run)", flush=True)
        raise typer.Exit(2) from None
    sizes = QUICK if quick else FULL
    if seconds is not None:
        sizes = dataclasses.replace(sizes, seconds=seconds)
    if out is None:
        env_out = os.environ.get("OUT")
        if env_out:
            out = Path(env_out)
        elif device.type == "cuda":
            out = Path("reports")
        else:  # never a CPU figure in reports/bench_gpu.md
            out = Path(tempfile.gettempdir()) / "concord-gpu-bench-dry-run"
    opts = options_used(
        device, quick, cuda_graphs, channels_last, compile_, gpu_decode, pinned, inflight
    )
    bench = Bench(device, out, opts, budget=budget)
    # torch's pools as the services size theirs (intra-op and inter-op: with torch's default
    # inter-op pool, CLIP4DM's backward ran 20x slower on a busy 2-core machine); one thread on
    # a CPU dry run, which shares the machine with the service process.
    configure_torch_threads(DeviceSettings(torch_threads=1 if device.type == "cpu" else None))
    bench.facts["environment"] = environment(device)
    print(json.dumps(bench.facts["environment"], indent=1), flush=True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            bench.facts["nvidia-smi"] = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
    try:
        run_all(bench, sizes, device)
    finally:
        path = bench.write()
        print(f"wrote {path} and {path.with_suffix('.json')}", flush=True)
        for g in bench.goals():
            print(f"GOAL {g['goal']}: {g['value']} -> met={g['met']}", flush=True)
        if bench.failures:
            print(
                f"{len(bench.failures)} measurement(s) FAILED: "
                + "; ".join(f["what"] for f in bench.failures),
                flush=True,
            )


def run_all(bench: Bench, sizes: Sizes, device: torch.device) -> None:
    opts = bench.options
    with tempfile.TemporaryDirectory(prefix="concord-gpu-bench-") as tmp:
        home = Path(tmp)
        texts = texts_for(max(max(sizes.batches), 64))
        with bench.section("inputs"):
            directory = write_clip(home / "clip", sizes.clip, " ".join(texts).split())
            jpegs = make_jpegs(max(max(sizes.batches) * 2, 64), sizes.image_side)
            bench.facts["jpeg bytes (mean)"] = int(np.mean([len(j) for j in jpegs]))
            m = load_models(bench, directory, opts["channels_last"])
            vision, text = sizes.clip["vision_config"], sizes.clip["text_config"]
            bench.facts["model"] = (
                f"random CLIP (Concord's public-CLIP loader): vision "
                f"{vision['hidden_size']}x{vision['num_hidden_layers']} layers, "
                f"{vision['image_size']} px / {vision['patch_size']} px patches; text "
                f"{text['hidden_size']}x{text['num_hidden_layers']} layers, vocab "
                f"{text['vocab_size']}; {sizes.clip['projection_dim']}-d; JPEGs "
                f"{sizes.image_side} px"
            )
            lengths = m.tokenizer(texts[:8]).attention_mask.sum(1)
            bench.facts["caption tokens (first 8)"] = [int(x) for x in lengths]
            gen = torch.Generator().manual_seed(0)
            side = m.image_size
            pixels = torch.rand(max(sizes.batches), 3, side, side, generator=gen).to(device)
            rng = np.random.default_rng(1)
            queries = rng.standard_normal((200, m.embed_dim)).astype(np.float32)
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)

        with bench.section("search: raw engine"):
            store = bench.measure(
                "build collection", lambda: build_collection(bench, home, sizes, m.embed_dim)
            )
            if store is not None:
                raw_search(bench, store, sizes, queries, m, texts)
                store.close()  # one process owns a shard: the service opens it next

        with bench.section("encoder: raw forward ceilings"):
            raw_encoder(bench, m, sizes, pixels, texts)
        pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
        with pool, bench.section("encoder: raw JPEG -> embedding pipelines"):
            raw_pipelines(bench, m, sizes, jpegs, pool)
        with bench.section("scorer: raw"):
            raw_scorer(bench, m, sizes, jpegs, texts)

        # What the served path must give back: the service's preprocessing and precision.
        reference = bench.measure(
            "raw reference embeddings", lambda: reference_embeddings(bench, m, jpegs, texts)
        )
        largest = max(sizes.batches)
        env = {
            "CONCORD_ENCODER_MODEL": str(directory),
            "CONCORD_SCORER__MODEL": str(scorer_package(home, directory, min(3, m.text_depth))),
            "CONCORD_DEVICE__DEFAULT": str(device),
            "CONCORD_DEVICE__PRECISION": "bf16" if device.type == "cuda" else "auto",
            "CONCORD_BATCHING__MAX_BATCH_SIZE": str(largest),
            "CONCORD_BATCHING__MAX_QUEUE": str(max(sizes.max_queue, 2 * largest * sizes.many)),
        }
        if device.type == "cpu":  # a dry run on a shared machine: no spinning thread pools
            env["CONCORD_DEVICE__TORCH_THREADS"] = "1"
        opts["served settings"] = {k: v for k, v in env.items() if "MODEL" not in k}

        def served() -> None:
            with serve(home, env) as addresses:
                bench.facts["section seconds"]["served: start"] = round(
                    time.perf_counter() - start, 1
                )
                served_encoder(bench, sizes, addresses["encoder"], jpegs, texts, reference)
                bench.write()
                served_search(bench, sizes, addresses["retrieval"], queries, texts)
                bench.write()
                served_scorer(bench, sizes, addresses["scorer"], jpegs, texts)

        with bench.section("served: encoder + retrieval + scorer"):
            start = time.perf_counter()
            bench.measure("serve encoder + retrieval + scorer", served)
            log = home / "serve.log"
            if log.is_file() and any(f["what"].startswith("serve") for f in bench.failures):
                bench.facts["serve.log (tail)"] = log.read_text()[-3000:]
            ratios(bench, sizes)

        if opts["torch_compile"]:
            if bench.left() < 90:
                bench.skip("torch.compile ceiling", f"time budget ({bench.left():.0f} s left)")
            else:
                with bench.section("encoder: torch.compile ceiling"):
                    compiled_ceiling(bench, m, sizes, pixels)


def reference_embeddings(
    bench: Bench, m: Models, jpegs: list[bytes], texts: list[str], n: int = 8
) -> dict[str, np.ndarray]:
    """Pooled embeddings as the encoder service computes them (PIL decode, its preprocessing,
    its precision) for the first `n` images and texts."""
    from concord.media import decode_image
    from concord.models.preprocess import images_to_tensor

    device = bench.device
    precision = "bf16" if device.type == "cuda" else "fp32"
    with inference(device, precision):  # type: ignore[arg-type]
        pil = [decode_image(d, "image/jpeg") for d in jpegs[:n]]
        img = m.served_like.encode_image(images_to_tensor(pil, m.image_size).to(device))
        tok = m.tokenizer(texts[:n])
        txt = m.served_like.encode_text(tok.input_ids.to(device), tok.attention_mask.to(device))
    return {
        "images": img.pooled.float().cpu().numpy(),
        "texts": txt.pooled.float().cpu().numpy(),
    }


if __name__ == "__main__":
    app()
