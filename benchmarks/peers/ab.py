"""A/B rounds and the report rows of the peer comparison (pure: no services, no torch).

Each round measures every figure on both sides back to back, and the side that goes first
alternates from round to round, so slow drift of the shared machine's load (other processes on
2 cores) falls on both sides alike. Ratios are taken within a round, then their median.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pipelines.evaluate.report import MetricRow

CONCORD, PEER = "Concord", "clip-as-service"
SIDES = (CONCORD, PEER)


@dataclass(frozen=True)
class Figure:
    """One thing measured on both sides.

    kind: "rate" (items/s, higher is better; a measurement returns one value) or "latency"
        (seconds per call, lower is better; a measurement returns the calls' samples).
    goal: the least acceptable Concord advantage (Concord/peer for rates, peer/Concord p50 for
        latencies): 1.5 means 1.5x the peer's throughput, 1.0 means no worse.
    """

    name: str  # e.g. "images/s"
    split: str  # e.g. "batch=32"
    kind: str
    goal: float

    @property
    def key(self) -> str:
        return f"{self.name} {self.split}"


@dataclass
class Results:
    """samples[figure key][side] = one list of samples per round."""

    figures: tuple[Figure, ...]
    samples: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    order: list[tuple[str, str]] = field(default_factory=list)  # who went first, per round

    def add(self, figure: Figure, side: str, values: Sequence[float]) -> None:
        per_side = self.samples.setdefault(figure.key, {s: [] for s in SIDES})
        per_side[side].append([float(v) for v in values])


def round_order(index: int) -> tuple[str, str]:
    """Round 0: Concord first; round 1: the peer first; and so on."""
    return SIDES if index % 2 == 0 else (SIDES[1], SIDES[0])


def alternate(
    rounds: int,
    figures: Sequence[Figure],
    measure: Callable[[Figure, str], Sequence[float]],
) -> Results:
    """Measure every figure on both sides, `rounds` times, alternating who goes first.

    Args:
        measure: (figure, side) -> samples (one throughput value, or latency samples).
    """
    results = Results(tuple(figures))
    for index in range(rounds):
        order = round_order(index)
        results.order.append(order)
        for figure in figures:
            for side in order:
                results.add(figure, side, measure(figure, side))
    return results


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Summary:
    figure: Figure
    concord: float  # median rate over rounds, or p50 ms over all samples
    peer: float
    ratio: float  # median over rounds of the Concord advantage (see Figure.goal)
    ratios: tuple[float, ...]  # per round
    p99: tuple[float, float] | None  # (Concord, peer) p99 ms for latencies

    @property
    def met(self) -> bool:
        return self.ratio >= self.figure.goal


def summarise(results: Results) -> list[Summary]:
    out = []
    for figure in results.figures:
        per_side = results.samples[figure.key]
        ours, theirs = per_side[CONCORD], per_side[PEER]
        if len(ours) != len(theirs) or not ours:
            raise ValueError(f"{figure.key}: unequal or no rounds ({len(ours)} vs {len(theirs)})")
        if figure.kind == "rate":
            round_ours = [statistics.median(r) for r in ours]
            round_theirs = [statistics.median(r) for r in theirs]
            ratios = tuple(a / b for a, b in zip(round_ours, round_theirs, strict=True))
            concord, peer = statistics.median(round_ours), statistics.median(round_theirs)
            p99 = None
        elif figure.kind == "latency":
            round_ours = [statistics.median(r) for r in ours]
            round_theirs = [statistics.median(r) for r in theirs]
            ratios = tuple(b / a for a, b in zip(round_ours, round_theirs, strict=True))
            all_ours = [v for r in ours for v in r]
            all_theirs = [v for r in theirs for v in r]
            concord, peer = _percentile(all_ours, 50) * 1e3, _percentile(all_theirs, 50) * 1e3
            p99 = (_percentile(all_ours, 99) * 1e3, _percentile(all_theirs, 99) * 1e3)
        else:
            raise ValueError(f"unknown figure kind {figure.kind!r}")
        out.append(Summary(figure, concord, peer, statistics.median(ratios), ratios, p99))
    return out


def rows(summaries: Sequence[Summary]) -> list[MetricRow]:
    """Report rows: both sides' values (Concord compared with the peer) and the ratio."""
    out: list[MetricRow] = []
    for s in summaries:
        f = s.figure
        if f.kind == "rate":
            out.append(MetricRow(f.name, f.split, PEER, s.peer))
            out.append(MetricRow(f.name, f.split, CONCORD, s.concord, PEER))
            what = "Concord / clip-as-service"
        else:
            assert s.p99 is not None
            out.append(MetricRow("p50 ms", f.split, PEER, s.peer))
            out.append(MetricRow("p50 ms", f.split, CONCORD, s.concord, PEER))
            out.append(MetricRow("p99 ms", f.split, PEER, s.p99[1]))
            out.append(MetricRow("p99 ms", f.split, CONCORD, s.p99[0], PEER))
            what = "clip-as-service p50 / Concord p50"
        out.append(MetricRow("advantage (median of rounds)", f.key, what, s.ratio))
        out.append(MetricRow("advantage goal", f.key, what, f.goal))
    return out


def verdict(summaries: Sequence[Summary]) -> str:
    """One markdown line per figure: ratio, per-round ratios, goal, met or not."""
    lines = []
    for s in summaries:
        rounds = ", ".join(f"{r:.2f}" for r in s.ratios)
        state = "met" if s.met else "NOT met"
        lines.append(
            f"- {s.figure.key}: Concord advantage {s.ratio:.2f}x (rounds: {rounds}); "
            f"goal >= {s.figure.goal:g}x: **{state}**"
        )
    return "\n".join(lines)
