"""Goodput under overload with deadlines: the encoder in its own process, callers arriving
open-loop at a multiple of its measured capacity, each with a deadline.

    python -m benchmarks.overload [--load 2.0] [--deadline 2.0] [--seconds 20]

1. Capacity: texts/s with enough concurrent single-text callers to keep the batcher full.
2. Overload: arrivals at `load` x capacity (Poisson, one asyncio client: a task per call, so
   arrivals are never throttled), each call with `deadline` seconds. Counted: answered in time (goodput),
   refused early (DEADLINE_EXCEEDED within 10% of the deadline, RESOURCE_EXHAUSTED), expired
   (DEADLINE_EXCEEDED at the deadline), and the latency of the answered calls.

Goal (issue 18): goodput >= 80% of capacity at 2x load, admitted p99 within the deadline.
Before deadline-aware admission, 260 of 11,676 calls (2%) were answered at 2x load. Writes
reports/bench_overload.md and .json.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import grpc
import numpy as np
import typer

from benchmarks.harness import pct, serve
from concord.checkpoints import build_encoder, save_encoder
from concord.models.config import load_config
from concord.proto.v1 import encoder_pb2, encoder_pb2_grpc
from pipelines.evaluate.report import MetricRow, mean_over_seeds, write_report

app = typer.Typer(add_completion=False)


def _request(i: int) -> encoder_pb2.EncodeTextsRequest:
    return encoder_pb2.EncodeTextsRequest(texts=[f"a red circle left of a blue square {i}"])


@dataclass
class Phase:
    outcomes: Counter[str]
    answered: list[float]


# The callers are one asyncio gRPC client in this process: an open-loop generator whose own cost
# per call is small, so that on a small machine the load it offers is not paid for with the
# server's CPU. (A thread per in-flight call, as before, made the caller process the largest
# consumer of the two cores at 2x load, and the server's measured goodput mostly measured that.)


async def _capacity(address: str, clients: int, seconds: float) -> float:
    """Texts/s with `clients` concurrent callers in a closed loop (the batcher kept full)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = encoder_pb2_grpc.EncoderServiceStub(channel)
        await stub.EncodeTexts(_request(0), timeout=60)  # warm-up
        done = 0
        stop_at = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                await stub.EncodeTexts(_request(done), timeout=60)
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(clients)))
        return done / (time.perf_counter() - started)


async def _overload(address: str, rate: float, deadline: float, seconds: float) -> Phase:
    """Open-loop Poisson arrivals at `rate` for `seconds`, each call with `deadline`."""
    phase = Phase(Counter(), [])
    async with grpc.aio.insecure_channel(address) as channel:
        stub = encoder_pb2_grpc.EncoderServiceStub(channel)

        async def call(i: int) -> None:
            started = time.perf_counter()
            try:
                await stub.EncodeTexts(_request(i), timeout=deadline)
                kind = "ok"
                phase.answered.append(time.perf_counter() - started)
            except grpc.aio.AioRpcError as err:
                took = time.perf_counter() - started
                code = err.code()
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    kind = "shed"
                elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    kind = "refused early" if took < 0.9 * deadline else "expired"
                else:
                    kind = code.name
            phase.outcomes[kind] += 1

        rng = np.random.default_rng(0)
        calls: list[asyncio.Task[None]] = []
        started = time.perf_counter()
        i, next_at = 0, started
        while next_at - started < seconds:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            # Every caller whose time has come, even when the loop woke late.
            while next_at <= time.perf_counter() and next_at - started < seconds:
                calls.append(asyncio.create_task(call(i)))
                i += 1
                next_at += rng.exponential(1.0 / rate)
        await asyncio.gather(*calls)
    return phase


def _rows(
    label: str, phase: Phase, capacity: float, seconds: float, load: float
) -> list[MetricRow]:
    total = sum(phase.outcomes.values())
    goodput = phase.outcomes["ok"] / seconds
    p99 = pct(np.asarray(phase.answered), 99) if phase.answered else float("nan")
    split = f"{load:g}x load"
    base = None if label == BASELINE else BASELINE
    return [
        MetricRow("goodput / capacity", split, label, goodput / capacity, base),
        MetricRow("answered p99 (s)", split, label, p99, base),
        *(
            MetricRow(f"share of calls: {kind}", split, label, phase.outcomes[kind] / total)
            for kind in ("ok", "refused early", "expired", "shed")
        ),
    ]


BASELINE = "FIFO, every call admitted"
ADMISSION = "deadline-aware admission"


@app.command()
def main(
    load: Annotated[float, typer.Option(help="arrival rate as a multiple of capacity")] = 2.0,
    deadline: Annotated[float, typer.Option(help="seconds each caller waits")] = 2.0,
    seconds: Annotated[float, typer.Option(help="length of each overload phase")] = 20.0,
    clients: Annotated[int, typer.Option(help="callers that measure capacity")] = 32,
    rounds: Annotated[
        int, typer.Option(help="FIFO/admission pairs, alternated; rows are their mean and std")
    ] = 3,
    out: Annotated[Path, typer.Option(help="report directory")] = Path("reports"),
) -> None:
    per_round: list[list[MetricRow]] = []
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        model = home / "encoder"
        save_encoder(*build_encoder(load_config("tiny")), model)
        for k in range(rounds):
            rows: list[MetricRow] = []
            for label, admission in ((BASELINE, "false"), (ADMISSION, "true")):
                env = {
                    "CONCORD_ENCODER_MODEL": str(model),
                    "CONCORD_BATCHING__DEADLINE_ADMISSION": admission,
                }
                with serve(["encoder"], home, **env) as served:
                    address = served.address("encoder")
                    capacity = asyncio.run(_capacity(address, clients, 5.0))
                    phase = asyncio.run(_overload(address, load * capacity, deadline, seconds))
                rows += _rows(label, phase, capacity, seconds, load)
                rows.append(MetricRow("capacity (texts/s)", "closed loop", label, capacity))
                good = phase.outcomes["ok"] / seconds / capacity
                notes.append(
                    f"round {k + 1}, {label}: capacity {capacity:.0f} texts/s;"
                    f" {sum(phase.outcomes.values())} calls at {load * capacity:.0f}/s;"
                    f" goodput/capacity {good:.2f}; outcomes {dict(phase.outcomes)};"
                    f" load average {os.getloadavg()[0]:.1f}."
                )
            per_round.append(rows)
    rows = mean_over_seeds(per_round)
    text = (
        f"Each phase: the encoder (tiny, random weights) in its own process, callers arriving"
        f" open-loop at {load:g} x its capacity measured just before, for {seconds:g} s, each"
        f" with a {deadline:g} s deadline; the same run measures the FIFO baseline"
        f" (CONCORD_BATCHING__DEADLINE_ADMISSION=false), alternating with admission for"
        f" {rounds} round(s); with several rounds each row is their mean ± std. Goal (issue 18):"
        f" goodput >= 0.8 x capacity, answered p99 within the deadline.\n\n"
        + "\n".join(f"- {n}" for n in notes)
    )
    files = write_report("bench_overload", rows, out, title="Overload with deadlines", notes=text)
    typer.echo(f"wrote {files.markdown}")


if __name__ == "__main__":
    app()
