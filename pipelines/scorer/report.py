"""`python -m pipelines.scorer.report`: train (with the encoder recipe) or take the shared
encoder, optionally fine-tune a copy with hard negatives, score the misalignment set, fit and
package the scorer, and write reports/scorer.{md,json} with a reliability diagram."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import typer
from rich.console import Console

from pipelines.evaluate.report import ReportFiles, mean_over_seeds, write_report
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
    cfg: ScorerConfig, out_dir: Path, name: str = "scorer", more_encoders: Sequence[str] = ()
) -> tuple[ScorerResult, ReportFiles]:
    """Run the pipeline and write `<out_dir>/<name>.md`, `.json`, plots and reliability.png.

    Args:
        more_encoders: further encoders (other training seeds of the one given in `cfg`): each
            is scored the same way, and every row becomes the mean ± std over all of them. The
            package, the registry entry, the claims and the plot are the first encoder's.
    """
    result = run(cfg)
    rows, notes = result.rows, result.notes.replace("](scorer/", f"]({name}/")
    if more_encoders:
        if cfg.encoder is None:
            raise ValueError("more encoders need a first one given (--encoder)")
        others = [
            run(
                replace(
                    cfg,
                    encoder=encoder,
                    work_dir=cfg.work_dir / f"encoder-{i}",
                    register_package=False,
                )
            )
            for i, encoder in enumerate(more_encoders, start=2)
        ]
        rows = mean_over_seeds([result.rows, *(o.rows for o in others)])
        given = ", ".join(f"`{e}`" for e in (cfg.encoder, *more_encoders))
        notes = (
            f"Every table value is the mean ± std over {1 + len(more_encoders)} encoders (training "
            f"seeds of one recipe): {given}. The notes and claims below, the package and the "
            f"reliability plot are the first encoder's.\n\n{notes}"
        )
    files = write_report(
        name,
        rows,
        out_dir,
        data_seed=cfg.seed,
        title="Scorer: CLIPScore, fine-grained, CLIP4DM / F-CLIPScore, calibration",
        notes=notes,
    )
    plot_reliability(result, Path(out_dir) / name / "reliability.png")
    return result, files


def main(
    encoder: Annotated[
        list[str] | None,
        typer.Option(
            help="models:/NAME/VERSION or a local encoder dir (default: train one with the "
            "recipe); repeat it with other seeds' encoders to report the mean ± std over them"
        ),
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    recipe: Annotated[
        str, typer.Option(help="encoder recipe (pipelines.train_encoder) without --encoder")
    ] = ScorerConfig.recipe,
    epochs: Annotated[
        int | None, typer.Option(help="encoder epochs (default: the recipe's)")
    ] = None,
    hard_negatives: Annotated[
        bool, typer.Option(help="also fine-tune a copy with the misalignment hard negatives")
    ] = ScorerConfig.hard_negatives,
    hard_neg_epochs: Annotated[int, typer.Option()] = 4,
    misalignment_size: Annotated[str, typer.Option(help="misalignment preset")] = "small",
    retrieval_size: Annotated[
        str, typer.Option(help="retrieval preset the encoder trains on")
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
        encoder=encoder[0] if encoder else None,
        seed=seed,
        recipe=recipe,
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
    result, files = build_report(cfg, out_dir, name, more_encoders=(encoder or [])[1:])
    console.print(
        f"[green]wrote[/] {files.markdown} {files.json}; package {result.package_dir}"
        + (f" (concord-scorer v{result.version})" if result.version else "")
    )
    console.print(f"phases (s): {', '.join(f'{k} {v:.0f}' for k, v in result.phases.items())}")


if __name__ == "__main__":
    typer.run(main)
