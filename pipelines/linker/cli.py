"""`concord linker ...`: train and register the M3EL linker package, and write the M3EL report.

concord linker train-m3el [--encoder URI] [--tracking-uri URI]   # -> concord-linker@production
concord linker report [--encoder URI]                             # -> reports/linker_m3el.*
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

app = typer.Typer(help="Train the linker's models and write their reports.", no_args_is_help=True)
console = Console()

EncoderOpt = Annotated[
    str | None,
    typer.Option(help="encoder URI: models:/NAME@ALIAS, models:/NAME/VERSION or a directory"),
]
TrackingOpt = Annotated[
    str | None, typer.Option(help="MLflow tracking URI: track the run and register the package")
]


def _settings(steps: int, batch_size: int, lr: float, candidates: int) -> Any:
    from pipelines.linker.m3el_train import TrainSettings

    return TrainSettings(steps=steps, batch_size=batch_size, lr=lr, candidates=candidates)


@app.command("train-m3el")
def train_m3el_command(
    encoder: EncoderOpt = "models:/concord-encoder@production",
    tracking_uri: TrackingOpt = None,
    variant: Annotated[
        str, typer.Option(help="full or an ablation (no_cl, text_only, ...)")
    ] = "full",
    data: Annotated[
        Path | None, typer.Option(help="an entities dataset dir; default: make one")
    ] = None,
    data_size: Annotated[
        str, typer.Option(help="entities preset when making the data")
    ] = "default",
    seed: Annotated[int, typer.Option(help="data and training seed")] = 0,
    hidden: Annotated[int, typer.Option(help="M3EL hidden size")] = 64,
    steps: Annotated[int, typer.Option(help="optimisation steps")] = 300,
    batch_size: Annotated[int, typer.Option()] = 32,
    lr: Annotated[float, typer.Option()] = 2e-3,
    candidates: Annotated[
        int, typer.Option(help="KB entities scored per step (0: all; best, slower)")
    ] = 0,
    out: Annotated[Path | None, typer.Option(help="package directory")] = None,
    work_dir: Annotated[Path, typer.Option(help="data, feature cache, encoder")] = Path(
        ".cache/linker"
    ),
    copy_encoder: Annotated[bool, typer.Option(help="copy the encoder into the package")] = False,
    register: Annotated[
        bool, typer.Option(help="register concord-linker (with --tracking-uri)")
    ] = True,
    alias: Annotated[str, typer.Option(help="alias moved to the new version")] = "production",
    threads: Annotated[int, typer.Option(help="torch CPU threads")] = 1,
) -> None:
    """Train M3EL on frozen encoder features, test it, write the linker package and (with a
    tracking URI) register it as concord-linker with the alias."""
    from pipelines.linker.m3el_pipeline import M3ELRunConfig, train_m3el

    cfg = M3ELRunConfig(
        encoder=encoder,
        data=data,
        data_size=data_size,
        seed=seed,
        hidden=hidden,
        train=_settings(steps, batch_size, lr, candidates),
        work_dir=work_dir,
        package_dir=out,
        copy_encoder=copy_encoder,
        tracking_uri=tracking_uri,
        register=register,
        alias=alias,
        threads=threads,
    )
    directory, version, test = train_m3el(cfg, variant, log=console.print)
    console.print(
        f"[green]package[/] {directory}"
        + (f" (concord-linker v{version}, alias {alias})" if version else "")
    )
    console.print(
        "test: " + ", ".join(f"{k} {test[k]:.3f}" for k in ("Hits@1", "Hits@3", "Hits@10", "MRR"))
    )


@app.command("report")
def report_command(
    encoder: Annotated[
        str | None,
        typer.Option(help="encoder URI or directory; default: train a small tiny-conv encoder"),
    ] = None,
    tracking_uri: TrackingOpt = None,
    seeds: Annotated[str, typer.Option(help="comma-separated training seeds")] = "0,1,2",
    fractions: Annotated[str, typer.Option(help="comma-separated training fractions")] = "1.0,0.2",
    variants: Annotated[str, typer.Option(help="comma-separated variants")] = "",
    data_size: Annotated[str, typer.Option(help="entities preset")] = "default",
    seed: Annotated[int, typer.Option(help="data seed")] = 0,
    steps: Annotated[int, typer.Option(help="optimisation steps per run")] = 300,
    batch_size: Annotated[int, typer.Option()] = 32,
    lr: Annotated[float, typer.Option()] = 2e-3,
    candidates: Annotated[int, typer.Option(help="KB entities scored per step (0: all)")] = 128,
    out_dir: Annotated[Path, typer.Option(help="where reports go")] = Path("reports"),
    name: Annotated[str, typer.Option(help="report file stem")] = "linker_m3el",
    plot_dir: Annotated[Path | None, typer.Option(help="default: <out-dir>/linker")] = None,
    notes: Annotated[
        Path | None, typer.Option(help="markdown file appended as the discussion")
    ] = None,
    work_dir: Annotated[Path, typer.Option()] = Path(".cache/linker"),
    threads: Annotated[int, typer.Option(help="torch CPU threads")] = 1,
    runs: Annotated[
        Path | None,
        typer.Option(help="re-render from an earlier report's .json (no training, no package)"),
    ] = None,
    supplement: Annotated[
        Path | None, typer.Option(help="runs (.json report or .jsonl) shown as a second table")
    ] = None,
    supplement_title: Annotated[str, typer.Option()] = "Trained against the whole KB",
) -> None:
    """Train every variant x seed x fraction, write reports/linker_m3el.{md,json} and the plot,
    and the full model's package (registered with a tracking URI)."""
    from concord.models.linking import VARIANTS
    from pipelines.linker.m3el_pipeline import M3ELRunConfig, package, prepare, run_grid
    from pipelines.linker.m3el_report import load_runs, section, write
    from pipelines.tracking import TrainingRun

    cfg = M3ELRunConfig(
        encoder=encoder,
        data_size=data_size,
        seed=seed,
        seeds=tuple(int(s) for s in seeds.split(",") if s.strip()),
        fractions=tuple(float(f) for f in fractions.split(",") if f.strip()),
        variants=tuple(v.strip() for v in variants.split(",") if v.strip()) or VARIANTS,
        train=_settings(steps, batch_size, lr, candidates),
        work_dir=work_dir,
        tracking_uri=tracking_uri,
        threads=threads,
    )
    discussion = notes.read_text() if notes else ""
    extra = load_runs(supplement) if supplement else []
    if runs is not None:  # re-render only
        stored = json.loads(runs.read_text())
        results = load_runs(runs)
        sec = section(
            results,
            plot_dir or out_dir / "linker",
            setup=stored.get("setup", ""),
            discussion=discussion,
            supplement=extra,
            supplement_title=supplement_title,
        )
        keep = {k: stored[k] for k in ("encoder", "setup") if k in stored}
        md, js = write(sec, results, out_dir, name, int(stored.get("data_seed", seed)), keep)
        console.print(f"[green]wrote[/] {md} {js} {', '.join(map(str, sec.plots))}")
        return
    prepared = prepare(cfg, log=console.print)
    results, full = run_grid(cfg, prepared.data, log=console.print)
    setup = setup_text(cfg, prepared)
    sec = section(
        results,
        plot_dir or out_dir / "linker",
        setup=setup,
        discussion=discussion,
        supplement=extra,
        supplement_title=supplement_title,
    )
    info = {"encoder": prepared.encoder_record, "setup": setup}
    md, js = write(sec, results, out_dir, name, cfg.seed, info)
    console.print(f"[green]wrote[/] {md} {js} {', '.join(map(str, sec.plots))}")
    if full is not None:
        first = next(r for r in results if r.variant == "full" and r.fraction == cfg.fractions[0])
        tracking = None
        if tracking_uri:
            tracking = TrainingRun(
                tracking_uri,
                "m3el-report-full",
                experiment="concord-linker",
                model_name="concord-linker",
            )
            tracking.start(
                {"variant": "full", "encoder": prepared.encoder_record, "seed": first.seed}
            )
        directory, version = package(replace(cfg), prepared, full, first.test, tracking)
        console.print(
            f"package {directory}"
            + (f" (concord-linker v{version}, alias production)" if version else "")
        )


@app.command("align-report")
def align_report_command(
    encoder: EncoderOpt = None,
    tracking_uri: TrackingOpt = None,
    seeds: Annotated[int, typer.Option(help="model seeds per cell")] = 3,
    out_dir: Annotated[Path, typer.Option(help="where the report goes")] = Path("reports"),
) -> None:
    """UMAEA vs baselines across missing-image ratios -> reports/linker_umaea.md/.json.

    Without --encoder: concord-encoder@production when tracked, else a small one trained here.
    All options: `python -m pipelines.linker.umaea_report --help`.
    """
    from pipelines.linker.umaea_report import main

    main(encoder=encoder, seeds=seeds, out_dir=out_dir, tracking_uri=tracking_uri)


def setup_text(cfg: Any, prepared: Any) -> str:
    data = prepared.data
    kb = data.kb
    test = data.splits["test"]
    t = cfg.train
    return (
        f"Setup: entities set (`concord data make entities --size {cfg.data_size}`, seed {cfg.seed}): "
        f"{len(kb)} entities ({int(kb.has_image.sum())} with images), "
        f"{len(data.splits['train'])} train / {len(data.splits.get('val', []) or [])} val / "
        f"{len(test)} test mentions ({int(test.features.has_image.sum())} test mentions with an "
        f"image). Names are shared by ~7 entities and looks by ~4; a mention names its entity and one "
        f"attribute its description does not state; its image is a jittered (half of them occluded) "
        f"re-render. Frozen encoder `{prepared.encoder_record}` (features computed once: text tokens + "
        f"global, image 4x4 pooled patches + global, {data.text_dim}-d). M3EL-lite: hidden "
        f"{cfg.hidden}, {t.steps} steps of AdamW (lr {t.lr}, batch {t.batch_size}, {t.candidates} KB "
        f"candidates per step incl. {t.hard} hard negatives per mention), the checkpoint with the best "
        f"val MRR kept; 1 CPU thread. Metrics rank every test mention against all {len(kb)} KB "
        f"entities (ties count against)."
    )
