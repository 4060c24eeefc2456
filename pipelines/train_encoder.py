"""Train the Concord dual encoder on Concord Scenes: setup, loop, eval, checkpoint, track in MLflow,
register `concord-encoder`. `python -m pipelines.train_encoder --preset tiny --loss clip ...`;
every option also reads a `CONCORD_TRAIN_*` variable, so a Kubernetes Job can set it by env.
Under `torchrun --nproc-per-node N -m pipelines.train_encoder ...` it trains data-parallel
(pipelines.encoder.distributed): --batch-size is the global batch, split across the N ranks, the
loss is computed on the gathered global batch, and rank 0 evaluates, logs, saves and registers."""

from __future__ import annotations

import json
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
from concord.models.losses import (
    contrastive_loss,
    filip_loss,
    foil_loss,
    grounding_loss,
    separation_loss,
)
from concord.models.preprocess import TextTokenizer
from pipelines.encoder import distributed
from pipelines.encoder.data import ImageTextSet, ensure_dataset, load_retrieval
from pipelines.encoder.embed import (
    TextStateCache,
    embed_images,
    embed_texts,
    encode_foils,
    encode_texts,
)
from pipelines.encoder.evaluate import filip_scores, global_scores, retrieval
from pipelines.encoder.scenes import SceneTrainingSet, build_training_set
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
    # The recipe's hard negatives (0 / False / None: the plain caption-only training):
    hard_negatives: int = 0  # foils per caption per step (NegCLIP); > 0 drafts captions from scenes
    foil_weight: float = 1.0  # weight of the foil term beside the contrastive loss
    twins: bool = False  # add a rendered twin per train scene (swapped binding / mirrored)
    shape_twins: bool = False  # and one with an object's shape changed (scenes.shape_twin)
    mirror_twins: bool = True  # a twin may be the scene mirrored (False: binding swaps only)
    binding: Path | None = None  # a `binding` dataset whose train pairs join the training set
    binding_size: str = ""  # else the binding preset generated into data_cache ("": none)
    caption_rounds: int = 2  # scene-drafted captions: rounds of the 5 styles per image
    reword: float = 0.0  # share of drafted captions reworded (training-only synonyms, frames)
    grounding: float = 0.0  # weight of the phrase-grounding term (object tokens name their phrase)
    relations: float = 0.0  # weight of the relation term (image picks "X above Y" over its foils)
    relation_margin: float | None = None  # and the probe's text at cosine <= this from its foils
    fronted_probes: bool = False  # probes also worded "Above the Y there is a X"
    caption_relations: int = 0  # relational captions per image joining its probes (caption_probes)
    caption_swaps: bool = False  # their foils: a word flipped and the objects swapped
    val_limit: int = 0
    text_cache: Path | None = None  # frozen MiniLM states persist here across runs; None: in memory
    threads: int = 2  # torch CPU threads (per process under torchrun)
    device: str = "auto"  # auto | cpu | cuda | cuda:N: the model and its batches
    out: Path | None = None  # model directory to write; None: a temp dir
    tracking_uri: str | None = None  # MLflow; None: no tracking
    register: bool = False  # register the model as `concord-encoder` (needs tracking_uri)
    alias: str | None = None  # alias to move to the new version (needs register)
    run_name: str | None = None
    progress: bool = True


# The CNN recipe before phrase grounding (reports/encoder_cnn.md): a plain-CNN image tower
# (full-resolution 3x3 convs, max-pooled tokens; preset `tiny-cnn`), MiniLM's top layer trained,
# global and FILIP losses, two NegCLIP foils per caption, a rendered twin per scene and the
# binding train pairs in the same batches.
CNN_RECIPE: dict[str, object] = {
    "preset": "tiny-cnn",
    "loss": "both",
    "unfrozen_layers": 1,
    "hard_negatives": 2,
    "twins": True,
    "binding_size": "small",
    "caption_rounds": 1,
    "epochs": 30,
    "batch_size": 64,
    "lr": 2e-3,
    "text_lr": 3e-4,
}
# The shared concord-encoder (issue 15): the CNN recipe plus phrase grounding, the image token
# under each object picking that object's colour-shape phrase among all of them
# (losses.grounding_loss). The caption losses are met as soon as colours and counts tell a batch
# apart; grounding asks every token for the shape and colour of its object, and lifts R@1 t2i
# from 0.59 to 0.87, shape from 0.17 to 0.61 and binding from 0.53 to 0.72 (reports/encoder.md).
CONCORD_RECIPE: dict[str, object] = {**CNN_RECIPE, "grounding": 1.0}
# The recipe until the CNN tower replaced it: the same training on `tiny-conv` (a conv stem and
# four ViT blocks, mean-pooled), reports/encoder_vit.md. The CNN retrieves better (R@1 t2i 0.59
# vs 0.45) because mean pooling over a ViT's tokens hides the small objects (README).
VIT_RECIPE: dict[str, object] = {**CNN_RECIPE, "preset": "tiny-conv"}
# Named training recipes: what `python -m pipelines.train_encoder --recipe NAME` sets unless an
# option overrides it. TrainConfig's own defaults are the small caption-only run tests use.
RECIPES: dict[str, dict[str, object]] = {
    "concord": CONCORD_RECIPE,
    "concord-cnn": CNN_RECIPE,
    "concord-vit": VIT_RECIPE,
    # The ViT recipe with half of its captions reworded (training-only synonyms, postposed
    # colours, frames; pipelines/encoder/paraphrase.py), measured in reports/encoder_reword.md:
    # not adopted (one seed; within noise of the recipe but on one unseen frame, see README).
    "concord-reword": {**VIT_RECIPE, "reword": 0.5},
    # The CNN recipe with a second twin per scene that changes one object's shape
    # (scenes.shape_twin): the one hard image negative only shape tells apart. Measured before
    # grounding, which asks for shape directly (README, "Where the recipe falls short").
    "concord-shape": {**CNN_RECIPE, "shape_twins": True},
    # The shared recipe on `tiny-cnn-ctx`: two transformer blocks over the CNN's 8x8 token map,
    # so that a token can hold where its object is relative to the others before max pooling
    # (the plain CNN's pooled vector has no way to say which object is left: relations at
    # chance). One seed (README, "Relations"): FILIP and binding gain, relations stay at chance
    # (reports/scorer_ctx.md): the text tower hardly tells "above" from "below". Not adopted.
    "concord-ctx": {**CONCORD_RECIPE, "preset": "tiny-cnn-ctx"},
    # concord-ctx with a relation term in every batch (scenes.relation_probes: the pooled image
    # picks "X above Y" over "X below Y" and "Y above X" for every pair the scene names) and
    # MiniLM's top two layers trained, so that the text side can tell those apart at all. Seed 0
    # (reports/scorer_rel.md): relation foils 0.504 -> 0.560, binding 0.87-0.90; left/right stay
    # at chance. Not adopted yet (one seed).
    "concord-rel": {
        **CONCORD_RECIPE,
        "preset": "tiny-cnn-ctx",
        "relations": 1.0,
        "unfrozen_layers": 2,
    },
    # concord-rel on `tiny-cnn-coord`: CoordConv's x and y channels join the pixels, because
    # concord-rel learnt "bigger" (0.91 on held-out probes) and partly "above" but left/right sat
    # at chance even on its training images: the tower had no strong sense of where. Seed 0, 20
    # epochs (reports/scorer_coord.md): left/right still at chance; the texts collapse (README).
    "concord-coord": {
        **CONCORD_RECIPE,
        "preset": "tiny-cnn-coord",
        "relations": 1.0,
        "unfrozen_layers": 2,
    },
    # concord-coord with the probes' texts held apart from their foils (losses.separation_loss,
    # cosine <= 0.8): under concord-coord "left of" and "right of" ended at text cosine 0.9995,
    # which leaves the image side nothing to learn from (README, "Relations"). Seed 0: above/below
    # probes 0.67, left/right still 0.53 (texts at 0.98); with --no-mirror-twins left/right 0.68.
    "concord-sep": {
        **CONCORD_RECIPE,
        "preset": "tiny-cnn-coord",
        "relations": 1.0,
        "relation_margin": 0.8,
        "unfrozen_layers": 2,
    },
    # The dataset's captions only, no hard negatives: the baseline the reports compare with.
    "plain": {"preset": "tiny", "loss": "clip", "epochs": 5, "batch_size": 128, "lr": 1e-3},
}


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
    train_images: int = 0  # images one epoch shows (scenes, twins and binding pairs)

    @property
    def images_per_second(self) -> float:
        """Training throughput over the whole run (all ranks; setup and caching excluded)."""
        epochs = self.history[-1].epoch if self.history else 0
        return self.train_images * epochs / self.seconds if self.seconds else 0.0


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


def foil_term(
    kind: Loss,
    image: Encoded,
    text: Encoded,
    foils: Encoded,
    mask: torch.Tensor,
    scale: torch.Tensor,
) -> torch.Tensor:
    """The hard-negative term scored the way the loss scores: pooled, FILIP, or their mean."""
    if kind == "clip":
        return foil_loss(image, text, foils, mask, scale)
    if kind == "filip":
        return foil_loss(image, text, foils, mask, scale, filip=True)
    return 0.5 * (
        foil_loss(image, text, foils, mask, scale)
        + foil_loss(image, text, foils, mask, scale, filip=True)
    )


def training_set(cfg: TrainConfig, root: Path, image_size: int) -> SceneTrainingSet:
    """The dataset's train captions as they are, or (the recipe) captions drafted from the scenes
    with foils, rendered twins and the binding train pairs."""
    binding = resolve_binding(cfg)
    # Any of these draws the captions from the scenes, which also tell grounding the objects.
    drafted = bool(cfg.hard_negatives or cfg.twins or cfg.shape_twins or binding or cfg.reword)
    for term, weight in (("grounding", cfg.grounding), ("relations", cfg.relations)):
        if weight and not drafted:
            raise ValueError(
                f"{term} needs the scenes behind the images: use it with hard negatives, twins, "
                "binding pairs or rewording (captions are then drafted from the scenes)"
            )
    if not drafted:
        data = load_retrieval(root, "train", image_size, cfg.train_limit)
        return SceneTrainingSet.from_captions(data)
    return build_training_set(
        root,
        binding,
        image_size,
        cfg.seed,
        cfg.caption_rounds,
        cfg.twins,
        cfg.train_limit,
        cfg.reword,
        cfg.shape_twins,
        bool(cfg.relations),
        cfg.fronted_probes,
        cfg.mirror_twins,
        cfg.caption_relations,
        cfg.caption_swaps,
    )


def dataset_dirs(cfg: TrainConfig) -> tuple[Path, Path | None]:
    """Where the run's retrieval and binding datasets are (or will be generated): `cfg.data`
    and `cfg.binding`, else the presets' directories in the data cache. Nothing is built."""
    data = (
        Path(cfg.data)
        if cfg.data
        else _cache_dir(cfg) / f"retrieval-{cfg.data_size}-seed{cfg.seed}"
    )
    if cfg.binding is not None or not cfg.binding_size:
        return data, Path(cfg.binding) if cfg.binding else None
    return data, _cache_dir(cfg) / f"binding-{cfg.binding_size}-seed{cfg.seed}"


def resolve_binding(cfg: TrainConfig) -> Path | None:
    """The binding dataset whose train pairs join: `cfg.binding`, the preset `cfg.binding_size`
    generated (once) into the data cache, or None."""
    binding = dataset_dirs(cfg)[1]
    if binding is None or cfg.binding is not None:
        return binding
    return ensure_dataset("binding", binding, cfg.binding_size, cfg.seed)


def _cache_dir(cfg: TrainConfig) -> Path:
    if cfg.data_cache:
        return Path(cfg.data_cache)
    from concord.config import load_settings

    return load_settings().home / "datasets"


def resolve_data(cfg: TrainConfig) -> Path:
    """The dataset dir: `cfg.data`, or the retrieval set generated (once) for this seed and size."""
    data = dataset_dirs(cfg)[0]
    if cfg.data is not None:
        return data
    return ensure_dataset("retrieval", data, cfg.data_size, cfg.seed)


def train(cfg: TrainConfig, cache: TextStateCache | None = None) -> TrainResult:
    """Train one encoder end to end.

    Args:
        cfg: what to train.
        cache: frozen text-tower outputs to reuse across runs in one process (frozen towers only).
    Returns:
        The trained model (eval mode), its saved directory, per-epoch stats and registry ids.
        Under torchrun every rank returns rank 0's directory, stats and ids.
    """
    check_config(cfg)
    with distributed.session(cfg.device, setting="--device (CONCORD_TRAIN_DEVICE)") as ctx:
        return _train(cfg, cache, ctx)


def check_config(cfg: TrainConfig) -> None:
    """Refuse settings that cannot act together (ValueError naming the setting)."""
    if cfg.register and not cfg.tracking_uri:
        raise ValueError("register needs a tracking URI")
    if cfg.alias and not cfg.register:
        raise ValueError("an alias needs register")
    for name, used in (
        ("relation_margin", cfg.relation_margin is not None),  # a margin of 0 is a margin
        ("fronted_probes", cfg.fronted_probes),
        ("caption_relations", cfg.caption_relations > 0),
        ("caption_swaps", cfg.caption_swaps),
    ):
        if used and not cfg.relations:
            raise ValueError(f"{name} acts within the relation term: set relations > 0")
    if cfg.caption_swaps and not cfg.caption_relations:
        raise ValueError("caption_swaps sets the caption probes' foils: set caption_relations > 0")


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
    train_set = training_set(cfg, root, arch.image.image_size)
    val_set = load_retrieval(root, "val", arch.image.image_size, cfg.val_limit)
    train_pixels = train_set.pixels.to(device)  # 64x64 scenes: the set fits on any GPU
    # MiniLM's frozen layers run once per text; a step runs only the trainable top layers.
    cache = cache if cache is not None else TextStateCache(directory=cfg.text_cache)
    objects = train_set.objects if cfg.grounding else None
    phrases = list(objects.phrases) if objects is not None else []
    texts = train_set.texts() + val_set.flat_captions()[0] + phrases
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
        "text_states_loaded": cache.loaded,  # from cfg.text_cache: not computed by this run
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
    result.train_images = len(train_set)
    gather_tokens = cfg.loss != "clip"  # the global loss needs only pooled embeddings
    grid = arch.image.image_size // arch.image.patch_size  # the token map's side

    def step_loss(
        m: DualEncoder,
        pixels: torch.Tensor,
        texts: list[str],
        foils: list[tuple[str, ...]],
        rows: np.ndarray,
        probes: list[str],
        probe_foils: list[tuple[str, ...]],
    ) -> torch.Tensor:
        """This rank's shard encoded, every rank's gathered: the loss of the global batch, plus
        this shard's foil term (an image against its own caption's foils needs no gathering),
        weighted by its share of the global batch's images that have foils, and its grounding
        term (the train-set `rows`' objects), weighted by its share of the batch's objects, and
        its relation term (each image's relation probe against the probe's foils), weighted like
        the foil term."""
        image_local = m.encode_image(pixels)
        text_local = encode_texts(m, tokenizer, texts, cache)
        image = distributed.gather_encoded(image_local, ctx, tokens=gather_tokens)
        text = distributed.gather_encoded(text_local, ctx, tokens=gather_tokens)
        loss = loss_fn(cfg.loss, image, text, m.logit_scale)
        if cfg.hard_negatives:
            enc, mask = encode_foils(m, tokenizer, foils, cfg.hard_negatives, cache)
            term = foil_term(cfg.loss, image_local, text_local, enc, mask, m.logit_scale)
            share = distributed.local_share(mask.any(dim=1).sum(), ctx)
            loss = loss + cfg.foil_weight * share * term
        if objects is not None:
            cells, labels = objects.cells(rows, grid)
            cells, labels = cells.to(pixels.device), labels.to(pixels.device)
            named = encode_texts(m, tokenizer, phrases, cache).pooled
            term = grounding_loss(image_local, cells, labels, named, m.logit_scale)
            share = distributed.local_share((cells >= 0).sum(), ctx)
            loss = loss + cfg.grounding * share * term
        if cfg.relations:
            stated = encode_texts(m, tokenizer, probes, cache)
            enc, mask = encode_foils(m, tokenizer, probe_foils, 2, cache)
            term = foil_term(cfg.loss, image_local, stated, enc, mask, m.logit_scale)
            if cfg.relation_margin is not None:
                term = term + separation_loss(stated.pooled, enc.pooled, mask, cfg.relation_margin)
            share = distributed.local_share(mask.any(dim=1).sum(), ctx)
            loss = loss + cfg.relations * share * term
        return loss

    forward = distributed.wrap(distributed.Step(model, step_loss), ctx)  # DDP with several ranks
    # -- loop
    step, t0 = 0, time.perf_counter()
    probe_rng = np.random.default_rng([cfg.seed, 16])  # its own stream: `rng`'s draws unchanged
    try:
        for epoch in range(cfg.epochs):
            te = time.perf_counter()
            model.train()
            order = train_set.order(rng)
            captions, foils = train_set.draw(rng, cfg.hard_negatives)
            probes, probe_foils = train_set.draw_relations(probe_rng, captions)
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
                loss = forward(
                    train_pixels[idx],
                    [captions[i] for i in idx],
                    [foils[i] for i in idx],
                    idx,
                    [probes[i] for i in idx],
                    [probe_foils[i] for i in idx],
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(distributed.mean_over_ranks(loss, ctx))  # as one process logs
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
            write_training_record(result, cfg)
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


TRAINING_RECORD = "training.json"  # beside the weights: what trained them and how it went


def write_training_record(result: TrainResult, cfg: TrainConfig) -> Path:
    """Write the settings, per-epoch stats and wall time next to the saved model, so a report
    can reuse a finished run (and say how it trained) instead of training it again."""
    record = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "history": [asdict(h) for h in result.history],
        "seconds": result.seconds,
        "train_images": result.train_images,
        "images_per_second": result.images_per_second,
        "world_size": result.world_size,
    }
    path = result.model_dir / TRAINING_RECORD
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


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
    recipe: Annotated[
        str,
        typer.Option(
            envvar=_env("RECIPE"),
            help="concord (the shared encoder: hard negatives, twins, binding pairs) | plain; "
            "the options below override its settings",
        ),
    ] = "concord",
    preset: Annotated[
        str | None, typer.Option(envvar=_env("PRESET"), help="encoder preset or config JSON")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(envvar=_env("DATA"), help="retrieval dataset dir")
    ] = None,
    data_size: Annotated[
        str, typer.Option(envvar=_env("DATA_SIZE"), help="size generated without --data")
    ] = "small",
    data_cache: Annotated[
        Path | None,
        typer.Option(
            envvar=_env("DATA_CACHE"),
            help="where generated datasets go (default: Concord's home/datasets)",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(envvar=_env("SEED"))] = 0,
    loss: Annotated[
        str | None, typer.Option(envvar=_env("LOSS"), help="clip | filip | both")
    ] = None,
    unfrozen_layers: Annotated[
        int | None, typer.Option(envvar=_env("UNFROZEN_LAYERS"), help="MiniLM top layers to train")
    ] = None,
    epochs: Annotated[int | None, typer.Option(envvar=_env("EPOCHS"))] = None,
    batch_size: Annotated[int | None, typer.Option(envvar=_env("BATCH_SIZE"))] = None,
    lr: Annotated[float | None, typer.Option(envvar=_env("LR"))] = None,
    hard_negatives: Annotated[
        int | None,
        typer.Option(
            envvar=_env("HARD_NEGATIVES"),
            help="foils per caption per step (captions drafted from the scenes; 0: none)",
        ),
    ] = None,
    twins: Annotated[
        bool | None,
        typer.Option(envvar=_env("TWINS"), help="a rendered twin per scene in the same batch"),
    ] = None,
    shape_twins: Annotated[
        bool | None,
        typer.Option(
            envvar=_env("SHAPE_TWINS"),
            help="also a twin per scene with one object's shape changed, in the same batch",
        ),
    ] = None,
    mirror_twins: Annotated[
        bool | None,
        typer.Option(
            envvar=_env("MIRROR_TWINS"),
            help="a twin may be the scene mirrored left to right (--no-mirror-twins: binding "
            "swaps only)",
        ),
    ] = None,
    binding: Annotated[
        Path | None,
        typer.Option(envvar=_env("BINDING"), help="a binding dataset whose train pairs join"),
    ] = None,
    binding_size: Annotated[
        str | None,
        typer.Option(
            envvar=_env("BINDING_SIZE"),
            help="binding preset generated without --binding ('' for none)",
        ),
    ] = None,
    grounding: Annotated[
        float | None,
        typer.Option(
            envvar=_env("GROUNDING"),
            min=0.0,
            help="weight of the phrase-grounding term (0: none; needs scene-drafted captions)",
        ),
    ] = None,
    relations: Annotated[
        float | None,
        typer.Option(
            envvar=_env("RELATIONS"),
            min=0.0,
            help="weight of the relation term: the image picks 'X above Y' over 'X below Y' and "
            "'Y above X' (0: none; needs scene-drafted captions)",
        ),
    ] = None,
    relation_margin: Annotated[
        float | None,
        typer.Option(
            envvar=_env("RELATION_MARGIN"),
            min=-1.0,
            max=1.0,
            help="the relation term also pushes a probe's text to at most this cosine from its "
            "foils (default: the recipe's; off in most)",
        ),
    ] = None,
    fronted_probes: Annotated[
        bool | None,
        typer.Option(
            envvar=_env("FRONTED_PROBES"),
            help="relation probes also in the fronted frame ('Above the Y there is a X')",
        ),
    ] = None,
    caption_relations: Annotated[
        int | None,
        typer.Option(
            envvar=_env("CAPTION_RELATIONS"),
            min=0,
            help="relational captions per image (the caption grammar's wording, relation words "
            "flipped as foils) joining its relation probes (0: none)",
        ),
    ] = None,
    caption_swaps: Annotated[
        bool | None,
        typer.Option(
            envvar=_env("CAPTION_SWAPS"),
            help="the relational captions' foils: one clause's relation word flipped and the "
            "same clause with its two objects swapped",
        ),
    ] = None,
    reword: Annotated[
        float | None,
        typer.Option(
            envvar=_env("REWORD"),
            min=0.0,
            max=1.0,
            help="share of drafted captions reworded with training-only synonyms and frames",
        ),
    ] = None,
    text_cache: Annotated[
        str | None,
        typer.Option(
            envvar=_env("TEXT_CACHE"),
            help="directory where the frozen MiniLM layers' states per text persist, so the next "
            "run skips them (default: Concord's home/text-states; 'none': keep them in memory)",
        ),
    ] = None,
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
    if recipe not in RECIPES:
        raise typer.BadParameter(f"one of {', '.join(RECIPES)}", param_hint="--recipe")
    given = {
        "preset": preset,
        "loss": loss,
        "unfrozen_layers": unfrozen_layers,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "hard_negatives": hard_negatives,
        "twins": twins,
        "shape_twins": shape_twins,
        "mirror_twins": mirror_twins,
        "binding_size": binding_size,
        "reword": reword,
        "grounding": grounding,
        "relations": relations,
        "relation_margin": relation_margin,
        "fronted_probes": fronted_probes,
        "caption_relations": caption_relations,
        "caption_swaps": caption_swaps,
    }
    settings = {**RECIPES[recipe], **{k: v for k, v in given.items() if v is not None}}
    if settings.get("loss", "clip") not in ("clip", "filip", "both"):
        raise typer.BadParameter(f"unknown loss {settings['loss']!r}", param_hint="--loss")
    if tracking_uri is None or text_cache is None:
        from concord.config import load_settings

        defaults = load_settings()
        tracking_uri = tracking_uri if tracking_uri is not None else defaults.tracking_uri
        text_cache = text_cache if text_cache is not None else str(defaults.home / "text-states")
    cfg = TrainConfig(
        data=data,
        data_size=data_size,
        data_cache=data_cache,
        seed=seed,
        binding=binding,
        text_cache=None if text_cache.lower() == "none" else Path(text_cache),
        threads=threads,
        out=out,
        tracking_uri=tracking_uri,
        register=register,
        alias=alias,
        device=device,
        **settings,  # type: ignore[arg-type]
    )
    try:
        check_config(cfg)  # a usage error, not a traceback
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
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
