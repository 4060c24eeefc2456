"""The scorer pipeline: get the shared encoder (train it with the encoder recipe, or take a
registered / local one), optionally fine-tune a copy with hard negatives, score the
misalignment set, fit thresholds and the calibration on val, measure on test, write and
register the scorer package."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console

from concord.checkpoints import load_encoder
from concord.devices import describe, resolve_device
from concord.models.alignment import AlignmentScorer
from pipelines.encoder.data import ensure_dataset
from pipelines.encoder.embed import TextStateCache
from pipelines.evaluate.report import MetricRow
from pipelines.scorer import evaluate as ev
from pipelines.scorer.config import HARDNEG, TEMPLATE, ScorerConfig
from pipelines.scorer.data import load_pairs
from pipelines.scorer.encoders import EncoderRun, register_encoder, registry_of, shared_encoder
from pipelines.scorer.hardneg import fine_tune
from pipelines.scorer.measure import Measured, cross_encoder_rows, measure, template_rows
from pipelines.scorer.package import register_scorer_package, write_scorer_package
from pipelines.scorer.report_markdown import markdown_notes

__all__ = ["ScorerConfig", "ScorerResult", "run"]

console = Console()


@dataclass
class ScorerResult:
    rows: list[MetricRow]
    notes: str
    package_dir: Path
    package: dict[str, object]
    chosen: str  # label of the encoder the package uses
    version: int | None  # registered concord-scorer version
    reliability: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # label -> (y, p0, p1)
    phases: dict[str, float] = field(default_factory=dict)


def run(cfg: ScorerConfig) -> ScorerResult:
    """Everything: encoders, scoring, fitting, measuring, package (+ registry). No report files."""
    import torch

    device = resolve_device(cfg.device, setting="--device")  # fails before any work
    torch.set_num_threads(cfg.threads)
    if cfg.progress:
        console.print(f"scorer pipeline on {describe(device, 'fp32')}")
    phases: dict[str, float] = {}
    t = time.perf_counter()
    registry = registry_of(cfg)
    root = ensure_dataset(
        "misalignment",
        cfg.data_cache / f"misalignment-{cfg.misalignment_size}-seed{cfg.seed}",
        cfg.misalignment_size,
        cfg.seed,
    )
    phases["data"] = time.perf_counter() - t
    t = time.perf_counter()
    encoders = [shared_encoder(cfg, registry)]
    phases["encoder"] = time.perf_counter() - t
    image_size = load_encoder(encoders[0].directory)[0].image_size
    val = load_pairs(root, "val", image_size, cfg.val_limit)
    test = load_pairs(root, "test", image_size, cfg.test_limit)
    if cfg.hard_negatives:
        t = time.perf_counter()
        train_pairs = load_pairs(root, "train", image_size, cfg.hard_neg_limit)
        out = (cfg.work_dir / "encoder-hardneg").resolve()
        hn = fine_tune(
            encoders[0].directory, train_pairs, out, cfg.hard_neg, TextStateCache(), device
        )
        uri = register_encoder(registry, out, "scorer-hard-negatives") if registry else str(out)
        losses = " ".join(f"{x:.3f}" for x in hn.losses)
        encoders.append(EncoderRun(HARDNEG, out, uri, hn.seconds, f"loss by epoch {losses}"))
        phases["hard negatives"] = time.perf_counter() - t
    measured: list[Measured] = []
    prefix_rows: list[MetricRow] = []
    for enc in encoders:
        t = time.perf_counter()
        model, tokenizer = load_encoder(enc.directory)
        model.to(device)  # in place, before the scorer hooks into it
        scorer = AlignmentScorer(model, tokenizer, weight=cfg.weight, layers=cfg.layers)
        sv = ev.score_split(scorer, val, progress=cfg.progress)
        st = ev.score_split(scorer, test, progress=cfg.progress)
        measured.append(measure(enc.label, sv, st, cfg.weight))
        phases[f"score {enc.label}"] = time.perf_counter() - t
        if cfg.template_check and enc is encoders[0]:  # one encoder is enough to decide
            t = time.perf_counter()
            templated = AlignmentScorer(
                model, tokenizer, weight=cfg.weight, layers=cfg.layers, template=TEMPLATE
            )
            prefix_rows += template_rows(enc.label, sv, ev.score_split(templated, val), cfg.weight)
            phases[f"template {enc.label}"] = time.perf_counter() - t
    chosen = max(measured, key=lambda m: m.val_auc)
    enc = next(e for e in encoders if e.label == chosen.label)
    package_dir = (cfg.work_dir / "package").resolve()
    write_scorer_package(
        package_dir,
        enc.uri,
        chosen.calibration,
        weight=cfg.weight,
        layers=cfg.layers,
        threshold=chosen.threshold,
        penalty=chosen.penalty,
        f_threshold=chosen.f_threshold,
        data_seed=cfg.seed,
        extra={"encoder_label": chosen.label, "similarity_cut": chosen.sim_cut},
    )
    from pipelines.scorer.package import read_scorer_package

    package = read_scorer_package(package_dir)
    version = None
    if registry is not None and cfg.register_package:
        val_auc = {"val_calibrated_auc": chosen.val_auc}
        info = register_scorer_package(
            package_dir,
            registry,
            alias=cfg.alias,
            metrics=val_auc,
            params={
                "encoder": enc.uri,
                "threshold": chosen.threshold,
                "penalty": chosen.penalty,
                "f_threshold": chosen.f_threshold,
                "seed": cfg.seed,
            },
        )
        version = info.version
    rows = [r for m in measured for r in m.rows] + prefix_rows
    rows += cross_encoder_rows(measured)
    reliability = {
        m.label: (
            m.test.aligned.astype(float),
            ev.naive_probability(m.test_scores, cfg.weight),
            ev.probabilities(m.test_scores, m.calibration),
        )
        for m in measured
    }
    notes = markdown_notes(
        cfg, encoders, measured, chosen, rows, phases, len(val), len(test), version
    )
    return ScorerResult(
        rows, notes, package_dir, package, chosen.label, version, reliability, phases
    )
