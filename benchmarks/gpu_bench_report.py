"""The GPU benchmark's report: `Bench` collects rows, failures and facts, judges the goals and
writes bench_gpu.md + bench_gpu.json; `ratios` adds the served / raw rows."""

from __future__ import annotations

import contextlib
import json
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.gpu_bench_inputs import Sizes
from pipelines.evaluate.report import MetricRow, check_rows, git_commit, machine

NAME = "bench_gpu"
GOAL_IMAGES_PER_S = 10_000.0  # end to end on one H200 (issue 17)
GOAL_SERVED_RATIO = 0.8  # served / bf16 forward ceiling, measured in the same run


@dataclass
class Bench:
    """Rows ({metric, split, method, value, baseline?}), failures and what was used; written
    after every section."""

    device: torch.device
    out: Path
    options: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    budget: float = 420.0  # seconds; optional work past it is skipped (recorded)
    rows: list[MetricRow] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def row(
        self, metric: str, split: str, method: str, value: float, baseline: str | None = None
    ) -> None:
        if self.has(metric, split, method):  # the report writer refuses duplicates
            self.failures.append({"what": f"{metric} {split} {method}", "error": "measured twice"})
            return
        if baseline is not None and not self.has(metric, split, baseline):
            baseline = None  # its row failed: the value stands alone
        self.rows.append(MetricRow(metric, split, method, float(value), baseline))
        print(f"  {metric:<16} {split:<34} {method:<46} {value:12.2f}", flush=True)

    def has(self, metric: str, split: str, method: str) -> bool:
        return any((r.metric, r.split, r.method) == (metric, split, method) for r in self.rows)

    def value(self, metric: str, split: str, method: str) -> float | None:
        for r in self.rows:
            if (r.metric, r.split, r.method) == (metric, split, method):
                return r.value
        return None

    def measure(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run one measurement; a failure is recorded with its error, not raised."""
        try:
            return fn()
        except Exception as err:
            detail = f"{type(err).__name__}: {err}"[:2000]
            self.failures.append(
                {"what": name, "error": detail, "trace": traceback.format_exc()[-3000:]}
            )
            print(f"  FAILED {name}: {detail}", flush=True)
            return None

    def skip(self, name: str, why: str) -> None:
        self.skipped.append({"what": name, "why": why})
        print(f"  skipped {name}: {why}", flush=True)

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Print and time one section; the report is rewritten after it."""
        print(f"[{name}]", flush=True)
        started = time.perf_counter()
        try:
            yield
        finally:
            seconds = round(time.perf_counter() - started, 1)
            self.facts.setdefault("section seconds", {})[name] = seconds
            self.write()

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.started)

    def write(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        rows = check_rows(self.rows)
        goals = self.goals()
        seconds = time.perf_counter() - self.started
        data = {
            "name": NAME,
            "rows": [r.to_dict() for r in rows],
            "commit": git_commit(),
            "data_seed": 0,
            "machine": machine(),
            "environment": self.facts.get("environment", {}),
            "options": self.options,
            "facts": {k: v for k, v in self.facts.items() if k != "environment"},
            "goals": goals,
            "failures": self.failures,
            "skipped": self.skipped,
            "seconds": round(seconds, 1),
        }
        (self.out / f"{NAME}.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        (self.out / f"{NAME}.md").write_text(self.markdown(data))
        return self.out / f"{NAME}.md"

    def goals(self) -> list[dict[str, Any]]:
        """The issue's two goals, judged from the rows (None when not measured)."""
        served = [
            r.value
            for r in self.rows
            if r.metric == "images/s" and r.method.startswith("gRPC EncodeImages")
        ]
        best_served = max(served) if served else None
        ceilings = [
            r.value for r in self.rows if r.metric == "images/s" and r.split.startswith("forward")
        ]
        ceiling = max(ceilings) if ceilings else None
        ratio = best_served / ceiling if best_served and ceiling else None
        on_gpu = self.device.type == "cuda"
        return [
            {
                "goal": f"served images/s end to end >= {GOAL_IMAGES_PER_S:,.0f} on an H200",
                "value": best_served,
                "met": (best_served >= GOAL_IMAGES_PER_S) if best_served and on_gpu else None,
            },
            {
                "goal": f"served >= {GOAL_SERVED_RATIO}x the bf16 forward ceiling (same run)",
                "value": ratio,
                "ceiling_images_per_s": ceiling,
                "met": (ratio >= GOAL_SERVED_RATIO) if ratio and on_gpu else None,
            },
        ]

    def markdown(self, data: dict[str, Any]) -> str:
        env = data["environment"]
        lines = [
            "# GPU path: raw ceilings vs served (encoder, search, scorer)",
            "",
            f"- commit: `{data['commit']}`; {data['seconds']} s; `python -m benchmarks.gpu_bench"
            f"{' --quick' if self.options.get('quick') else ''} --device {self.device.type}`",
            f"- device: {env.get('device', self.device)}; torch {env.get('torch')} "
            f"(CUDA build {env.get('cuda_build')}); {env.get('cpus')} CPUs",
            f"- model: {self.facts.get('model', '?')}",
            "",
            "## Goals",
            "",
        ]
        for g in data["goals"]:
            value = g["value"]
            shown = "not measured" if value is None else f"{value:,.2f}"
            verdict = {True: "met", False: "**not met**", None: "not judged (no GPU run)"}
            lines.append(f"- {g['goal']}: {shown} -> {verdict[g['met']]}")
        pipelines = [r.value for r in self.rows if r.split.startswith("JPEG -> embedding")]
        if pipelines:
            lines.append(
                f"- for comparison, the best raw JPEG -> embedding pipeline in one process "
                f"(no gRPC; decode on the GPU or in a thread pool): {max(pipelines):,.2f} images/s"
            )
        lines += ["", "## Options used", ""]
        lines += [f"- {k}: {v}" for k, v in self.options.items()]
        if self.failures or self.skipped:
            lines += ["", "## Failures and skips", ""]
            lines += [f"- FAILED {f['what']}: {f['error']}" for f in self.failures]
            lines += [f"- skipped {s['what']}: {s['why']}" for s in self.skipped]
        by_metric: dict[str, list[MetricRow]] = {}
        for r in self.rows:
            by_metric.setdefault(r.metric, []).append(r)
        value = {(r.metric, r.split, r.method): r.value for r in self.rows}
        for metric, rows in by_metric.items():
            lines += ["", f"## {metric}", "", "| split | method | value | baseline | ratio |"]
            lines.append("|---|---|---:|---|---:|")
            for r in rows:
                base = value.get((metric, r.split, r.baseline)) if r.baseline else None
                ratio = f"{r.value / base:.3f}" if base else ""
                lines.append(
                    f"| {r.split} | {r.method} | {r.value:,.2f} | {r.baseline or ''} | {ratio} |"
                )
        facts = data["facts"]
        if facts:
            lines += ["", "## Facts", "", "```", json.dumps(facts, indent=1), "```"]
        return "\n".join(lines) + "\n"


def ratios(bench: Bench, sizes: Sizes) -> None:
    """served / ceiling rows, from rows of this run."""
    ceilings = {
        kind: [
            r.value for r in bench.rows if r.metric == f"{kind}/s" and r.split.startswith("forward")
        ]
        for kind in ("images", "texts")
    }
    for kind, name in (("images", "gRPC EncodeImages"), ("texts", "gRPC EncodeTexts")):
        if not ceilings[kind]:
            continue
        ceiling = max(ceilings[kind])
        for b in sizes.batches:
            for c in sizes.clients:
                value = bench.value(f"{kind}/s", f"served batch={b}", f"{name}, {c} clients")
                if value is not None:
                    bench.row(
                        "served/ceiling", f"{kind} batch={b}", f"{c} clients", value / ceiling
                    )
    for split in sorted({r.split for r in bench.rows if r.metric == "QPS"}):
        for c in sorted({1, sizes.many}):
            served = bench.value("QPS", split, f"gRPC Search, {c} clients")
            for base in (f"raw engine, {c} clients", f"raw engine + forward, {c} clients"):
                raw = bench.value("QPS", split, base)
                if served is not None and raw:
                    bench.row("served/raw", f"search {split}", f"{c} clients", served / raw)
    b = sizes.scorer_batch
    raw = bench.value("pairs/s", f"pairs batch={b}", "raw score (ceiling)")
    for c in sorted({1, sizes.many}):
        served = bench.value("pairs/s", f"pairs batch={b}", f"gRPC Score, {c} clients")
        if served is not None and raw:
            bench.row("served/raw", f"scorer batch={b}", f"{c} clients", served / raw)
