"""Kafka ingest -> indexed throughput vs the encoder's ceiling, through a real broker.

    python -m benchmarks.kafka_ingest [--events 2000] [--batch 32]

Starts a single-node KRaft broker (tools/kafka), `concord serve encoder retrieval` with the
Kafka bus, publishes text IngestRequest events and times them until every Indexed event is
back. The ceiling is raw batched text encoding in this process (tokenize + forward, same
torch threads and OpenMP environment as the service; measured before and after, the better
kept). The service is sampled with py-spy during the ingest (benchmarks/profile.py). Writes
reports/bench_ingest.md and .json.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated

import torch
import typer

from benchmarks.harness import rate, serve
from benchmarks.profile import (
    SERVING_STAGES,
    child_pid,
    load_note,
    prioritise,
    same_threads,
    sample,
)
from concord.bus import topics
from concord.bus.kafka import KafkaBus
from concord.checkpoints import build_encoder, load_encoder, save_encoder
from concord.models.config import load_config
from concord.proto.v1 import common_pb2, events_pb2
from pipelines.evaluate.report import MetricRow, write_report
from tools.kafka.broker import KafkaBroker

app = typer.Typer(add_completion=False)


def _text(i: int) -> str:
    colours = ["red", "blue", "green", "yellow", "purple"]
    shapes = ["circle", "square", "star", "cross", "heart"]
    return f"{i}: a {colours[i % 5]} {shapes[(i // 5) % 5]} above a {colours[(i // 25) % 5]} star"


@app.command()
def main(
    events: Annotated[int, typer.Option(help="events to ingest")] = 2000,
    batch: Annotated[int, typer.Option(help="batch size of the raw ceiling")] = 32,
    threads: Annotated[int, typer.Option(help="torch threads here and in the service")] = 1,
    profile: Annotated[bool, typer.Option(help="py-spy the service during the ingest")] = True,
    out: Annotated[Path, typer.Option(help="report directory")] = Path("reports"),
) -> None:
    same_threads(threads, "benchmarks.kafka_ingest")
    prioritise()
    load_before = load_note()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        model = home / "encoder"
        save_encoder(*build_encoder(load_config("tiny")), model)
        encoder, tokenizer = load_encoder(model)
        texts = [_text(i) for i in range(batch)]

        @torch.inference_mode()
        def raw() -> int:
            tokens = tokenizer(texts)
            encoder.encode_text(tokens.input_ids, tokens.attention_mask)
            return len(texts)

        before = rate(raw, 3.0)

        broker = KafkaBroker()
        broker.start()
        try:
            env = {
                "CONCORD_ENCODER_MODEL": str(model),
                "CONCORD_BUS": "kafka",
                "CONCORD_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
                "CONCORD_DEVICE__TORCH_THREADS": str(threads),
            }
            with serve(["encoder", "retrieval"], home, **env):
                pid = child_pid()
                prioritise(pid)
                collection = f"bench-{uuid.uuid4().hex[:6]}"
                bus = KafkaBus(broker.bootstrap, group_prefix="bench")
                seen: set[str] = set()
                done = threading.Event()

                def on_indexed(message: events_pb2.Indexed, _: object) -> None:
                    if message.collection == collection:
                        seen.add(message.id)
                        if len(seen) >= events:
                            done.set()

                observer = bus.subscribe(
                    topics.INDEXED, f"obs-{collection}", on_indexed, events_pb2.Indexed
                ).start()
                profiling = sample(pid) if profile else contextlib.nullcontext(None)
                with profiling as prof:
                    started = time.perf_counter()
                    for i in range(events):
                        bus.publish(
                            topics.INGEST,
                            str(i),
                            events_pb2.IngestRequest(
                                collection=collection, item=common_pb2.Item(text=_text(i))
                            ),
                        )
                    bus.flush()
                    if not done.wait(600):
                        raise TimeoutError(f"only {len(seen)} of {events} events were indexed")
                    ingest_rate = events / (time.perf_counter() - started)
                observer.stop()
                bus.close()
        finally:
            broker.stop()
            broker.cleanup()
        ceiling = max(before, rate(raw, 3.0))
    load_after = load_note()
    notes = [
        f"torch threads {threads} (OMP_NUM_THREADS={threads}) here and in the service.",
        f"Load before: {load_before}; after: {load_after}.",
        "",
        "## Where the served time goes",
        "",
        "One process serves encoder and retrieval; the ingest worker's consumer thread "
        "encodes through the encoder's gRPC API and upserts into embedded Qdrant.",
        "",
    ]
    if prof is not None:
        extra = (
            ("Qdrant upsert", ("vectors/", "qdrant", "upsert")),
            ("Kafka consume/produce", ("kafka/", "concord/bus/")),
            ("retrieval indexing", ("services/retrieval/",)),
        )
        stages = (*SERVING_STAGES[:-2], *extra, *SERVING_STAGES[-2:])
        notes.append(prof.breakdown(stages, events).markdown("Profile: ingest (per event)"))

    split = f"{events} text events"
    rows = [
        MetricRow("texts/s", split, f"raw encode, batch {batch} (ceiling)", ceiling),
        MetricRow(
            "texts/s",
            split,
            "Kafka ingest -> Indexed",
            ingest_rate,
            f"raw encode, batch {batch} (ceiling)",
        ),
        MetricRow("ingest/ceiling", split, "Kafka ingest", ingest_rate / ceiling),
    ]
    files = write_report(
        "bench_ingest",
        rows,
        out,
        title="Kafka ingest vs the encoder ceiling",
        notes="\n".join(notes),
    )
    for row in rows:
        typer.echo(f"{row.metric:>16} {row.method:<44} {row.value:10.2f}")
    typer.echo("\n".join(notes))
    typer.echo(f"wrote {files.markdown}")


if __name__ == "__main__":
    app()
