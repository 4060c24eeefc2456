"""Train the Concord generator (GCDP joint image + layout, or the image-only baseline) on simple
Concord Scenes: setup, loop, sample grids, checkpoint/resume, track in MLflow, register
`concord-generator`. `python -m pipelines.train_generator --preset tiny --steps N ...`; every option
also reads a `CONCORD_TRAIN_*` variable, so a Kubernetes Job can set it by env."""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from rich.console import Console
from tqdm import tqdm

from concord.checkpoints import load_text_encoder, save_generator
from concord.devices import describe, resolve_device
from concord.media import colour_layout
from concord.models.diffusion.categorical import CategoricalDiffusion
from concord.models.diffusion.config import GeneratorConfig, load_preset
from concord.models.diffusion.ema import EMA
from concord.models.diffusion.losses import diffusion_loss
from concord.models.diffusion.pipeline import Sample, TextToImage, encode_text
from concord.models.diffusion.schedule import NoiseSchedule
from concord.models.diffusion.unet import UNet
from pipelines.generator.data import DataConfig, GeneratorData, load_or_build
from pipelines.tracking import TrainingRun

MODEL_NAME = "concord-generator"
EXPERIMENT = "concord-generator"
STATE_FILE = "train_state.pt"  # inside <out>/checkpoint/: weights, EMA, optimiser, step, RNG
SAMPLE_PROMPTS: tuple[str, ...] = (
    "a red circle above a blue square",
    "a green triangle to the left of a yellow square",
    "a blue square below a purple circle",
    "a yellow circle to the right of a red triangle",
    "a blue cross",
    "a purple circle in the top left corner",
    "a red square and a green circle",
    "a yellow triangle at the bottom",
)
# Per-preset training defaults (TrainConfig fields); the architecture comes from the model preset.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"steps": 8000, "batch_size": 24, "lr": 1e-3, "data_count": 6000, "sample_steps": 25},
    "small": {
        "steps": 40000,
        "batch_size": 64,
        "lr": 2e-4,
        "data_count": 30000,
        "sample_steps": 50,
    },
}


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "tiny"  # model preset (configs/<name>.json) or config JSON path
    layout: bool | None = None  # True GCDP, False image-only baseline; None: the preset's
    steps: int | None = None  # optimiser steps; None: the preset's
    batch_size: int | None = None
    lr: float | None = None  # peak AdamW rate; linear warmup then cosine to lr_floor x peak
    warmup: int = 200
    lr_floor: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    data_count: int | None = None  # training scenes; None: the preset's
    rare_frac: float = 0.03  # share of objects drawn as the rare shape ("cross")
    data_dir: Path | None = None  # cache of rendered data and text states; None: CONCORD_HOME
    seed: int = 0
    threads: int = 2
    device: str = "auto"  # auto | cpu | cuda | cuda:N: the U-Net, its batches and the sampling
    out: Path | None = None  # model dir; None: a temp dir. Checkpoints go to <out>/checkpoint
    resume: Path | None = None  # an earlier `out` to continue from its checkpoint
    checkpoint_every: int = 500
    sample_every: int = 1000  # sample grid PNG artifact every N steps (and at the end)
    log_every: int = 50
    sample_steps: int | None = None  # DDIM steps for sample grids
    guidance: float = 3.0  # guidance scale for sample grids
    tracking_uri: str | None = None  # MLflow; None: no tracking
    register: bool = False  # register as `concord-generator` (needs tracking_uri)
    alias: str | None = None  # alias to move to the new version (needs register)
    run_name: str | None = None
    progress: bool = True

    def resolved(self) -> TrainConfig:
        """A copy with preset defaults filled in for every None training field."""
        preset = TRAIN_PRESETS.get(Path(self.preset).stem, TRAIN_PRESETS["tiny"])
        return replace(self, **{k: v for k, v in preset.items() if getattr(self, k) is None})


@dataclass
class TrainResult:
    pipe: TextToImage  # EMA weights, eval mode
    model_dir: Path
    step: int = 0  # the last optimiser step
    losses: list[tuple[int, float, float]] = field(default_factory=list)  # (step, image, layout)
    seconds: float = 0.0  # wall time of the loop in this process (setup and caching excluded)
    grids: list[Path] = field(default_factory=list)  # sample grid PNGs written
    run_id: str | None = None
    version: int | None = None


def data_config(cfg: TrainConfig, arch: GeneratorConfig) -> DataConfig:
    return DataConfig(
        size=arch.image_size, count=int(cfg.data_count), seed=cfg.seed, rare_frac=cfg.rare_frac
    )


def text_states(
    data: GeneratorData, arch: GeneratorConfig, cache_file: Path, encoder: Any
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """MiniLM token states of every caption, computed once and cached (fp16) in `cache_file`.

    Returns:
        (states (U, L, D) float16, mask (U, L) bool, caption index (N, C) into U).
    """
    unique = data.unique_captions()
    if cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as z:
            if z["captions"].tolist() == unique:
                states, mask = torch.from_numpy(z["states"]), torch.from_numpy(z["mask"])
                return states, mask, _index(data, unique)
    backbone, tokenizer = encoder
    chunks = []
    for i in range(0, len(unique), 256):
        s, m = encode_text(backbone, tokenizer, unique[i : i + 256], arch.max_text_tokens)
        chunks.append((s.half(), m))
    states = torch.cat([c[0] for c in chunks])
    mask = torch.cat([c[1] for c in chunks])
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp.npz")
    np.savez(tmp, captions=np.asarray(unique, dtype=str), states=states.numpy(), mask=mask.numpy())
    tmp.replace(cache_file)
    return states, mask, _index(data, unique)


def _index(data: GeneratorData, unique: list[str]) -> np.ndarray:
    pos = {c: i for i, c in enumerate(unique)}
    return np.vectorize(pos.__getitem__)(data.captions).astype(np.int64)


def lr_factor(step: int, total: int, warmup: int, floor: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def sample_grid(samples: list[Sample], scale: int = 3) -> np.ndarray:
    """Images in a row, their layouts (coloured) in the row below; nearest-upscaled."""
    rows = [np.concatenate([s.image for s in samples], axis=1)]
    if samples and samples[0].layout is not None:
        rows.append(np.concatenate([colour_layout(s.layout) for s in samples], axis=1))
    grid = np.concatenate(rows, axis=0)
    return grid.repeat(scale, axis=0).repeat(scale, axis=1)


def train(cfg: TrainConfig) -> TrainResult:
    """Train one generator end to end (or continue one with `cfg.resume`).

    Returns:
        The EMA pipeline, its saved directory, the loss history and registry ids.
    """
    cfg = cfg.resolved()
    if cfg.register and not cfg.tracking_uri:
        raise ValueError("register needs a tracking URI")
    if cfg.alias and not cfg.register:
        raise ValueError("an alias needs register")
    # -- setup
    device = resolve_device(cfg.device, setting="--device (CONCORD_TRAIN_DEVICE)")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    arch = load_preset(cfg.preset)
    if cfg.layout is not None:
        arch = arch.replace(layout=cfg.layout)
    state = _read_state(cfg.resume) if cfg.resume else None
    if state is not None:
        arch = GeneratorConfig.from_dict(state["config"])
        cfg = _resumed_config(state["train_config"], cfg)
    data_dir = Path(cfg.data_dir) if cfg.data_dir else _default_data_dir()
    dcfg = data_config(cfg, arch)
    data = load_or_build(dcfg, data_dir)
    encoder = load_text_encoder()
    states, masks, cap_idx = text_states(
        data, arch, data_dir / f"generator-text-{dcfg.key()}-L{arch.max_text_tokens}.npz", encoder
    )
    # The whole training set lives on the device (64x64 scenes: megabytes to a few GB), so a
    # step only gathers rows there. Noise and timesteps are still drawn on the CPU from `gen`,
    # so a seed gives the same run on any device (up to float rounding).
    images = (torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 127.5 - 1).to(device)
    layouts = torch.from_numpy(data.layouts).long().to(device)
    states, masks = states.to(device), masks.to(device)
    encoder[0].to(device)  # the text backbone samples the grids on the device too
    unet = UNet(arch).to(device)
    ema = EMA(unet, cfg.ema_decay)
    opt = torch.optim.AdamW(unet.parameters(), lr=float(cfg.lr), weight_decay=cfg.weight_decay)
    schedule = NoiseSchedule(arch.schedule, arch.train_timesteps)
    cat = (
        CategoricalDiffusion(arch.num_classes, arch.layout_schedule, arch.train_timesteps)
        if arch.layout
        else None
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    step = 0
    if state is not None:
        unet.load_state_dict(state["unet"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["torch_rng"])
        rng.bit_generator.state = state["np_rng"]
        step = int(state["step"])
    out = Path(cfg.out or cfg.resume or tempfile.mkdtemp(prefix="concord-generator-"))
    pipe = TextToImage(ema.module, encoder[0], encoder[1], arch)
    result = TrainResult(pipe, out, step)
    tracker = TrainingRun(
        cfg.tracking_uri,
        cfg.run_name or f"{arch.name}-{'gcdp' if arch.layout else 'image'}",
        experiment=EXPERIMENT,
        model_name=MODEL_NAME,
        model_files=("config.json", "weights.safetensors"),
    )
    params = {
        **{k: str(v) for k, v in asdict(cfg).items()},
        "config": json.dumps(arch.to_dict()),
        "data": json.dumps(asdict(dcfg)),
        "parameters": sum(p.numel() for p in unet.parameters()),
        "resumed_from_step": step,
    }
    tracker.start(params)
    if cfg.progress:
        console.print(f"training on {describe(device, 'fp32')}")
    # -- loop
    t0 = time.perf_counter()
    total = int(cfg.steps)
    try:
        unet.train()
        bar = tqdm(range(step, total), desc="train", disable=not cfg.progress)
        window: list[tuple[float, float]] = []
        for step in bar:
            for g in opt.param_groups:
                g["lr"] = float(cfg.lr) * lr_factor(step, total, cfg.warmup, cfg.lr_floor)
            idx = rng.integers(0, len(data), size=int(cfg.batch_size))
            pick = cap_idx[idx, rng.integers(0, cap_idx.shape[1], size=len(idx))]
            parts = diffusion_loss(
                unet,
                schedule,
                cat,
                images[idx],
                states[pick].float(),
                masks[pick],
                layouts[idx] if arch.layout else None,
                generator=gen,
            )
            opt.zero_grad(set_to_none=True)
            parts.total.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
            opt.step()
            ema.update(unet)
            window.append((float(parts.image), float(parts.layout)))
            done = step + 1
            if done % cfg.log_every == 0 or done == total:
                eps_l, lay_l = (float(np.mean(v)) for v in zip(*window, strict=True))
                result.losses.append((done, eps_l, lay_l))
                tracker.log(
                    {"loss_image": eps_l, "loss_layout": lay_l, "lr": opt.param_groups[0]["lr"]},
                    done,
                )
                bar.set_postfix(image=f"{eps_l:.4f}", layout=f"{lay_l:.4f}")
                window = []
            if done % cfg.sample_every == 0 or done == total:
                result.grids.append(_grid(pipe, cfg, out, done, tracker))
            if done % cfg.checkpoint_every == 0 or done == total:
                _write_state(out, unet, ema, opt, gen, rng, done, arch, cfg)
        result.step = total
        result.seconds = time.perf_counter() - t0
        # -- checkpoint
        save_generator((ema.module, arch), out)
        tracker.log({"train_seconds": result.seconds}, total)
        result.run_id, result.version = tracker.finish(out, cfg.register, cfg.alias)
    except BaseException:
        tracker.fail()
        raise
    return result


def _grid(pipe: TextToImage, cfg: TrainConfig, out: Path, step: int, tracker: TrainingRun) -> Path:
    from PIL import Image

    samples = pipe.generate(
        list(SAMPLE_PROMPTS),
        seed=cfg.seed,
        steps=int(cfg.sample_steps),
        guidance_scale=cfg.guidance,
    )
    path = out / "samples" / f"step_{step:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sample_grid(samples)).save(path)
    tracker.artifact(path, "samples")
    return path


# What a resumed run takes from its own command line; everything else comes from the checkpoint.
RUNTIME_FIELDS = (
    "steps",
    "threads",
    "device",
    "out",
    "resume",
    "checkpoint_every",
    "sample_every",
    "log_every",
    "tracking_uri",
    "register",
    "alias",
    "run_name",
    "progress",
    "data_dir",
)


def _resumed_config(saved: dict[str, Any], new: TrainConfig) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    base = TrainConfig(**{k: v for k, v in saved.items() if k in known})
    base = replace(base, data_dir=Path(base.data_dir) if base.data_dir else None)
    return replace(base, **{k: getattr(new, k) for k in RUNTIME_FIELDS})


def _write_state(
    out: Path,
    unet: UNet,
    ema: EMA,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    rng: np.random.Generator,
    step: int,
    arch: GeneratorConfig,
    cfg: TrainConfig,
) -> None:
    ckpt = out / "checkpoint"
    ckpt.mkdir(parents=True, exist_ok=True)
    state = {
        "unet": unet.state_dict(),
        "ema": ema.state_dict(),
        "opt": opt.state_dict(),
        "torch_rng": gen.get_state(),
        "np_rng": rng.bit_generator.state,
        "step": step,
        "config": arch.to_dict(),
        "train_config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
    }
    torch.save(state, ckpt / (STATE_FILE + ".tmp"))
    (ckpt / (STATE_FILE + ".tmp")).replace(ckpt / STATE_FILE)


def _read_state(directory: Path) -> dict[str, Any]:
    path = Path(directory) / "checkpoint" / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no training checkpoint at {path}")
    # Onto the CPU: a checkpoint written on a GPU resumes anywhere (load_state_dict then copies
    # each tensor to its parameter's device).
    return torch.load(path, weights_only=False, map_location="cpu")


def _default_data_dir() -> Path:
    from concord.config import load_settings

    return load_settings().home / "datasets"


app = typer.Typer(add_completion=False, help=__doc__)
console = Console()


def _env(name: str) -> str:
    return f"CONCORD_TRAIN_{name}"


@app.command()
def main(
    preset: Annotated[
        str, typer.Option(envvar=_env("PRESET"), help="tiny | small | JSON")
    ] = "tiny",
    steps: Annotated[int | None, typer.Option(envvar=_env("STEPS"))] = None,
    layout: Annotated[
        bool | None,
        typer.Option(
            "--layout/--no-layout",
            envvar=_env("LAYOUT"),
            help="GCDP joint layout, or the image-only baseline",
        ),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(envvar=_env("BATCH_SIZE"))] = None,
    lr: Annotated[float | None, typer.Option(envvar=_env("LR"))] = None,
    data_count: Annotated[int | None, typer.Option(envvar=_env("DATA_COUNT"))] = None,
    rare_frac: Annotated[float, typer.Option(envvar=_env("RARE_FRAC"))] = 0.03,
    data_dir: Annotated[Path | None, typer.Option(envvar=_env("DATA_DIR"))] = None,
    seed: Annotated[int, typer.Option(envvar=_env("SEED"))] = 0,
    threads: Annotated[int, typer.Option(envvar=_env("THREADS"))] = 2,
    device: Annotated[
        str, typer.Option(envvar=_env("DEVICE"), help="auto | cpu | cuda | cuda:N")
    ] = "auto",
    out: Annotated[Path | None, typer.Option(envvar=_env("OUT"), help="model directory")] = None,
    resume: Annotated[
        Path | None, typer.Option(envvar=_env("RESUME"), help="an earlier --out to continue")
    ] = None,
    checkpoint_every: Annotated[int, typer.Option(envvar=_env("CHECKPOINT_EVERY"))] = 500,
    sample_every: Annotated[int, typer.Option(envvar=_env("SAMPLE_EVERY"))] = 1000,
    register: Annotated[
        bool, typer.Option(envvar=_env("REGISTER"), help=f"register as {MODEL_NAME}")
    ] = False,
    alias: Annotated[
        str | None, typer.Option(envvar=_env("ALIAS"), help="alias to move (with --register)")
    ] = "production",
    tracking_uri: Annotated[
        str | None,
        typer.Option(envvar=_env("TRACKING_URI"), help="MLflow URI (default: Concord settings)"),
    ] = None,
) -> None:
    """Train, log sample grids, save, and (optionally) register and alias the generator."""
    if tracking_uri is None:
        from concord.config import load_settings

        tracking_uri = load_settings().tracking_uri
    cfg = TrainConfig(
        preset=preset,
        layout=layout,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        data_count=data_count,
        rare_frac=rare_frac,
        data_dir=data_dir,
        seed=seed,
        threads=threads,
        device=device,
        out=out,
        resume=resume,
        checkpoint_every=checkpoint_every,
        sample_every=sample_every,
        tracking_uri=tracking_uri,
        register=register,
        alias=alias if register else None,
    )
    res = train(cfg)
    for s, e, lay in res.losses[-3:]:
        console.print(f"step {s}: image {e:.4f}  layout {lay:.4f} bits/px")
    console.print(
        f"[green]saved[/] {res.model_dir}  run {res.run_id}  "
        + (f"registered {MODEL_NAME} v{res.version}" if res.version else "")
        + (f" @{cfg.alias}" if cfg.alias and res.version else "")
        + f"  train {res.seconds:.0f}s"
    )


if __name__ == "__main__":
    app()
