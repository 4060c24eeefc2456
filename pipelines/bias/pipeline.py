"""The bias pipeline's steps: the encoder (given, or trained small), ShapeNews, the frozen
inputs computed once, one variant trained and scored, the inconsistency map, the package, and
its registration as `concord-bias`."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from concord.checkpoints import load_encoder
from concord.checkpoints.bias import PACKAGE_FILE, WEIGHTS_FILE, write_bias_package
from concord.models.bias import (
    BiasClassifier,
    BiasConfig,
    InconsistencyCalibration,
    fit_temperature,
)
from concord.models.dual_encoder import DualEncoder
from concord.models.preprocess import TextTokenizer
from concord.registry import Registry, is_registry_uri, resolve_model
from pipelines.bias.data import BiasSplit, ensure_bias_data, load_split
from pipelines.bias.evaluate import Scores, score
from pipelines.bias.train import Inputs, TrainSettings, precompute, predict_logits, train_classifier
from pipelines.data.sets.bias import SPEC as BIAS_SPEC
from pipelines.evaluate.classification import roc_auc

MODEL_NAME = "concord-bias"
DEFAULT_ENCODER = "models:/concord-encoder@production"
HEAD_MODULES = ("text_proj", "image_proj", "mlp", "head")


@dataclass(frozen=True)
class PipelineConfig:
    encoder: str | None = DEFAULT_ENCODER  # URI or directory; None: train a small one
    data_size: str = "default"  # ShapeNews preset: 3000 train / 300 val / 1000 gold test
    seed: int = 0  # data seed (variants take their own training seeds)
    work_dir: Path = Path(".cache/bias")
    tracking_uri: str | None = None
    max_length: int = 32
    threads: int = 1
    encoder_epochs: int = 15  # when no encoder is given (tiny-conv preset, retrieval "small")
    progress: bool = False


@dataclass(frozen=True)
class EncoderChoice:
    directory: Path
    uri: str  # what bias.json names: models:/concord-encoder/N (pinned) or the absolute directory
    note: str = ""


def registry_of(cfg: PipelineConfig) -> Registry | None:
    return Registry(cfg.tracking_uri) if cfg.tracking_uri else None


def choose_encoder(cfg: PipelineConfig, log: Callable[[str], None] = print) -> EncoderChoice:
    """The encoder the classifier is built on: the one given, else a small one trained now."""
    if cfg.encoder:
        registry = registry_of(cfg)

        def tracking() -> Registry:
            if registry is None:
                raise SystemExit(f"encoder {cfg.encoder!r} is a registry URI: pass --tracking-uri")
            return registry

        model_id, directory = resolve_model(cfg.encoder, tracking, kind="encoder")
        if is_registry_uri(cfg.encoder):
            return EncoderChoice(directory, f"models:/{model_id.name}/{model_id.version}")
        return EncoderChoice(directory.resolve(), str(directory.resolve()))
    from pipelines.encoder.data import ensure_dataset
    from pipelines.train_encoder import TrainConfig, train

    log(f"no encoder given: training tiny-conv for {cfg.encoder_epochs} epochs")
    root = ensure_dataset("retrieval", cfg.work_dir / f"retrieval-small-seed{cfg.seed}", "small", cfg.seed)
    out = (cfg.work_dir / f"encoder-seed{cfg.seed}").resolve()
    if not (out / "model.safetensors").is_file():
        res = train(
            TrainConfig(
                preset="tiny-conv", data=root, seed=cfg.seed, loss="both",
                epochs=cfg.encoder_epochs, batch_size=64, lr=2e-3, out=out,
                run_name="bias-encoder", progress=cfg.progress, threads=cfg.threads,
            )
        )
        h = res.history[-1]
        return EncoderChoice(out, str(out), f"trained here: val R@1 t2i {h.val_r1_t2i:.3f}")
    return EncoderChoice(out, str(out), "trained here earlier (cached)")


@dataclass
class Bench:
    """Everything the variants share: encoder, tokenizer, splits, frozen inputs."""

    encoder: DualEncoder
    encoder_choice: EncoderChoice
    tokenizer: TextTokenizer
    splits: dict[str, BiasSplit]
    frozen: dict[str, Inputs]  # text and image states precomputed (frozen towers)
    data_root: Path
    seconds: dict[str, float] = field(default_factory=dict)

    def inputs(self, split: str, frozen_text: bool) -> Inputs:
        f = self.frozen[split]
        return f if frozen_text else Inputs(f.input_ids, f.attention_mask, f.image_states, None)


def prepare(cfg: PipelineConfig, log: Callable[[str], None] = print) -> Bench:
    """Encoder, data and the frozen inputs (cached on disk under work_dir by content)."""
    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    choice = choose_encoder(cfg, log)
    encoder, tokenizer = load_encoder(choice.directory)
    tokenizer = TextTokenizer(tokenizer.hf_tokenizer, cfg.max_length)
    seconds = {"encoder": time.perf_counter() - start}
    name = f"data-v{BIAS_SPEC.version}-{cfg.data_size}-seed{cfg.seed}"
    root = ensure_bias_data(cfg.work_dir / name, cfg.data_size, cfg.seed)
    splits = {s: load_split(root, s, encoder.image_size) for s in ("train", "val", "test")}
    seconds["data"] = time.perf_counter() - start - seconds["encoder"]
    key = hashlib.sha256(
        f"{choice.directory.resolve()}|{(choice.directory / 'model.safetensors').stat().st_mtime}"
        f"|{name}|{cfg.max_length}".encode()
    ).hexdigest()[:12]
    cache = cfg.work_dir / f"frozen-{key}.pt"
    if cache.is_file():
        frozen = {s: Inputs(*v) for s, v in torch.load(cache, weights_only=True).items()}
    else:
        base = BiasClassifier.from_encoder(BiasConfig(text_tuning="frozen"), encoder)
        frozen = {s: precompute(base, sp, tokenizer, True) for s, sp in splits.items()}
        torch.save(
            {s: (f.input_ids, f.attention_mask, f.image_states, f.text_states) for s, f in frozen.items()},
            cache,
        )
    seconds["precompute"] = time.perf_counter() - start - seconds["encoder"] - seconds["data"]
    log(f"prepared in {time.perf_counter() - start:.0f}s: encoder {choice.uri}, data {root}")
    return Bench(encoder, choice, tokenizer, splits, frozen, root, seconds)


@dataclass
class VariantResult:
    config: BiasConfig
    seed: int
    labels: str  # "vote" | "gold": what it was trained on
    classifier: BiasClassifier
    temperature: float
    raw: Scores  # test, temperature 1
    calibrated: Scores  # test, fitted temperature
    trainable: int
    total: int
    steps: int
    seconds: float


def run_variant(
    bench: Bench,
    config: BiasConfig,
    seed: int,
    settings: TrainSettings,
    labels: str = "vote",
    log: Callable[[dict[str, float], int], None] | None = None,
    init_from: VariantResult | None = None,
) -> VariantResult:
    """Train one variant on the train split (vote or gold labels), keep its best val epoch, fit
    the temperature on val (votes: no gold outside the test split), score on the gold test.

    `init_from`: a trained variant of the same fusion and modality whose heads (projections,
    MLP, head) this one starts from: linear probing then fine-tuning (LP-FT, Kumar et al. 2022),
    so a tuned MiniLM starts where the frozen one ended instead of from random heads.
    """
    torch.manual_seed(seed)
    classifier = BiasClassifier.from_encoder(config, bench.encoder)
    if init_from is not None:
        heads = {
            k: v for k, v in init_from.classifier.state_dict().items()
            if k.split(".")[0] in HEAD_MODULES
        }
        classifier.load_state_dict(heads, strict=False)
    frozen_text = config.text_tuning == "frozen"
    train = bench.splits["train"]
    targets = train.labels if labels == "vote" else train.gold
    val = (bench.inputs("val", frozen_text), bench.splits["val"].labels)
    result = train_classifier(
        classifier, bench.inputs("train", frozen_text), targets,
        TrainSettings(**{**settings.__dict__, "seed": seed}), log=log, val=val,
    )
    temperature = fit_temperature(predict_logits(classifier, val[0]), val[1])
    logits = predict_logits(classifier, bench.inputs("test", frozen_text))
    trainable, total = classifier.parameter_counts()
    return VariantResult(
        config, seed, labels, classifier, temperature,
        score(logits, bench.splits["test"], 1.0), score(logits, bench.splits["test"], temperature),
        trainable, total, result.steps, result.seconds,
    )


@torch.no_grad()
def encoder_cosines(bench: Bench, split: str) -> torch.Tensor:
    """The encoder's pooled image-text cosine of every pair of a split."""
    sp, out = bench.splits[split], []
    tokens = bench.tokenizer(sp.texts)
    for k in range(0, len(sp), 256):
        image = bench.encoder.encode_image(sp.pixels[k : k + 256]).pooled
        text = bench.encoder.encode_text(
            tokens.input_ids[k : k + 256], tokens.attention_mask[k : k + 256]
        ).pooled
        out.append((image * text).sum(dim=-1))
    return torch.cat(out)


def fit_inconsistency(bench: Bench) -> tuple[InconsistencyCalibration, dict[str, float]]:
    """Fit the cosine -> P(inconsistent) map on the train split's annotated contradictions
    (records' `inconsistent`), and its test AUC per image cue (vs neutral items)."""
    train = bench.splits["train"]
    flags = torch.tensor([float(r["inconsistent"]) for r in train.records])
    calibration = InconsistencyCalibration.fit(encoder_cosines(bench, "train"), flags)
    test = bench.splits["test"]
    p = calibration.probability(encoder_cosines(bench, "test")).numpy()
    neutral = np.asarray([r["cue"] == "none" for r in test.records])
    kinds = np.asarray([r["image_cue"] or "" for r in test.records])
    aucs = {}
    for cue in ("all", "object", "count", "relation", "colour", "size"):
        chosen = (kinds != "") if cue == "all" else (kinds == cue)
        if chosen.any():
            y = np.r_[np.zeros(neutral.sum()), np.ones(chosen.sum())]
            aucs[cue] = roc_auc(y, np.r_[p[neutral], p[chosen]])
    return calibration, aucs


def write_package(
    bench: Bench,
    result: VariantResult,
    inconsistency: InconsistencyCalibration,
    directory: Path,
) -> Path:
    """bias.json + bias.pt for a trained variant (the encoder pinned as chosen)."""
    return write_bias_package(
        directory,
        result.classifier,
        encoder=bench.encoder_choice.uri,
        temperature=result.temperature,
        threshold=0.5,
        inconsistency=inconsistency,
        extra={
            "created_by": "pipelines.bias",
            "data": {"name": "bias", "version": BIAS_SPEC.version, "root": str(bench.data_root)},
            "seed": result.seed,
            "labels": result.labels,
            "metrics": {
                "test_accuracy": result.calibrated.accuracy,
                "test_macro_f1": result.calibrated.macro_f1,
                "test_ece": result.calibrated.ece,
            },
        },
    )


def register_package(
    directory: Path, tracking_uri: str, alias: str | None = "production", run_name: str = "bias"
) -> tuple[str | None, int | None]:
    """Log a package directory to MLflow and register it as `concord-bias` (moving `alias`)."""
    from pipelines.tracking import TrainingRun

    run = TrainingRun(
        tracking_uri, run_name, experiment=MODEL_NAME, model_name=MODEL_NAME,
        model_files=[PACKAGE_FILE, WEIGHTS_FILE],
    )
    run.start({"package": str(directory)})
    return run.finish(Path(directory), register=True, alias=alias)
