"""The M3EL part of the linker report: a table of every variant (mean +- std over seeds) at
each training fraction, a breakdown by mention kind, the paper's three claims checked against
the numbers, metric rows for JSON, and a plot. `section(...)` gives them to whoever assembles
reports/linker.md; `write(...)` writes reports/linker_m3el.{md,json}."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pipelines.evaluate.report import MetricRow, check_rows, git_commit, machine
from pipelines.linker.m3el_pipeline import RunResult

METRICS = ("Hits@1", "Hits@3", "Hits@10", "MRR")
BREAKDOWN = ("with image", "no image", "occluded")
LABELS = {
    "full": "M3EL (full)",
    "no_cl": "w/o intra-modal CL",
    "one_direction": "cross-modal text->visual only",
    "text_only": "text only",
    "image_only": "image only",
    "global_only": "global-only (coarse matchers)",
}


@dataclass(frozen=True)
class Section:
    markdown: str
    rows: list[MetricRow]
    plots: list[Path]


def split_name(fraction: float) -> str:
    return f"test (train {fraction:.0%})"


def _stats(
    results: Sequence[RunResult], variant: str, fraction: float, key: str
) -> tuple[float, float, int]:
    values = [r.test[key] for r in results if r.variant == variant and r.fraction == fraction]
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return float("nan"), float("nan"), 0
    return float(np.mean(values)), float(np.std(values)), len(values)


def rows_of(results: Sequence[RunResult]) -> list[MetricRow]:
    """Mean and seed std per (metric, fraction, variant); `full` is compared with global-only
    (the design's M3EL-vs-global-only row), every ablation with `full`."""
    variants = list(dict.fromkeys(r.variant for r in results))
    fractions = sorted(dict.fromkeys(r.fraction for r in results), reverse=True)
    rows = []
    for fraction in fractions:
        for metric in (*METRICS, *(f"Hits@1 ({b})" for b in BREAKDOWN)):
            for variant in variants:
                mean, std, _ = _stats(results, variant, fraction, metric)
                if variant == "full":
                    baseline = "global_only" if "global_only" in variants else None
                else:
                    baseline = "full" if "full" in variants else None
                split = split_name(fraction)
                rows.append(MetricRow(metric, split, variant, mean, baseline))
                rows.append(MetricRow(f"{metric} seed-std", split, variant, std))
    return check_rows(rows)


def claims(results: Sequence[RunResult]) -> list[str]:
    """The paper's three claims, each said to hold or not, with the numbers."""
    fractions = sorted(dict.fromkeys(r.fraction for r in results), reverse=True)
    variants = [v for v in dict.fromkeys(r.variant for r in results) if v != "full"]
    lines = []
    margins: dict[float, float] = {}
    for fraction in fractions:
        full, full_std, _ = _stats(results, "full", fraction, "Hits@1")
        worse = []
        for v in variants:
            mean, std, _ = _stats(results, v, fraction, "Hits@1")
            if not mean < full:
                worse.append(f"{v} {mean:.3f}±{std:.3f}")
        others = [_stats(results, v, fraction, "Hits@1")[0] for v in variants]
        best = max(others) if others else float("nan")
        margins[fraction] = full - best
        within_noise = [
            v
            for v in variants
            if abs(full - _stats(results, v, fraction, "Hits@1")[0])
            <= full_std + _stats(results, v, fraction, "Hits@1")[1]
        ]
        verdict = "holds" if not worse else "does NOT hold"
        line = (
            f"- **Full > every ablation (Hits@1, train {fraction:.0%})**: {verdict}. Full "
            f"{full:.3f}±{full_std:.3f}; best ablation {best:.3f} (margin {full - best:+.3f})."
        )
        if worse:
            line += f" At or above full: {', '.join(worse)}."
        if within_noise:
            line += f" Within one seed-std of full: {', '.join(within_noise)}."
        lines.append(line)
    for fraction in fractions:
        full = _stats(results, "full", fraction, "Hits@1")[0]
        uni = {v: _stats(results, v, fraction, "Hits@1")[0] for v in ("text_only", "image_only")}
        uni = {k: v for k, v in uni.items() if np.isfinite(v)}
        if uni:
            best_uni = max(uni.values())
            ratio = full / best_uni if best_uni > 0 else float("inf")
            verdict = "holds" if full - best_uni >= 0.1 else "does NOT hold"
            lines.append(
                f"- **Multimodal >> unimodal (train {fraction:.0%})**: {verdict} (read as: full "
                f"at least 0.10 Hits@1 above the better unimodal model). Full {full:.3f}; "
                + ", ".join(f"{k} {v:.3f}" for k, v in uni.items())
                + f" ({ratio:.2f}x the better one)."
            )
    if len(margins) >= 2:
        hi, lo = fractions[0], fractions[-1]
        grows = margins[lo] > margins[hi] and margins[lo] > 0
        verdict = "holds" if grows else "does NOT hold"
        line = (
            f"- **Margins larger with less data**: {verdict} (read as: full ahead of every "
            f"ablation, by more at {lo:.0%}). Full minus the best ablation, Hits@1: "
            f"{margins[hi]:+.3f} at {hi:.0%} vs {margins[lo]:+.3f} at {lo:.0%}"
        )
        for other in ("global_only", "text_only"):
            gaps = [
                _stats(results, "full", f, "Hits@1")[0] - _stats(results, other, f, "Hits@1")[0]
                for f in (hi, lo)
            ]
            if all(np.isfinite(gaps)):
                line += f"; full minus {other}: {gaps[0]:+.3f} vs {gaps[1]:+.3f}"
        lines.append(line + ".")
    return lines


def table(results: Sequence[RunResult]) -> list[str]:
    fractions = sorted(dict.fromkeys(r.fraction for r in results), reverse=True)
    variants = list(dict.fromkeys(r.variant for r in results))
    lines = []
    for fraction in fractions:
        n_seeds = max(_stats(results, v, fraction, "MRR")[2] for v in variants)
        lines += [
            f"**Training mentions: {fraction:.0%}** (mean ± std over {n_seeds} seeds, "
            "test mentions ranked against the whole KB)",
            "",
            "| variant | "
            + " | ".join(METRICS)
            + " | Hits@1 "
            + " | Hits@1 ".join(f"({b})" for b in BREAKDOWN)
            + " |",
            "|---|" + "---:|" * (len(METRICS) + len(BREAKDOWN)),
        ]
        for v in variants:
            cells = []
            for key in (*METRICS, *(f"Hits@1 ({b})" for b in BREAKDOWN)):
                mean, std, _ = _stats(results, v, fraction, key)
                cells.append(f"{mean:.3f} ± {std:.3f}")
            lines.append(f"| {LABELS.get(v, v)} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def plot(results: Sequence[RunResult], path: Path) -> Path:
    """Hits@1 and MRR per variant (bars: mean; whiskers: seed std) at each fraction."""
    fractions = sorted(dict.fromkeys(r.fraction for r in results), reverse=True)
    variants = list(dict.fromkeys(r.variant for r in results))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    width = 0.8 / max(1, len(fractions))
    x = np.arange(len(variants))
    for ax, metric in zip(axes, ("Hits@1", "MRR"), strict=True):
        for k, fraction in enumerate(fractions):
            stats = [_stats(results, v, fraction, metric) for v in variants]
            ax.bar(
                x + k * width - 0.4 + width / 2,
                [s[0] for s in stats],
                width,
                yerr=[s[1] for s in stats],
                capsize=2,
                label=f"train {fraction:.0%}",
            )
        ax.set_xticks(x, [v.replace("_", "\n") for v in variants], fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(f"M3EL ablations: {metric} (full-KB ranking)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def section(
    results: Sequence[RunResult],
    plot_dir: Path,
    *,
    link_prefix: str = "linker",
    setup: str = "",
    discussion: str = "",
    supplement: Sequence[RunResult] = (),
    supplement_title: str = "",
) -> Section:
    """The M3EL section: markdown (linking the plots as `<link_prefix>/<file>`), metric rows
    and the plots written under `plot_dir`. `supplement`: a second set of runs (e.g. trained
    against the whole KB) shown as its own table, claims and plot; its rows' splits get the
    suffix " [supplement]"."""
    figure = plot(results, Path(plot_dir) / "m3el_ablations.png")
    lines = ["## M3EL: multi-level matching for multimodal entity linking", ""]
    if setup:
        lines += [setup, ""]
    lines += table(results)
    lines += [f"![M3EL ablations]({link_prefix}/{figure.name})", "", "### The paper's claims", ""]
    lines += claims(results)
    lines.append("")
    rows, plots = rows_of(results), [figure]
    if supplement:
        extra = plot(supplement, Path(plot_dir) / "m3el_ablations_supplement.png")
        plots.append(extra)
        lines += [f"### {supplement_title or 'Supplement'}", ""]
        lines += table(supplement)
        lines += [f"![M3EL supplement]({link_prefix}/{extra.name})", ""]
        lines += claims(supplement)
        lines.append("")
        rows += [
            MetricRow(r.metric, f"{r.split} [supplement]", r.method, r.value, r.baseline)
            for r in rows_of(supplement)
        ]
    if discussion:
        lines += [discussion, ""]
    return Section("\n".join(lines), check_rows(rows), plots)


def load_runs(path: Path) -> list[RunResult]:
    """Runs stored by `write` (a report .json with "runs") or one JSON run per line."""
    text = Path(path).read_text()
    if Path(path).suffix == ".jsonl":
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        items = json.loads(text)["runs"]
    return [RunResult(**item) for item in items]


def write(
    sec: Section,
    results: Sequence[RunResult],
    out_dir: Path,
    name: str = "linker_m3el",
    data_seed: int = 0,
    extra: dict | None = None,
) -> tuple[Path, Path]:
    """Write `<out_dir>/<name>.md` and `.json` (rows + per-run results + commit/machine)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    commit, mach = git_commit(), machine()
    head = [
        f"# Linker: M3EL ({name})",
        "",
        f"- commit: `{commit}`",
        f"- data seed: {data_seed}",
        f"- machine: {mach['platform']}, {mach['cpus']} CPUs, Python {mach['python']}",
        "",
    ]
    md = out_dir / f"{name}.md"
    md.write_text("\n".join(head) + sec.markdown.replace("## M3EL", "## M3EL", 1) + "\n")
    js = out_dir / f"{name}.json"
    body = {
        "name": name,
        "rows": [r.to_dict() for r in sec.rows],
        "runs": [asdict(r) for r in results],
        "commit": commit,
        "data_seed": data_seed,
        "machine": mach,
        **(extra or {}),
    }
    js.write_text(json.dumps(body, indent=1, sort_keys=True, allow_nan=True) + "\n")
    return md, js
