"""`concord bias-model ...` (also `python -m pipelines.bias ...`): train one bias classifier into
a package (tracked in MLflow and registered as `concord-bias` on request), register an existing
package, or write the whole report (reports/bias.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="Train, register and report the bias detector (ViLBias).", no_args_is_help=True)
console = Console()

Encoder = Annotated[
    str | None,
    typer.Option(help="encoder URI or directory (models:/NAME@ALIAS needs --tracking-uri)"),
]
Tracking = Annotated[str | None, typer.Option(help="MLflow tracking URI (track and register)")]


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="package directory to write")] = Path(".cache/bias/package"),
    encoder: Encoder = "models:/concord-encoder@production",
    fusion: Annotated[str, typer.Option(help="concat | align")] = "concat",
    modality: Annotated[str, typer.Option(help="both | text | image")] = "both",
    text_tuning: Annotated[str, typer.Option(help="frozen | lora | full")] = "lora",
    lora_r: Annotated[int, typer.Option(help="LoRA rank on MiniLM q/v")] = 8,
    labels: Annotated[str, typer.Option(help="vote (majority of annotators) | gold")] = "vote",
    seed: Annotated[int, typer.Option(help="training seed")] = 0,
    data_seed: Annotated[int, typer.Option(help="ShapeNews seed")] = 0,
    data_size: Annotated[str, typer.Option(help="ShapeNews preset")] = "default",
    epochs: Annotated[int, typer.Option(help="epochs of a tuned MiniLM")] = 1,
    max_steps: Annotated[int, typer.Option(help="cap on tuned steps (0: epochs)")] = 60,
    head_epochs: Annotated[int, typer.Option(help="epochs of the heads on frozen states")] = 10,
    tracking_uri: Tracking = None,
    register: Annotated[bool, typer.Option(help="register as concord-bias (needs tracking)")] = False,
    alias: Annotated[str | None, typer.Option(help="alias to move to the new version")] = "production",
    work_dir: Annotated[Path, typer.Option(help="data and feature cache")] = Path(".cache/bias"),
    threads: Annotated[int, typer.Option(help="torch CPU threads")] = 1,
) -> None:
    """Train one variant, fit its calibration, write the package (and register it)."""
    from concord.models.bias import BiasConfig
    from pipelines.bias.pipeline import (
        MODEL_NAME,
        PipelineConfig,
        fit_inconsistency,
        prepare,
        run_variant,
        write_package,
    )
    from pipelines.bias.train import TrainSettings
    from pipelines.tracking import TrainingRun

    if register and not tracking_uri:
        raise typer.BadParameter("--register needs --tracking-uri", param_hint="--register")
    cfg = PipelineConfig(encoder=encoder, data_size=data_size, seed=data_seed, work_dir=work_dir,
                         tracking_uri=tracking_uri, threads=threads)
    config = BiasConfig(fusion=fusion, modality=modality, text_tuning=text_tuning,  # type: ignore[arg-type]
                        lora_r=lora_r, max_length=cfg.max_length)
    settings = TrainSettings(epochs=epochs, max_steps=max_steps, frozen_epochs=head_epochs)
    bench = prepare(cfg, console.print)
    run = TrainingRun(tracking_uri, f"bias-{modality}-{fusion}-{text_tuning}", experiment=MODEL_NAME,
                      model_name=MODEL_NAME, model_files=["bias.json", "bias.pt"])
    run.start({**config.to_dict(), **settings.__dict__, "encoder": bench.encoder_choice.uri,
               "labels": labels, "data_seed": data_seed, "data_size": data_size})
    try:
        twin = None
        if config.text_tuning != "frozen" and config.uses_text:  # LP-FT: heads first, then MiniLM
            twin = run_variant(bench, config.replace(text_tuning="frozen"), seed, settings, labels)
        result = run_variant(bench, config, seed, settings, labels, log=run.log, init_from=twin)
        inconsistency, aucs = fit_inconsistency(bench)
        write_package(bench, result, inconsistency, out)
        metrics = {"test_accuracy": result.calibrated.accuracy, "test_macro_f1": result.calibrated.macro_f1,
                   "test_ece": result.calibrated.ece, "temperature": result.temperature,
                   "inconsistency_auc": aucs.get("all", float("nan"))}
        run.log(metrics, result.steps)
    except BaseException:
        run.fail()
        raise
    run_id, version = run.finish(out, register=register, alias=alias if register else None)
    console.print(f"package {out}: accuracy {result.calibrated.accuracy:.3f}, macro-F1 "
                  f"{result.calibrated.macro_f1:.3f}, T {result.temperature:.2f}, "
                  f"{result.trainable:,}/{result.total:,} trainable, {result.seconds:.0f}s")
    if version is not None:
        console.print(f"registered {MODEL_NAME} version {version}" + (f" as @{alias}" if alias else ""))
    elif run_id:
        console.print(f"tracked as run {run_id}")


@app.command("register")
def register_cmd(
    package: Annotated[Path, typer.Argument(help="a package directory (bias.json + bias.pt)")],
    tracking_uri: Annotated[str, typer.Option(help="MLflow tracking URI")],
    alias: Annotated[str | None, typer.Option(help="alias to move")] = "production",
) -> None:
    """Register an existing package as `concord-bias` (alias production by default)."""
    from concord.checkpoints.bias import read_bias_package
    from pipelines.bias.pipeline import MODEL_NAME, register_package

    read_bias_package(package)  # fails naming what is missing
    _, version = register_package(package, tracking_uri, alias)
    console.print(f"registered {MODEL_NAME} version {version}" + (f" as @{alias}" if alias else ""))


@app.command()
def report(
    encoder: Encoder = None,
    out_dir: Annotated[Path, typer.Option(help="where bias.md / bias.json / bias/ go")] = Path("reports"),
    seeds: Annotated[int, typer.Option(help="training seeds per compared variant")] = 3,
    data_seed: Annotated[int, typer.Option(help="ShapeNews seed")] = 0,
    data_size: Annotated[str, typer.Option(help="ShapeNews preset")] = "default",
    tuned_steps: Annotated[int, typer.Option(help="steps of each LoRA run")] = 60,
    full_steps: Annotated[int, typer.Option(help="steps of the full fine-tune run")] = 40,
    tracking_uri: Tracking = None,
    register: Annotated[bool, typer.Option(help="register the main variant as concord-bias")] = False,
    work_dir: Annotated[Path, typer.Option(help="data, encoder and feature cache")] = Path(".cache/bias"),
    threads: Annotated[int, typer.Option(help="torch CPU threads")] = 1,
) -> None:
    """Every row of reports/bias.md from one command (trains a small encoder if none given)."""
    from pipelines.bias.report import ReportConfig, build_report

    files = build_report(
        ReportConfig(encoder=encoder, out_dir=out_dir, seeds=seeds, data_seed=data_seed,
                     data_size=data_size, tuned_steps=tuned_steps, full_steps=full_steps,
                     tracking_uri=tracking_uri, register=register, work_dir=work_dir, threads=threads),
        console.print,
    )
    console.print(f"wrote {files.markdown} and {files.json}")


def main() -> None:
    app()
