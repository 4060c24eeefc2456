"""`python -m pipelines.scorer.report`: train (or take) an encoder, fine-tune it with hard
negatives, score the misalignment set, fit and package the scorer, and write
reports/scorer.{md,json} with a reliability diagram."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import typer
from rich.console import Console

from pipelines.evaluate.report import ReportFiles, write_report
from pipelines.scorer.evaluate import reliability
from pipelines.scorer.hardneg import HardNegConfig
from pipelines.scorer.pipeline import ScorerConfig, ScorerResult, run

console = Console()


def plot_reliability(result: ScorerResult, path: Path) -> Path:
    """Reliability diagram on test: CLIPScore read as a probability vs the calibrated one."""
    fig, ax = plt.subplots(figsize=(4.5, 4.0))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for label, (y, naive, calibrated) in result.reliability.items():
        for name, p, style in (("CLIPScore", naive, "--"), ("calibrated", calibrated, "-")):
            xs, ys = reliability(y, p)
            ax.plot(xs, ys, style, marker="o", markersize=3, label=f"{name} [{label}]")
    ax.set_xlabel("predicted P(aligned)")
    ax.set_ylabel("observed aligned fraction")
    ax.set_title("Reliability on test")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def build_report(
    cfg: ScorerConfig, out_dir: Path, name: str = "scorer"
) -> tuple[ScorerResult, ReportFiles]:
    """Run the pipeline and write `<out_dir>/<name>.md`, `.json`, plots and reliability.png."""
    result = run(cfg)
    notes = result.notes.replace("](scorer/", f"]({name}/")
    files = write_report(
        name,
        result.rows,
        out_dir,
        data_seed=cfg.seed,
        title="Scorer: CLIPScore, fine-grained, CLIP4DM / F-CLIPScore, calibration",
        notes=notes,
    )
    plot_reliability(result, Path(out_dir) / name / "reliability.png")
    return result, files


def main(
    encoder: Annotated[
        str | None,
        typer.Option(help="models:/NAME/VERSION or a local encoder dir; default: train one"),
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    preset: Annotated[str, typer.Option(help="plain encoder preset")] = ScorerConfig.preset,
    epochs: Annotated[int, typer.Option(help="plain encoder epochs")] = ScorerConfig.epochs,
    hard_negatives: Annotated[bool, typer.Option(help="also fine-tune with hard negatives")] = True,
    hard_neg_epochs: Annotated[int, typer.Option()] = 4,
    misalignment_size: Annotated[str, typer.Option(help="misalignment preset")] = "small",
    retrieval_size: Annotated[
        str, typer.Option(help="retrieval preset for the plain encoder")
    ] = "small",
    out_dir: Annotated[Path, typer.Option(help="where the report goes")] = Path("reports"),
    name: Annotated[str, typer.Option(help="report file stem")] = "scorer",
    work_dir: Annotated[Path, typer.Option(help="encoders and the package")] = Path(
        ".cache/scorer"
    ),
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="MLflow URI: register the encoders and concord-scorer@production there"),
    ] = None,
    progress: Annotated[bool, typer.Option()] = False,
    threads: Annotated[int, typer.Option(help="torch CPU threads")] = ScorerConfig.threads,
    device: Annotated[
        str, typer.Option(help="auto | cpu | cuda | cuda:N (training and scoring)")
    ] = ScorerConfig.device,
) -> None:
    """Regenerate the scorer report (and the scorer package)."""
    cfg = ScorerConfig(
        encoder=encoder,
        seed=seed,
        preset=preset,
        epochs=epochs,
        hard_negatives=hard_negatives,
        hard_neg=replace(HardNegConfig(), epochs=hard_neg_epochs, seed=seed),
        misalignment_size=misalignment_size,
        retrieval_size=retrieval_size,
        work_dir=work_dir,
        tracking_uri=tracking_uri,
        progress=progress,
        threads=threads,
        device=device,
    )
    result, files = build_report(cfg, out_dir, name)
    console.print(
        f"[green]wrote[/] {files.markdown} {files.json}; package {result.package_dir}"
        + (f" (concord-scorer v{result.version})" if result.version else "")
    )
    console.print(f"phases (s): {', '.join(f'{k} {v:.0f}' for k, v in result.phases.items())}")


if __name__ == "__main__":
    typer.run(main)
