"""Train the Concord dual encoder on Concord Scenes: setup, loop, eval, checkpoint, track in MLflow,
register `concord-encoder`. `python -m pipelines.train_encoder --preset tiny --loss clip ...`;
every option also reads a `CONCORD_TRAIN_*` variable, so a Kubernetes Job can set it by env.
Under `torchrun --nproc-per-node N -m pipelines.train_encoder ...` it trains data-parallel
(pipelines.encoder.distributed): --batch-size is the global batch, split across the N ranks, the
loss is computed on the gathered global batch, and rank 0 evaluates, logs, saves and registers."""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import typer
from rich.console import Console
from tqdm import tqdm

from concord.checkpoints import build_encoder, save_encoder
from concord.models.config import load_config
from concord.models.dual_encoder import DualEncoder, Encoded
from concord.models.losses import contrastive_loss, filip_loss
from concord.models.preprocess import TextTokenizer
from pipelines.encoder import distributed
from pipelines.encoder.data import ImageTextSet, ensure_dataset, load_retrieval, sample_captions
from pipelines.encoder.embed import TextStateCache, embed_images, embed_texts, encode_texts
from pipelines.encoder.evaluate import filip_scores, global_scores, retrieval
from pipelines.tracking import TrainingRun

MODEL_NAME = "concord-encoder"
EXPERIMENT = "concord-encoder"
Loss = Literal["clip", "filip", "both"]


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "tiny"  # encoder preset name or config JSON path
    data: Path | None = None  # a `retrieval` dataset dir; None: generate into data_cache
    data_size: str = "small"  # retrieval preset generated when data is None
    data_cache: Path | None = None  # where generated data goes; None: <CONCORD_HOME>/datasets
    seed: int = 0  # data seed, init seed and caption sampling
    loss: Loss = "clip"  # clip (global InfoNCE) | filip (token late interaction) | both (mean)
    unfrozen_layers: int | None = None  # MiniLM top layers to train; None: the preset's
    embed_dim: int | None = None  # joint dimension; None: the preset's
    epochs: int = 5
    batch_size: int = 128  # global: split across the ranks under torchrun
    lr: float = 1e-3  # image tower, projections, logit scale
    text_lr: float = 5e-5  # unfrozen MiniLM layers (pretrained: a gentler rate)
    weight_decay: float = 0.05
    warmup_frac: float = 0.1  # of all steps, then cosine decay to 0
    train_limit: int = 0  # use only the first N train images (0: all)
    val_limit: int = 0
    threads: int = 2  # torch CPU threads (per process under torchrun)
    device: str = "auto"  # auto | cpu | cuda | cuda:N: the model and its batches
    out: Path | None = None  # model directory to write; None: a temp dir
    tracking_uri: str | None = None  # MLflow; None: no tracking
    register: bool = False  # register the model as `concord-encoder` (needs tracking_uri)
    alias: str | None = None  # alias to move to the new version (needs register)
    run_name: str | None = None
    progress: bool = True


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    loss: float  # mean training loss over the epoch
    val_r1_t2i: float
    val_r1_i2t: float
    seconds: float


@dataclass
class TrainResult:
    model: DualEncoder
    tokenizer: TextTokenizer
    model_dir: Path
    history: list[EpochStats] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)  # training loss of every global batch
    seconds: float = 0.0  # wall time of the training loop (setup and caching excluded)
    run_id: str | None = None
    version: int | None = None  # registered version, if registered
    rank: int = 0  # torch.distributed rank of this process (rank 0 saved and registered)
    world_size: int = 1  # processes that trained (torchrun)


def _lr_at(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def loss_fn(kind: Loss, image: Encoded, text: Encoded, scale: torch.Tensor) -> torch.Tensor:
    """The training loss: global InfoNCE, FILIP token-wise, or their mean."""
    if kind == "clip":
        return contrastive_loss(image.pooled, text.pooled, scale)
    if kind == "filip":
        return filip_loss(image, text, scale)
    return 0.5 * (
        contrastive_loss(image.pooled, text.pooled, scale) + filip_loss(image, text, scale)
    )


def resolve_data(cfg: TrainConfig) -> Path:
    """The dataset dir: `cfg.data`, or the retrieval set generated (once) for this seed and size."""
    if cfg.data is not None:
        return Path(cfg.data)
    from concord.config import load_settings

    cache = Path(cfg.data_cache) if cfg.data_cache else load_settings().home / "datasets"
    return ensure_dataset(
        "retrieval", cache / f"retrieval-{cfg.data_size}-seed{cfg.seed}", cfg.data_size, cfg.seed
    )


def train(cfg: TrainConfig, cache: TextStateCache | None = None) -> TrainResult:
    """Train one encoder end to end.

    Args:
        cfg: what to train.
        cache: frozen text-tower outputs to reuse across runs in one process (frozen towers only).
    Returns:
        The trained model (eval mode), its saved directory, per-epoch stats and registry ids.
        Under torchrun every rank returns rank 0's directory, stats and ids.
    """
    if cfg.register and not cfg.tracking_uri:
        raise ValueError("register needs a tracking URI")
    if cfg.alias and not cfg.register:
        raise ValueError("an alias needs register")
    with distributed.session(cfg.device, setting="--device (CONCORD_TRAIN_DEVICE)") as ctx:
        return _train(cfg, cache, ctx)


def _train(cfg: TrainConfig, cache: TextStateCache | None, ctx: distributed.Context) -> TrainResult:
    # -- setup
    device = ctx.device
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    arch = load_config(cfg.preset)
    if cfg.unfrozen_layers is not None:
        arch = arch.replace(text={"unfrozen_layers": cfg.unfrozen_layers})
    if cfg.embed_dim is not None:
        arch = arch.replace(embed_dim=cfg.embed_dim)
    model, tokenizer = build_encoder(arch, seed=cfg.seed)  # initialised on the CPU: same weights
    model.to(device)  # in place, before the optimiser and the text cache see the parameters
    root = resolve_data(cfg)
    train_set = load_retrieval(root, "train", arch.image.image_size, cfg.train_limit)
    val_set = load_retrieval(root, "val", arch.image.image_size, cfg.val_limit)
    train_pixels = train_set.pixels.to(device)  # 64x64 scenes: the set fits on any GPU
    frozen = arch.text.unfrozen_layers == 0
    cache = (cache if cache is not None else TextStateCache()) if frozen else None
    if cache is not None:
        texts = [c for caps in train_set.captions + val_set.captions for c in caps]
        cache.add(model, tokenizer, texts, progress=cfg.progress and ctx.is_main)
    backbone = {id(p) for p in model.text_tower.parameters()}
    groups = [
        {
            "params": [p for p in model.parameters() if p.requires_grad and id(p) not in backbone],
            "lr": cfg.lr,
        },
        {
            "params": [p for p in model.text_tower.parameters() if p.requires_grad],
            "lr": cfg.text_lr,
        },
    ]
    groups = [g for g in groups if g["params"]]
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    base_lrs = [g["lr"] for g in groups]
    steps_per_epoch = distributed.steps_per_epoch(len(train_set), cfg.batch_size, ctx.world_size)
    if steps_per_epoch * cfg.batch_size < len(train_set) and ctx.is_main:
        dropped = len(train_set) % cfg.batch_size
        console.print(f"[yellow]{ctx.world_size} ranks: the last batch ({dropped}) is dropped[/]")
    total = steps_per_epoch * cfg.epochs
    warmup = max(1, int(cfg.warmup_frac * total))
    params = {
        **{k: str(v) for k, v in asdict(cfg).items()},
        "data_dir": str(root),
        "train_images": len(train_set),
        "world_size": ctx.world_size,
        "config": arch.to_dict(),
    }
    tracker = TrainingRun(
        cfg.tracking_uri if ctx.is_main else None,  # one run, logged by rank 0
        cfg.run_name or f"{arch.name}-{cfg.loss}-u{arch.text.unfrozen_layers}",
        experiment=EXPERIMENT,
        model_name=MODEL_NAME,
    )
    tracker.start(params)
    if cfg.out or not ctx.is_main:
        model_dir = Path(cfg.out or ".")  # other ranks take rank 0's at the end
    else:
        model_dir = Path(tempfile.mkdtemp(prefix="concord-encoder-"))
    result = TrainResult(model, tokenizer, model_dir, rank=ctx.rank, world_size=ctx.world_size)
    gather_tokens = cfg.loss != "clip"  # the global loss needs only pooled embeddings

    def step_loss(m: DualEncoder, pixels: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """This rank's shard encoded, every rank's gathered: the loss of the global batch."""
        image = distributed.gather_encoded(m.encode_image(pixels), ctx, tokens=gather_tokens)
        text = encode_texts(m, tokenizer, texts, cache)
        text = distributed.gather_encoded(text, ctx, tokens=gather_tokens)
        return loss_fn(cfg.loss, image, text, m.logit_scale)

    forward = distributed.wrap(distributed.Step(model, step_loss), ctx)  # DDP with several ranks
    # -- loop
    step, t0 = 0, time.perf_counter()
    try:
        for epoch in range(cfg.epochs):
            te = time.perf_counter()
            model.train()
            order = rng.permutation(len(train_set))
            captions = sample_captions(train_set, rng)
            losses = []
            bar = tqdm(
                range(steps_per_epoch),
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                disable=not cfg.progress or not ctx.is_main,
            )
            for b in bar:
                idx = distributed.shard(order[b * cfg.batch_size : (b + 1) * cfg.batch_size], ctx)
                for g, base in zip(opt.param_groups, base_lrs, strict=True):
                    g["lr"] = base * _lr_at(step, total, warmup)
                loss = forward(train_pixels[idx], [captions[i] for i in idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                step += 1
                tracker.log({"train_step_loss": losses[-1]}, step)
            result.step_losses += losses
            # -- eval (rank 0; the others wait)
            r = validate(model, tokenizer, val_set, cfg.loss, cache) if ctx.is_main else (0.0, 0.0)
            stats = EpochStats(
                epoch + 1, float(np.mean(losses)), r[0], r[1], time.perf_counter() - te
            )
            result.history.append(stats)
            tracker.log(
                {
                    "train_loss": stats.loss,
                    "val_R1_t2i": stats.val_r1_t2i,
                    "val_R1_i2t": stats.val_r1_i2t,
                    "logit_scale": float(model.logit_scale.detach()),
                },
                epoch + 1,
            )
            distributed.barrier(ctx)
        result.seconds = time.perf_counter() - t0
        # -- checkpoint (rank 0; the others wait for its directory and registry ids)
        model.eval()
        if ctx.is_main:
            save_encoder(model, tokenizer, result.model_dir)
            tracker.log({"train_seconds": result.seconds}, cfg.epochs)
            result.run_id, result.version = tracker.finish(
                result.model_dir, cfg.register, cfg.alias
            )
        shared = (result.history, result.model_dir, result.run_id, result.version)
        result.history, result.model_dir, result.run_id, result.version = distributed.from_main(
            shared, ctx
        )
    except BaseException:
        tracker.fail()
        raise
    return result


@torch.no_grad()
def validate(
    model: DualEncoder,
    tokenizer: TextTokenizer,
    val_set: ImageTextSet,
    loss: Loss,
    cache: TextStateCache | None,
) -> tuple[float, float]:
    """Val R@1 (text->image, image->text) with the scorer the loss trains: FILIP or global."""
    was_training = model.training
    model.eval()
    texts, owner = val_set.flat_captions()
    # Embedded on the model's device; scored on the CPU (the metrics are numpy).
    image = embed_images(model, val_set.pixels).to("cpu")
    text = embed_texts(model, tokenizer, texts, cache=cache).to("cpu")
    scores = filip_scores(text, image) if loss == "filip" else global_scores(text, image)
    r = retrieval(scores, owner)
    model.train(was_training)
    return r.text_to_image.r1, r.image_to_text.r1


app = typer.Typer(add_completion=False, help=__doc__)
console = Console()


def _env(name: str) -> str:
    return f"CONCORD_TRAIN_{name}"


@app.command()
def main(
    preset: Annotated[
        str, typer.Option(envvar=_env("PRESET"), help="encoder preset or config JSON")
    ] = "tiny",
    data: Annotated[
        Path | None, typer.Option(envvar=_env("DATA"), help="retrieval dataset dir")
    ] = None,
    data_size: Annotated[
        str, typer.Option(envvar=_env("DATA_SIZE"), help="size generated without --data")
    ] = "small",
    seed: Annotated[int, typer.Option(envvar=_env("SEED"))] = 0,
    loss: Annotated[str, typer.Option(envvar=_env("LOSS"), help="clip | filip | both")] = "clip",
    unfrozen_layers: Annotated[
        int | None, typer.Option(envvar=_env("UNFROZEN_LAYERS"), help="MiniLM top layers to train")
    ] = None,
    epochs: Annotated[int, typer.Option(envvar=_env("EPOCHS"))] = 5,
    batch_size: Annotated[int, typer.Option(envvar=_env("BATCH_SIZE"))] = 128,
    lr: Annotated[float, typer.Option(envvar=_env("LR"))] = 1e-3,
    threads: Annotated[
        int, typer.Option(envvar=_env("THREADS"), help="torch CPU threads (per torchrun process)")
    ] = 2,
    out: Annotated[
        Path | None, typer.Option(envvar=_env("OUT"), help="model directory to write")
    ] = None,
    register: Annotated[
        bool, typer.Option(envvar=_env("REGISTER"), help=f"register as {MODEL_NAME}")
    ] = False,
    alias: Annotated[
        str | None, typer.Option(envvar=_env("ALIAS"), help="alias to move, e.g. production")
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(envvar=_env("TRACKING_URI"), help="MLflow URI (default: Concord settings)"),
    ] = None,
    on: Annotated[str, typer.Option(envvar=_env("ON"), help="local (in process)")] = "local",
    device: Annotated[
        str, typer.Option(envvar=_env("DEVICE"), help="auto | cpu | cuda | cuda:N")
    ] = "auto",
) -> None:
    """Train, evaluate on val each epoch, save, and (optionally) register and alias the encoder."""
    if on != "local":
        raise typer.BadParameter(
            "only 'local' runs from here; a Kubernetes Job runs this same command "
            "in its container (CONCORD_TRAIN_* env)",
            param_hint="--on",
        )
    if loss not in ("clip", "filip", "both"):
        raise typer.BadParameter(f"unknown loss {loss!r}", param_hint="--loss")
    if tracking_uri is None:
        from concord.config import load_settings

        tracking_uri = load_settings().tracking_uri
    cfg = TrainConfig(
        preset=preset,
        data=data,
        data_size=data_size,
        seed=seed,
        loss=loss,  # type: ignore[arg-type]
        unfrozen_layers=unfrozen_layers,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        threads=threads,
        out=out,
        tracking_uri=tracking_uri,
        register=register,
        alias=alias,
        device=device,
    )
    res = train(cfg)
    if res.rank != 0:  # rank 0 reports for the job
        return
    for h in res.history:
        console.print(
            f"epoch {h.epoch}: loss {h.loss:.4f}  val R@1 t2i {h.val_r1_t2i:.3f} "
            f"i2t {h.val_r1_i2t:.3f}  ({h.seconds:.0f}s)"
        )
    console.print(
        f"[green]saved[/] {res.model_dir}  run {res.run_id}  "
        + (f"registered {MODEL_NAME} v{res.version}" if res.version else "")
        + (f" @{alias}" if alias and res.version else "")
        + f"  train {res.seconds:.0f}s"
        + (f"  on {res.world_size} ranks" if res.world_size > 1 else "")
    )


if __name__ == "__main__":
    app()
