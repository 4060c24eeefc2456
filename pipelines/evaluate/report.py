"""The report writer: metric rows -> `reports/<name>.md` (tables + PNG plots), `<name>.json`
(rows, commit, data seed, machine) and, given a tracking URI, an MLflow run.

A row's `baseline` names another method whose row (same metric and split) it is compared
with; the markdown shows both values and the difference.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


@dataclass(frozen=True)
class MetricRow:
    metric: str  # e.g. "R@1", "AUC", "Hits@1"
    split: str  # e.g. "test", "test_compositional", "missing=0.3"
    method: str  # e.g. "filip"
    value: float
    baseline: str | None = None  # the method this row is compared with
    spread: float | None = None  # std over seeds when `value` is a mean over `seeds` runs
    seeds: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def shown(self) -> str:
        """The value for a table: `0.4700`, or `0.4700 ± 0.0120 (3 seeds)` for a mean."""
        if self.spread is None:
            return f"{self.value:.4f}"
        return f"{self.value:.4f} ± {self.spread:.4f} ({self.seeds} seeds)"


def mean_over_seeds(runs: Sequence[Sequence[MetricRow]]) -> list[MetricRow]:
    """One row per (metric, split, method) of the first run: the mean over the runs (seeds) that
    have it, with their standard deviation as the spread."""
    values: dict[tuple[str, str, str], list[float]] = {}
    for rows in runs:
        for r in rows:
            values.setdefault((r.metric, r.split, r.method), []).append(r.value)
    out = []
    for r in runs[0] if runs else []:
        v = values[(r.metric, r.split, r.method)]
        if len(v) == 1:
            out.append(r)
        else:
            out.append(replace(r, value=float(np.mean(v)), spread=float(np.std(v)), seeds=len(v)))
    return out


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    json: Path
    plots: tuple[Path, ...]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text.replace("@", "_at_")).strip("_") or "metric"


def git_commit(repo: Path | None = None) -> str:
    """HEAD's sha, or "uncommitted" when there is no git history to point at."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "uncommitted"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {"platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()}


def check_rows(rows: Iterable[MetricRow]) -> list[MetricRow]:
    """Rows as a list; fails on duplicates and on baselines with no matching row."""
    rows = list(rows)
    seen = set()
    for r in rows:
        key = (r.metric, r.split, r.method)
        if key in seen:
            raise ValueError(f"duplicate row for metric={r.metric} split={r.split} method={r.method}")
        seen.add(key)
        if not np.isfinite(r.value) and not np.isnan(r.value):
            raise ValueError(f"row {key} has a non-finite value {r.value}")
    for r in rows:
        if r.baseline is not None and (r.metric, r.split, r.baseline) not in seen:
            raise ValueError(f"row {r.metric}/{r.split}/{r.method} names baseline {r.baseline!r}, "
                             "which has no row for that metric and split")
    return rows


def _plot(metric: str, rows: list[MetricRow], path: Path) -> Path:
    splits = list(dict.fromkeys(r.split for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    value = {(r.split, r.method): r.value for r in rows}
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(splits) + 2), 3.0))
    x = np.arange(len(splits))
    for k, m in enumerate(methods):
        ax.bar(x + k * width - 0.4 + width / 2, [value.get((s, m), np.nan) for s in splits], width, label=m)
    ax.set_xticks(x, splits, fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(metric)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def write_report(name: str, rows: Iterable[MetricRow], out_dir: Path = Path("reports"),
                 data_seed: int | None = None, title: str | None = None, notes: str = "") -> ReportFiles:
    """Write `<out_dir>/<name>.md`, `<out_dir>/<name>.json` and one PNG per metric.

    Args:
        name: report file stem, e.g. "retrieval-filip".
        rows: metric rows; baselines must name a method with a row of the same metric and split.
        data_seed: the seed of the datasets evaluated on.
    Returns:
        The paths written.
    """
    rows = check_rows(rows)
    if not rows:
        raise ValueError("a report needs at least one row")
    out_dir = Path(out_dir)
    plot_dir = out_dir / name
    plot_dir.mkdir(parents=True, exist_ok=True)
    commit, mach = git_commit(), machine()
    by_metric: dict[str, list[MetricRow]] = {}
    for r in rows:
        by_metric.setdefault(r.metric, []).append(r)
    value = {(r.metric, r.split, r.method): r.value for r in rows}
    lines = [f"# {title or name}", "", f"- commit: `{commit}`", f"- data seed: {data_seed}",
             f"- machine: {mach['platform']}, {mach['cpus']} CPUs, Python {mach['python']}", ""]
    if notes:
        lines += [notes, ""]
    plots = []
    for metric, mrows in by_metric.items():
        plot = _plot(metric, mrows, plot_dir / f"{_slug(metric)}.png")
        plots.append(plot)
        lines += [f"## {metric}", "", "| split | method | value | baseline | baseline value | difference |",
                  "|---|---|---:|---|---:|---:|"]
        for r in mrows:
            if r.baseline is None:
                lines.append(f"| {r.split} | {r.method} | {r.shown()} | | | |")
            else:
                b = value[(metric, r.split, r.baseline)]
                lines.append(f"| {r.split} | {r.method} | {r.shown()} | {r.baseline} | {b:.4f} "
                             f"| {r.value - b:+.4f} |")
        lines += ["", f"![{metric}]({name}/{plot.name})", ""]
    md = out_dir / f"{name}.md"
    md.write_text("\n".join(lines))
    js = out_dir / f"{name}.json"
    js.write_text(json.dumps({"name": name, "rows": [r.to_dict() for r in rows], "commit": commit,
                              "data_seed": data_seed, "machine": mach}, indent=1, sort_keys=True) + "\n")
    return ReportFiles(md, js, tuple(plots))


def _artifact_root(tracking_uri: str) -> str | None:
    """Beside an sqlite store, keep artifacts next to the database, not in the working dir."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        db = Path(tracking_uri[len("sqlite:///") :])
        return (db.parent / "artifacts").resolve().as_uri()
    return None


def log_to_mlflow(rows: Iterable[MetricRow], tracking_uri: str, experiment: str, run_name: str,
                  params: dict[str, Any] | None = None, artifacts: Iterable[Path] = ()) -> str:
    """Log rows as metrics `<metric>/<split>/<method>` of one new run.

    Args:
        tracking_uri: e.g. `concord.config.load_settings().tracking_uri`.
        artifacts: files to attach (the report's md, json and plots).
    Returns:
        The MLflow run id.
    """
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    rows = check_rows(rows)
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        experiment, artifact_location=_artifact_root(tracking_uri))
    run = client.create_run(exp_id, run_name=run_name, tags={"concord.kind": "evaluation"})
    now = int(time.time() * 1000)
    metrics = [Metric(_key(r), float(r.value), now, 0) for r in rows]
    plist = [Param(k, str(v)) for k, v in sorted({"commit": git_commit(), **(params or {})}.items())]
    for i in range(0, len(metrics), 900):  # MLflow caps a batch at 1000 metrics
        client.log_batch(run.info.run_id, metrics=metrics[i : i + 900], params=plist if i == 0 else [])
    for path in artifacts:
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _key(r: MetricRow) -> str:
    parts = (r.metric, r.split, r.method)
    return "/".join(re.sub(r"[^A-Za-z0-9_.\- :]+", "_", p.replace("@", "_at_")) for p in parts)
