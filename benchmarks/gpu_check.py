"""Does Concord really run on the GPU, and what does it gain there? One short run (a few minutes on
one H200; never imported by tests):

- the tiny (and, on a GPU, base) encoder lands on CUDA; pooled embeddings of fp32 vs bf16 autocast
  agree (cosine min / mean, images and texts), and CUDA fp32 agrees with the CPU;
- batched throughput, images/s and texts/s: CPU fp32 vs CUDA fp32 vs CUDA bf16;
- the encoder service's servable started with device cuda encodes on the GPU;
- the scorer (CLIP4DM needs gradients) scores on the device like on the CPU;
- the generator's tiny U-Net: guided forward steps/s fp32 vs bf16, a few sampling steps on the
  device vs the CPU (pixel agreement), and one training step of each model on the device.

    python -m benchmarks.gpu_check              # needs CUDA
    python -m benchmarks.gpu_check --cpu-only   # the same checks on the CPU, quickly (smoke)

Writes gpu_check.md and gpu_check.json under $OUT if set, else reports/. Every check is recorded
with its error, so a partial failure still reports what worked; exit status 1 if any failed.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from concord.devices import (
    DeviceUnavailable,
    autocast,
    autocast_dtype,
    describe,
    resolve_device,
)

app = typer.Typer(add_completion=False)
CAPTIONS = (
    "a red circle above a blue square",
    "a green triangle to the left of a yellow square",
    "a blue cross",
    "a purple circle in the top left corner",
    "two small orange hearts below a large striped star",
    "a crescent",
)


@dataclass
class Report:
    """Rows in the reports/ JSON shape ({metric, split, method, value, baseline?}) + checks."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)

    def row(
        self, metric: str, split: str, method: str, value: float, baseline: str | None = None
    ) -> None:
        r: dict[str, Any] = {"metric": metric, "split": split, "method": method}
        r["value"] = round(float(value), 6)
        if baseline is not None:
            r["baseline"] = baseline
        self.rows.append(r)
        print(f"  {metric:<28} {split:<26} {method:<12} {value:.4f}", flush=True)

    def check(self, name: str, fn: Callable[[], str]) -> None:
        """Run one check; a failure is recorded (with its error), not raised."""
        started = time.perf_counter()
        print(f"[{name}]", flush=True)
        try:
            detail, ok = fn(), True
        except Exception as err:  # the report says what broke
            detail, ok = f"{type(err).__name__}: {err}", False
            traceback.print_exc()
        seconds = time.perf_counter() - started
        self.checks.append(
            {"check": name, "ok": ok, "detail": detail, "seconds": round(seconds, 1)}
        )
        print(f"  -> {'ok' if ok else 'FAILED'} ({seconds:.1f}s) {detail}", flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn: Callable[[], object], items: int, device: torch.device, seconds: float) -> float:
    """Items/s of `fn` (one call = `items` items) after one warm-up call, over >= `seconds`."""
    fn()
    _sync(device)
    calls, started = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        _sync(device)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return items * calls / elapsed


def cosines(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(min, mean) row cosine between two (N, E) embeddings."""
    cos = torch.nn.functional.cosine_similarity(a.float().cpu(), b.float().cpu(), dim=-1)
    return float(cos.min()), float(cos.mean())


def captions(n: int) -> list[str]:
    return [CAPTIONS[i % len(CAPTIONS)] for i in range(n)]


# ------------------------------------------------------------------------------- encoder


def encoder_checks(
    report: Report, preset: str, device: torch.device, batch: int, seconds: float
) -> None:
    from concord.checkpoints import build_encoder
    from concord.models.config import load_config

    config = load_config(preset)
    cpu_model, tokenizer = build_encoder(config, seed=0)
    cpu_model.eval()
    model, _ = build_encoder(config, seed=0)  # the same weights (same seed), then moved
    model.eval().to(device)
    size = config.image.image_size
    gen = torch.Generator().manual_seed(0)
    pixels = torch.rand(batch, 3, size, size, generator=gen)
    tok = tokenizer(captions(batch))
    split = f"encoder-{preset} b{batch}"

    def run(m: torch.nn.Module, dev: torch.device, precision: str, kind: str) -> torch.Tensor:
        with torch.inference_mode(), autocast(dev, precision):  # type: ignore[arg-type]
            if kind == "image":
                return m.encode_image(pixels.to(dev)).pooled.float()
            ids, mask = tok.input_ids.to(dev), tok.attention_mask.to(dev)
            return m.encode_text(ids, mask).pooled.float()

    def placed() -> str:
        where = {p.device.type for p in model.parameters()}
        if where != {device.type}:
            raise AssertionError(f"parameters on {where}, wanted {device.type}")
        return f"{preset}: every parameter on {device}"

    report.check(f"encoder-{preset} on device", placed)

    def agreement() -> str:
        out = []
        for kind in ("image", "text"):
            reference = run(cpu_model, torch.device("cpu"), "fp32", kind)
            fp32 = run(model, device, "fp32", kind)
            lo, mean = cosines(reference, fp32)
            report.row("cosine min", f"{split} {kind}", f"{device.type}-fp32", lo)
            report.row("cosine mean", f"{split} {kind}", f"{device.type}-fp32", mean)
            if device.type == "cuda":
                low = run(model, device, "auto", kind)
                dtype = autocast_dtype(device, "auto")
                name = str(dtype).removeprefix("torch.") if dtype else "fp32"
                lo16, mean16 = cosines(fp32, low)
                report.row("cosine min", f"{split} {kind}", f"cuda-{name}", lo16, "cuda-fp32")
                report.row("cosine mean", f"{split} {kind}", f"cuda-{name}", mean16, "cuda-fp32")
                out.append(f"{kind}: fp32 vs CPU min {lo:.5f}, {name} vs fp32 min {lo16:.5f}")
            else:
                out.append(f"{kind}: vs CPU min {lo:.5f}")
            if lo < 0.999:
                raise AssertionError(f"{kind}: {device} fp32 disagrees with the CPU (min {lo})")
        return "; ".join(out)

    report.check(f"encoder-{preset} agreement", agreement)

    def throughput() -> str:
        out = []
        modes = [("cpu", torch.device("cpu"), cpu_model, "fp32")]
        if device.type == "cuda":
            modes += [("cuda-fp32", device, model, "fp32"), ("cuda-bf16", device, model, "bf16")]
        for kind in ("image", "text"):
            unit = "images/s" if kind == "image" else "texts/s"
            for label, dev, m, precision in modes:

                def call(
                    m: torch.nn.Module = m,
                    dev: torch.device = dev,
                    p: str = precision,
                    k: str = kind,
                ) -> torch.Tensor:
                    return run(m, dev, p, k)

                value = rate(call, batch, dev, seconds)
                baseline = None if label == "cpu" else "cpu"
                report.row(unit, split, label, value, baseline)
                out.append(f"{kind} {label} {value:.0f}/s")
        return ", ".join(out)

    report.check(f"encoder-{preset} throughput", throughput)


def servable_check(report: Report, device: torch.device, work: Path) -> None:
    """The encoder service's own code path: start with the device setting, encode, stop."""
    from PIL import Image

    from concord.checkpoints import build_encoder, save_encoder
    from concord.config import DeviceSettings, Settings
    from concord.models.config import load_config
    from services.encoder.servable import EncoderServable

    def run() -> str:
        directory = work / "tiny-encoder"
        model, tokenizer = build_encoder(load_config("tiny"), seed=0)
        save_encoder(model.eval(), tokenizer, directory)
        settings = Settings(
            home=work, encoder_model=str(directory), device=DeviceSettings(default=str(device))
        )
        rng = np.random.default_rng(0)
        images = [
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(8)
        ]

        async def serve() -> tuple[list[Any], list[Any], str]:
            servable = EncoderServable(settings, lambda: None)  # type: ignore[arg-type, return-value]
            await servable.start()
            try:
                if not servable.ready:
                    raise AssertionError(f"not ready: {servable.load_error}")
                where = str(next(servable.require().torch_model().parameters()).device)
                return (
                    await servable.encode_images(images),
                    await servable.encode_texts(captions(8)),
                    where,
                )
            finally:
                await servable.stop()

        got_images, got_texts, where = asyncio.run(serve())
        if torch.device(where).type != device.type:
            raise AssertionError(f"the servable's model is on {where}, wanted {device}")
        pooled = np.stack([e.pooled for e in got_images + got_texts])
        if pooled.dtype != np.float32 or not np.allclose(
            np.linalg.norm(pooled, axis=1), 1, atol=1e-3
        ):
            raise AssertionError("servable outputs are not unit-norm float32")
        return f"servable model on {where}; 8 images + 8 texts encoded, float32 unit-norm"

    report.check("encoder servable on device", run)


def scorer_check(report: Report, device: torch.device) -> None:
    """AlignmentScorer (forward + backward for CLIP4DM) on the device vs the CPU."""
    from concord.checkpoints import build_encoder
    from concord.models.alignment import AlignmentScorer
    from concord.models.config import load_config

    def run() -> str:
        config = load_config("tiny")
        cpu_model, tokenizer = build_encoder(config, seed=0)
        model, _ = build_encoder(config, seed=0)
        model.to(device)
        pixels = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        texts = captions(4)
        want = AlignmentScorer(cpu_model.eval(), tokenizer).score(pixels, texts)
        got = AlignmentScorer(model.eval(), tokenizer).score(pixels.to(device), texts)
        diff = max(abs(a.clip_score - b.clip_score) for a, b in zip(want, got, strict=True))
        report.row("max |CLIPScore diff|", "scorer-tiny b4", f"{device.type}-fp32", diff)
        if diff > 1e-3:
            raise AssertionError(f"CLIPScore differs from the CPU by {diff}")
        return f"4 pairs scored on {device}; max CLIPScore diff vs CPU {diff:.2e}"

    report.check("scorer on device", run)


# ------------------------------------------------------------------------------- generator


def generator_checks(report: Report, device: torch.device, batch: int, seconds: float) -> None:
    from concord.checkpoints import build_generator, to_device
    from concord.models.diffusion.config import load_preset

    config = load_preset("tiny")
    cpu_pipe = build_generator(config, seed=0)
    pipe = to_device(build_generator(config, seed=0), device)
    s = config.image_size
    split = f"generator-tiny b{batch}"

    def forward_rate() -> str:
        # The guided step's forward: conditional + unconditional rows in one batch.
        b = 2 * batch
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(b, 3, s, s, generator=gen).to(device)
        t = torch.full((b,), config.train_timesteps // 2, dtype=torch.long).to(device)
        text, mask = pipe.unet.null_condition(b)
        y = torch.randint(0, config.num_classes, (b, s, s), generator=gen).to(device)
        y_t = y if config.layout else None
        out = []
        modes = [("fp32", "fp32")] + ([("bf16", "bf16")] if device.type == "cuda" else [])
        for label, precision in modes:

            def step(precision: str = precision) -> object:
                with torch.inference_mode(), autocast(device, precision):  # type: ignore[arg-type]
                    return pipe.unet(x, t, text, mask, y_t)

            value = rate(step, batch, device, seconds)
            name = f"{device.type}-{label}"
            base = None if label == "fp32" else f"{device.type}-fp32"
            report.row("guided steps x images/s", split, name, value, base)
            out.append(f"{name} {value:.0f}")
        return ", ".join(out)

    report.check("generator U-Net forward", forward_rate)

    def sampling() -> str:
        prompts, steps = captions(batch), 5
        want = cpu_pipe.generate(prompts, seed=0, steps=steps, guidance_scale=3.0)
        got = pipe.generate(prompts, seed=0, steps=steps, guidance_scale=3.0)
        diff = float(
            np.mean(
                [
                    np.abs(a.image.astype(float) - b.image.astype(float)).mean()
                    for a, b in zip(want, got, strict=True)
                ]
            )
        )
        report.row("mean |pixel diff| vs cpu", split, f"{device.type}-fp32", diff)
        detail = f"{steps} DDIM steps on {device}: mean |pixel diff| vs CPU {diff:.2f}/255"
        if device.type == "cuda":
            with autocast(device, "auto"):
                low = pipe.generate(prompts, seed=0, steps=steps, guidance_scale=3.0)
            diff16 = float(
                np.mean(
                    [
                        np.abs(a.image.astype(float) - b.image.astype(float)).mean()
                        for a, b in zip(got, low, strict=True)
                    ]
                )
            )
            report.row("mean |pixel diff| vs fp32", split, "cuda-autocast", diff16, "cuda-fp32")
            detail += f"; autocast vs fp32 {diff16:.2f}/255"
        return detail

    report.check("generator sampling on device", sampling)

    def train_step() -> str:
        from concord.models.diffusion.losses import diffusion_loss

        unet = pipe.unet
        unet.train().requires_grad_(True)
        gen = torch.Generator().manual_seed(0)
        x0 = (torch.rand(batch, 3, s, s, generator=gen) * 2 - 1).to(device)
        y0 = torch.randint(0, config.num_classes, (batch, s, s), generator=gen).to(device)
        text, mask = pipe.encode_prompts(captions(batch))
        parts = diffusion_loss(
            unet,
            pipe.schedule,
            pipe.categorical,
            x0,
            text.to(device),
            mask.to(device),
            y0 if config.layout else None,
            generator=gen,
        )
        parts.total.backward()
        grads = {p.grad.device.type for p in unet.parameters() if p.grad is not None}
        unet.eval().requires_grad_(False)
        if grads != {device.type}:
            raise AssertionError(f"gradients on {grads}")
        return f"loss {float(parts.total.detach()):.3f}, gradients on {device}"

    report.check("generator training step on device", train_step)


def encoder_train_step(report: Report, device: torch.device) -> None:
    from concord.checkpoints import build_encoder
    from concord.models.config import load_config
    from concord.models.losses import contrastive_loss

    def run() -> str:
        model, tokenizer = build_encoder(load_config("tiny"), seed=0)
        model.to(device).train()
        tok = tokenizer(captions(8)).to(device)
        pixels = torch.rand(8, 3, 64, 64).to(device)
        image = model.encode_image(pixels)
        text = model.encode_text(tok.input_ids, tok.attention_mask)
        loss = contrastive_loss(image.pooled, text.pooled, model.logit_scale)
        loss.backward()
        grads = {p.grad.device.type for p in model.parameters() if p.grad is not None}
        if grads != {device.type}:
            raise AssertionError(f"gradients on {grads}")
        return f"loss {float(loss.detach()):.3f}, gradients on {device}"

    report.check("encoder training step on device", run)


# ------------------------------------------------------------------------------- report


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "device": describe(device),
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["bf16_supported"] = torch.cuda.is_bf16_supported()
    try:
        env["commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        env["commit"] = None
    return env


def write(report: Report, env: dict[str, Any], out: Path, seconds: float) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "machine": env,
        "seconds": round(seconds, 1),
        "checks": report.checks,
        "rows": report.rows,
    }
    (out / "gpu_check.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [
        "# GPU check",
        "",
        f"`python -m benchmarks.gpu_check` on {env['device']} ({env['torch']}, "
        f"CUDA build {env['cuda_build']}), {seconds:.0f} s, commit {env['commit']}.",
        "",
        "| check | ok | seconds | detail |",
        "|---|---|---|---|",
        *(
            f"| {c['check']} | {'yes' if c['ok'] else '**no**'} | {c['seconds']} | "
            f"{str(c['detail']).replace('|', '/')} |"
            for c in report.checks
        ),
        "",
        "| metric | split | method | value | baseline |",
        "|---|---|---|---|---|",
        *(
            f"| {r['metric']} | {r['split']} | {r['method']} | {r['value']:.4f} | "
            f"{r.get('baseline', '')} |"
            for r in report.rows
        ),
        "",
    ]
    (out / "gpu_check.md").write_text("\n".join(lines))
    return out


@app.command()
def main(
    cpu_only: Annotated[
        bool, typer.Option("--cpu-only", help="run every check on the CPU (a quick smoke run)")
    ] = False,
    seconds: Annotated[float, typer.Option(help="timing window per throughput figure")] = 2.0,
    batch: Annotated[int, typer.Option(help="encoder batch size")] = 64,
    out: Annotated[
        Path | None, typer.Option(help="report dir (default: $OUT, else reports/)")
    ] = None,
) -> None:
    """Place the models on the GPU, check they agree with the CPU, measure the speed-up."""
    started = time.perf_counter()
    try:
        device = torch.device("cpu") if cpu_only else resolve_device("cuda", setting="the device")
    except DeviceUnavailable as err:
        print(f"{err}\n(run with --cpu-only for a smoke run on the CPU)", flush=True)
        raise typer.Exit(2) from None
    if cpu_only:
        seconds, batch = min(seconds, 0.3), min(batch, 8)
    report = Report()
    env = environment(device)
    print(json.dumps(env, indent=2), flush=True)
    with tempfile.TemporaryDirectory(prefix="concord-gpu-check-") as tmp:
        for preset in ("tiny",) if cpu_only else ("tiny", "base"):
            encoder_checks(report, preset, device, batch, seconds)
        servable_check(report, device, Path(tmp))
        scorer_check(report, device)
        encoder_train_step(report, device)
        generator_checks(report, device, 4 if cpu_only else 16, seconds)
    target = out or Path(os.environ.get("OUT") or "reports")
    write(report, env, target, time.perf_counter() - started)
    failed = [c["check"] for c in report.checks if not c["ok"]]
    print(
        f"wrote {target}/gpu_check.md; {len(report.checks) - len(failed)} checks ok"
        + (f", FAILED: {', '.join(failed)}" if failed else ""),
        flush=True,
    )
    if failed:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
