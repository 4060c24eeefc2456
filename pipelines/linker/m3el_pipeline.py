"""The M3EL pipeline: entities data -> frozen features (once) -> train the full model or the
ablation grid (variants x seeds x training fractions) -> full-KB ranking metrics; the package
written (and, with a tracking URI, tracked and registered as `concord-linker@production`)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from concord.models.linking import M3EL, VARIANTS, M3ELConfig
from concord.registry import Registry
from pipelines.linker.m3el_data import LinkingData, ensure_entities, load_features, training_subset
from pipelines.linker.m3el_package import (
    DEFAULT_ENCODER,
    EXPERIMENT,
    MODEL_NAME,
    pinned_encoder,
    train_small_encoder,
    write_package,
)
from pipelines.linker.m3el_train import TrainOutcome, TrainSettings, evaluate, train
from pipelines.tracking import TrainingRun


@dataclass(frozen=True)
class M3ELRunConfig:
    encoder: str | None = DEFAULT_ENCODER  # None: train a small tiny-conv encoder first
    data_size: str = "default"  # entities preset (400 entities, 2 train / 1 test mentions each)
    data: Path | None = None  # an entities dataset dir; None: built under work_dir
    seed: int = 0  # data seed (and the training seed of `train-m3el`)
    seeds: tuple[int, ...] = (0, 1, 2)  # training seeds of the report grid
    fractions: tuple[float, ...] = (1.0, 0.2)  # of the training mentions
    variants: tuple[str, ...] = VARIANTS
    hidden: int = 64  # M3EL-lite
    train: TrainSettings = field(default_factory=TrainSettings)
    work_dir: Path = Path(".cache/linker")
    package_dir: Path | None = None  # None: <work_dir>/m3el-package
    copy_encoder: bool = False  # copy the encoder into the package (self-contained)
    tracking_uri: str | None = None
    register: bool = True  # with a tracking URI: register concord-linker
    alias: str | None = "production"
    threads: int = 1
    encoder_epochs: int = 10  # when an encoder has to be trained


@dataclass(frozen=True)
class RunResult:
    variant: str
    seed: int
    fraction: float
    test: dict[str, float]
    best_step: int
    val_mrr: float
    seconds: float


@dataclass
class Prepared:
    data: LinkingData
    encoder_record: str  # what the package names
    encoder_dir: Path
    registry: Registry | None
    seconds: dict[str, float] = field(default_factory=dict)


def prepare(cfg: M3ELRunConfig, log: Callable[[str], None] = print) -> Prepared:
    """Resolve (or train) the encoder, make the data, featurise it once (cached)."""
    torch.set_num_threads(cfg.threads)
    registry = Registry(cfg.tracking_uri) if cfg.tracking_uri else None
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    uri = cfg.encoder
    if uri is None:
        log("no encoder given: training a small tiny-conv encoder")
        uri = train_small_encoder(
            cfg.work_dir, cfg.seed, cfg.threads, cfg.tracking_uri, cfg.encoder_epochs
        )
        seconds["encoder"] = time.perf_counter() - start
    record, directory = pinned_encoder(uri, registry)
    start = time.perf_counter()
    data_dir = cfg.data or ensure_entities(
        cfg.work_dir / f"entities-{cfg.data_size}-seed{cfg.seed}", cfg.data_size, cfg.seed
    )
    seconds["data"] = time.perf_counter() - start
    start = time.perf_counter()
    data = load_features(data_dir, str(directory), cfg.work_dir, log=log)
    seconds["features"] = time.perf_counter() - start
    return Prepared(data, record, directory, registry, seconds)


def run_one(
    cfg: M3ELRunConfig,
    data: LinkingData,
    variant: str,
    seed: int,
    fraction: float,
    on_eval: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[TrainOutcome, RunResult]:
    """Train one variant on `fraction` of the training mentions and test it on the full KB."""
    config = M3ELConfig.variant(variant, hidden=cfg.hidden)
    train_set = training_subset(data.splits["train"], fraction, seed)
    outcome = train(
        config,
        train_set,
        data.kb,
        replace(cfg.train, seed=seed),
        data.splits.get("val"),
        on_eval=on_eval,
    )
    test = evaluate(outcome.model, data.splits["test"], data.kb)
    result = RunResult(
        variant, seed, fraction, test, outcome.best_step, outcome.val_mrr, outcome.seconds
    )
    return outcome, result


def run_grid(
    cfg: M3ELRunConfig, data: LinkingData, log: Callable[[str], None] = print
) -> tuple[list[RunResult], M3EL | None]:
    """Every (fraction, variant, seed); returns the results and the full model of the first
    seed at the first fraction (the one worth packaging)."""
    results, keep = [], None
    for fraction in cfg.fractions:
        for variant in cfg.variants:
            for seed in cfg.seeds:
                outcome, result = run_one(cfg, data, variant, seed, fraction)
                results.append(result)
                if keep is None and variant == "full":
                    keep = outcome.model
                log(
                    f"{variant:>13} seed {seed} train {fraction:.0%}: Hits@1 "
                    f"{result.test['Hits@1']:.3f} MRR {result.test['MRR']:.3f} "
                    f"(best step {result.best_step}, {result.seconds:.0f}s)"
                )
    return results, keep


def package(
    cfg: M3ELRunConfig,
    prepared: Prepared,
    model: M3EL,
    metrics: dict[str, float],
    tracking: TrainingRun | None = None,
) -> tuple[Path, int | None]:
    """Write the package and (with tracking) log and register it. Returns (dir, version)."""
    directory = cfg.package_dir or cfg.work_dir / "m3el-package"
    write_package(
        directory,
        model,
        model.config,
        prepared.encoder_record,
        copy_encoder=prepared.encoder_dir if cfg.copy_encoder else None,
        metrics=metrics,
        data_seed=cfg.seed,
    )
    version = None
    if tracking is not None:
        _, version = tracking.finish(directory, register=cfg.register, alias=cfg.alias)
    return directory, version


def metric_key(name: str) -> str:
    """An MLflow-safe metric name: "val Hits@1" -> "val_Hits_at_1"."""
    return re.sub(r"[^A-Za-z0-9_.\-/]+", "_", name.replace("@", "_at_")).strip("_")


def train_m3el(
    cfg: M3ELRunConfig, variant: str = "full", log: Callable[[str], None] = print
) -> tuple[Path, int | None, dict[str, float]]:
    """`concord linker train-m3el`: train one model (tracked), test it, write (and register)
    the package. Returns (package dir, registered version or None, test metrics)."""
    prepared = prepare(cfg, log)
    tracking = TrainingRun(
        cfg.tracking_uri,
        f"m3el-{variant}",
        experiment=EXPERIMENT,
        model_name=MODEL_NAME,
    )
    tracking.start(
        {
            "variant": variant,
            "encoder": prepared.encoder_record,
            "hidden": cfg.hidden,
            "data_size": cfg.data_size,
            "data_seed": cfg.seed,
            **{f"train.{k}": v for k, v in vars(cfg.train).items()},
        }
    )
    try:

        def on_eval(step: int, record: dict[str, float]) -> None:
            tracking.log({metric_key(k): v for k, v in record.items()}, step)
            log(f"step {step}: val Hits@1 {record['val Hits@1']:.3f} MRR {record['val MRR']:.3f}")

        outcome, result = run_one(cfg, prepared.data, variant, cfg.seed, 1.0, on_eval)
        test = {metric_key(f"test {k}"): v for k, v in result.test.items() if v == v}
        tracking.log(test, outcome.best_step)
        directory, version = package(cfg, prepared, outcome.model, result.test, tracking)
    except BaseException:
        tracking.fail()
        raise
    return directory, version, result.test
