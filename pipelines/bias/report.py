"""`concord bias-model report` / `python -m pipelines.bias.report`: every row of reports/bias.md
from one command: modality (3 seeds), fusion, tuning (frozen / LoRA / full), cue span F1,
calibration, the text-reliance probe, and what the majority vote costs; the main variant is
written as the package (and registered as `concord-bias@production` on request)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from concord.models.bias import BiasConfig, BiasDetector, biased_probability
from pipelines.bias.evaluate import ProbeScores, SpanScores, probe_image_cued, span_f1
from pipelines.bias.pipeline import (
    Bench,
    PipelineConfig,
    VariantResult,
    fit_inconsistency,
    prepare,
    register_package,
    run_variant,
    write_package,
)
from pipelines.bias.train import TrainSettings, predict_logits
from pipelines.evaluate.report import MetricRow, ReportFiles, write_report

NAME = "bias"
MAIN = BiasConfig(fusion="concat", modality="both", text_tuning="lora")


@dataclass(frozen=True)
class ReportConfig:
    encoder: str | None = None  # None: train a small encoder first (a fresh clone)
    out_dir: Path = Path("reports")
    seeds: int = 3
    data_seed: int = 0
    data_size: str = "default"
    tuned_steps: int = 60  # LoRA fine-tune steps (batch 32), after the heads' linear probe
    full_steps: int = 40  # full fine-tune steps (each ~3x a LoRA step on CPU: AdamW over MiniLM)
    tracking_uri: str | None = None
    register: bool = False
    work_dir: Path = Path(".cache/bias")
    threads: int = 1


def label(config: BiasConfig, labels: str = "vote") -> str:
    """A variant's method name in the report, e.g. `both-concat-lora`, `text-lora`."""
    parts = [config.modality]
    if config.modality == "both":
        parts.append(config.fusion)
    parts.append(config.text_tuning if config.modality != "image" else "frozen")
    return "-".join(parts) + ("-gold" if labels == "gold" else "")


def build_report(cfg: ReportConfig, log: Callable[[str], None] = print) -> ReportFiles:
    start = time.perf_counter()
    bench = prepare(
        PipelineConfig(encoder=cfg.encoder, seed=cfg.data_seed, data_size=cfg.data_size,
                       work_dir=cfg.work_dir, tracking_uri=cfg.tracking_uri, threads=cfg.threads),
        log,
    )
    tuned_settings = TrainSettings(max_steps=cfg.tuned_steps)
    frozen_settings = TrainSettings(frozen_epochs=10)
    results: dict[str, list[VariantResult]] = {}
    frozen = replace(MAIN, text_tuning="frozen")

    def run(config: BiasConfig, seeds: int, labels: str = "vote", steps: int = 0) -> None:
        name = label(config, labels)
        tuned = config.text_tuning != "frozen" and config.uses_text
        settings = replace(tuned_settings, max_steps=steps or cfg.tuned_steps) if tuned else frozen_settings
        for seed in range(len(results.get(name, [])), seeds):
            # LP-FT: a tuned MiniLM starts from the heads its frozen twin learnt (same seed).
            twin = results.get(label(replace(config, text_tuning="frozen"), labels), [])
            init = twin[seed] if tuned and seed < len(twin) else None
            r = run_variant(bench, config, seed, settings, labels, init_from=init)
            results.setdefault(name, []).append(r)
            log(f"{name} seed {seed}: acc {r.calibrated.accuracy:.3f} F1 {r.calibrated.macro_f1:.3f} "
                f"image-cued {r.calibrated.by_cue.get('image', float('nan')):.3f} ({r.seconds:.0f}s, "
                f"{time.perf_counter() - start:.0f}s total)")

    # Heads on precomputed states first (cheap, and the tuned runs start from them).
    for config in (frozen, replace(frozen, modality="text"), replace(frozen, modality="image"),
                   replace(frozen, fusion="align")):
        run(config, cfg.seeds)
    run(frozen, 1, labels="gold")
    run(MAIN, cfg.seeds)
    run(replace(MAIN, modality="text"), cfg.seeds)
    run(replace(MAIN, fusion="align"), 1)
    run(replace(MAIN, text_tuning="full"), 1, steps=cfg.full_steps)
    run(MAIN, 1, labels="gold")

    main = results[label(MAIN)][0]
    inconsistency, aucs = fit_inconsistency(bench)
    package = write_package(bench, main, inconsistency, cfg.work_dir / "package")
    spans = {
        name: span_f1(results[name][0].classifier, bench.tokenizer, bench.splits["test"],
                      bench.inputs("test", results[name][0].config.text_tuning == "frozen"),
                      results[name][0].temperature)
        for name in (label(MAIN), label(frozen), label(replace(MAIN, modality="text")))
    }
    probes = {
        name: probe_image_cued(_detector(bench, results[name][0], inconsistency), bench.splits["test"])
        for name in (label(MAIN), label(frozen), label(replace(MAIN, modality="text")))
    }
    log(f"cues and probe done ({time.perf_counter() - start:.0f}s total)")
    registered = None
    if cfg.register and cfg.tracking_uri:
        _, registered = register_package(package, cfg.tracking_uri, "production", "bias-report")
    rows = _rows(results, spans, probes, aucs)
    plots = cfg.out_dir / NAME
    plots.mkdir(parents=True, exist_ok=True)
    _plot_modality(results, plots / "modality_seeds.png")
    _plot_tuning(results, plots / "tuning_tradeoff.png")
    _plot_reliability(bench, main, plots / "reliability.png")
    notes = _notes(cfg, bench, results, spans, probes, aucs, package, registered,
                   time.perf_counter() - start)
    return write_report(NAME, rows, cfg.out_dir, data_seed=cfg.data_seed,
                        title="Bias detector (ViLBias): modality, fusion, tuning, cues, calibration, "
                              "annotation", notes=notes)


def _detector(bench: Bench, result: VariantResult, inconsistency) -> BiasDetector:  # type: ignore[no-untyped-def]
    return BiasDetector(result.classifier, bench.encoder, bench.tokenizer,
                        temperature=result.temperature, inconsistency=inconsistency)


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value); NaN stays NaN."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), (float(array.std(ddof=1)) if len(array) > 1 else 0.0)


def _rows(results: dict[str, list[VariantResult]], spans: dict[str, SpanScores],
          probes: dict[str, ProbeScores], aucs: dict[str, float]) -> list[MetricRow]:
    rows: list[MetricRow] = []
    baselines = {"both-concat-lora": "text-lora", "both-concat-frozen": "text-frozen",
                 "image-frozen": "text-frozen", "both-align-frozen": "both-concat-frozen",
                 "both-align-lora": "both-concat-lora", "both-concat-lora-gold": "both-concat-lora",
                 "both-concat-frozen-gold": "both-concat-frozen"}
    for name, rs in results.items():
        split = f"test (gold), {len(rs)} seed{'s' if len(rs) > 1 else ''}"
        base = baselines.get(name)
        if base and len(results[base]) != len(rs):
            base = None  # compared in the notes instead (different seed counts)
        for metric, values in (
            ("accuracy", [r.calibrated.accuracy for r in rs]),
            ("macro-F1", [r.calibrated.macro_f1 for r in rs]),
            ("accuracy on image-cued items", [r.calibrated.by_cue.get("image", float("nan")) for r in rs]),
            ("accuracy on text-cued items", [r.calibrated.by_cue.get("text", float("nan")) for r in rs]),
            ("ECE before calibration", [r.raw.ece for r in rs]),
            ("ECE after calibration", [r.calibrated.ece for r in rs]),
        ):
            mean, std = _mean_std(values)
            rows.append(MetricRow(metric, split, name, mean, base))
            if len(rs) > 1 and metric in ("accuracy", "macro-F1"):
                rows.append(MetricRow(f"{metric} std over seeds", split, name, std))
        rows.append(MetricRow("trainable parameter share", "model", name, rs[0].trainable / rs[0].total))
    full = results.get("both-concat-full")
    if full:
        for name in ("both-concat-lora", "both-concat-frozen"):
            r = results[name][0]
            rows.append(MetricRow("share of full fine-tune accuracy recovered", "test (gold), seed 0", name,
                                  r.calibrated.accuracy / full[0].calibrated.accuracy))
            rows.append(MetricRow("share of full fine-tune macro-F1 recovered", "test (gold), seed 0", name,
                                  r.calibrated.macro_f1 / full[0].calibrated.macro_f1))
    for name, s in spans.items():
        split = f"test text-cued items ({s.items})"
        rows += [MetricRow("cue span F1 (words)", split, name, s.f1, None),
                 MetricRow("cue span precision", split, name, s.precision),
                 MetricRow("cue span recall", split, name, s.recall),
                 MetricRow("cue span F1 (words)", split, f"random words ({name})", s.random_f1)]
    for name, p in probes.items():
        split = f"test image-cued items ({p.items})"
        rows += [MetricRow("text reliance", split, name, p.text_reliance),
                 MetricRow("image effect", split, name, p.image_effect),
                 MetricRow("image-cued pairs flagged", split, name, p.detected),
                 MetricRow("neutral once the text matches the image", split, name, p.faithful_neutral),
                 MetricRow("biased with loaded rewording", split, name, p.loaded_biased)]
    for cue, auc in aucs.items():
        rows.append(
            MetricRow("inconsistency AUC vs neutral", f"test image cue: {cue}", "encoder cosine", auc)
        )
    return rows


def _plot_modality(results: dict[str, list[VariantResult]], path: Path) -> None:
    names = [n for n in ("text-frozen", "image-frozen", "both-concat-frozen", "both-align-frozen",
                         "text-lora", "both-concat-lora") if n in results]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for k, metric in enumerate(("accuracy", "macro_f1")):
        means, stds = zip(*[_mean_std([getattr(r.calibrated, metric) for r in results[n]]) for n in names],
                          strict=True)
        ax.bar([i + 0.38 * k for i in range(len(names))], means, 0.38, yerr=stds, capsize=3,
               label=metric.replace("_", "-"))
    ax.set_xticks([i + 0.19 for i in range(len(names))], names, rotation=20, fontsize=7)
    ax.set_ylim(0.4, 1.0)
    ax.set_title("Gold test, mean ± std over seeds")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def _plot_tuning(results: dict[str, list[VariantResult]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for name in ("both-concat-frozen", "both-concat-lora", "both-concat-full"):
        if name in results:
            r = results[name][0]
            ax.scatter([r.trainable / r.total], [r.calibrated.macro_f1], label=name)
    ax.set_xscale("log")
    ax.set_xlabel("trainable share of parameters")
    ax.set_ylabel("macro-F1 (gold test, seed 0)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def _plot_reliability(bench: Bench, result: VariantResult, path: Path) -> None:
    logits = predict_logits(result.classifier, bench.inputs("test", result.config.text_tuning == "frozen"))
    gold = bench.splits["test"].gold.float()
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], ":", color="grey")
    for name, t in (("T = 1", 1.0), (f"T = {result.temperature:.2f}", result.temperature)):
        p = biased_probability(logits, t)
        edges = torch.linspace(0, 1, 11)
        xs, ys = [], []
        for k in range(10):
            inside = (p >= edges[k]) & ((p < edges[k + 1]) if k < 9 else (p <= 1))
            if inside.sum() >= 5:
                xs.append(float(p[inside].mean()))
                ys.append(float(gold[inside].mean()))
        ax.plot(xs, ys, marker="o", markersize=3, label=name)
    ax.set_xlabel("predicted P(biased)")
    ax.set_ylabel("gold biased fraction")
    ax.set_title(f"Reliability, {label(result.config)} (gold test)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def _fmt(rs: list[VariantResult], attr: str = "accuracy") -> str:
    mean, std = _mean_std([getattr(r.calibrated, attr) for r in rs])
    return f"{mean:.3f} ± {std:.3f}" if len(rs) > 1 else f"{mean:.3f}"


def _notes(cfg: ReportConfig, bench: Bench, results: dict[str, list[VariantResult]],
           spans: dict[str, SpanScores], probes: dict[str, ProbeScores], aucs: dict[str, float],
           package: Path, registered: int | None, seconds: float) -> str:
    """The narrative: numbers beside the paper's claims (filled in from this run)."""
    from pipelines.bias.report_notes import notes

    return notes(cfg, bench, results, spans, probes, aucs, package, registered, seconds)


def main() -> None:
    import typer

    from pipelines.bias.cli import report

    typer.run(report)


if __name__ == "__main__":
    main()
