"""Search through gRPC vs the raw Qdrant engine on the same vectors: QPS and p50/p99 at 1 client
and at N concurrent clients, with a profile of where the served time goes.

    python -m benchmarks.search_qps [--points 100000] [--dim 128] [--clients 8] [--rounds 3]

The collection is built and optimised (HNSW) by the embedded engine in this process, then
copied: the raw ceiling (`EdgeVectorStore.search` in this process, one thread per client)
runs on one copy while `concord serve retrieval` serves the other (one process owns a shard),
so the two are measured in alternating short rounds of one run, and each ratio comes from
the same rounds. Queries are raw vectors, so the encoder is not part of the measurement.

The notes of the report break the served time down three ways: process CPU per search
(server, client and raw), a py-spy profile of the server under load grouped into stages,
and per-stage timers of the handler's own steps run in this process on the raw copy.
Writes reports/bench_search.md and .json.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import grpc
import numpy as np
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.harness import serve
from benchmarks.profile import Stages, StageTimer, child_pid, load_note, prioritise, sample
from concord.config import load_settings
from concord.proto.v1 import common_pb2, retrieval_pb2, retrieval_pb2_grpc
from concord.vectors import CollectionSpec, EdgeVectorStore, Point, point_id
from concord.wire import model_ref
from pipelines.evaluate.report import MetricRow, write_report
from services.retrieval import convert, search
from services.retrieval.engine import Retrieval
from services.retrieval.servicer import RetrievalServicer

COLLECTION = "bench-v1"
app = typer.Typer(add_completion=False)

# Frames of the retrieval server, innermost match wins (see benchmarks.profile.classify).
SEARCH_STAGES: Stages = (
    ("Qdrant engine call", ("search_batch.<locals>", "functools.partial", "EdgeVectorStore._each")),
    ("engine hits -> ScoredPoint", ("_scored", "_out_id")),
    ("query checks + engine request", ("_dense_request", "query_dense", "as_vector", "check_")),
    ("hits -> proto (payloads)", ("add_hits", "_fill_struct")),
    ("request validation (spec, filter)", ("search_spec", "filter_from_proto", "dense_query")),
    ("catalog lookup", ("Collections.", "Retrieval._entry")),
    ("search runner (inline / batch hand-off)", ("SearchRunner", "_hand_back", "_settle")),
    ("worker-thread handoff", ("concurrent/futures", "to_thread", "run_in_executor")),
    ("servicer + engine glue", ("retrieval/servicer.py", "retrieval/engine.py")),
    ("interceptor (auth, deadline, metrics)", ("interceptors.py", "prometheus_client")),
    ("grpc runtime (cygrpc: calls, parse, serialize)", ("grpc/", "Handle._run", "protobuf")),
    ("event loop (epoll, scheduling)", ("asyncio/", "selectors.py")),
)


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build(root: Path, points: int, dim: int) -> float:
    """Create and optimise the collection under `root/vectors`. Returns: seconds taken."""
    data = _unit(np.random.default_rng(0), points, dim)
    started = time.perf_counter()
    with EdgeVectorStore(root / "vectors") as store:
        store.create_collection(CollectionSpec(COLLECTION, dense={"dense": dim}))
        for lo in range(0, points, 5000):
            store.upsert(
                COLLECTION,
                [
                    Point(
                        point_id(str(i).encode()), {"dense": data[i]}, {"modality": "image", "i": i}
                    )
                    for i in range(lo, min(lo + 5000, points))
                ],
            )
        store.optimize(COLLECTION)
    return time.perf_counter() - started


@contextmanager
def built(cache: Path | None, points: int, dim: int) -> Iterator[tuple[Path, float]]:
    """The built collection's directory (reused from `cache` when it holds this size) and
    the build seconds (measured when it was built)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = cache or Path(tmp) / "built"
        meta = root / "meta.json"
        wanted = {"points": points, "dim": dim}
        if meta.is_file() and json.loads(meta.read_text()).get("size") == wanted:
            yield root, float(json.loads(meta.read_text())["build_seconds"])
            return
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        seconds = build(root, points, dim)
        meta.write_text(json.dumps({"size": wanted, "build_seconds": seconds}))
        yield root, seconds


# ----------------------------------------------------------------------------- load


@dataclass
class Mode:
    """Every round of one (path, clients) pair."""

    latencies: list[float] = field(default_factory=list)  # seconds per call, all rounds
    qps: list[float] = field(default_factory=list)  # per round
    cpu: list[float] = field(default_factory=list)  # process CPU seconds per call, per round
    server_cpu: list[float] = field(default_factory=list)

    def p(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1e3


def run_clients(call: Callable[[int], object], clients: int, seconds: float) -> tuple[list, float]:
    """`clients` threads calling `call(i)` in a loop for `seconds`. Returns: latencies, QPS."""
    per: list[list[float]] = [[] for _ in range(clients)]
    stop = threading.Event()

    def loop(k: int) -> None:
        out, i = per[k], k
        while not stop.is_set():
            started = time.perf_counter()
            call(i)
            out.append(time.perf_counter() - started)
            i += clients

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    flat = [x for lat in per for x in lat]
    return flat, len(flat) / elapsed


def process_cpu(pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by a process (default: this one)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    mode: Mode, call: Callable[[int], object], clients: int, seconds: float, server: int | None
) -> None:
    cpu0, server0 = process_cpu(), process_cpu(server) if server else 0.0
    lat, qps = run_clients(call, clients, seconds)
    n = max(len(lat), 1)
    mode.cpu.append((process_cpu() - cpu0) / n)
    if server:
        mode.server_cpu.append((process_cpu(server) - server0) / n)
    mode.latencies += lat
    mode.qps.append(qps)


# ----------------------------------------------------------------------------- stages


def handler_stages(
    store: EdgeVectorStore, requests: list[retrieval_pb2.SearchRequest], n: int
) -> tuple[StageTimer, float]:
    """Per-stage wall time of the Search handler's own steps, one request at a time, in this
    process on the raw copy (the code the server runs, called step by step), and the
    handler's mean seconds per request when run whole (servicer._search, incl. the runner).
    """
    timer = StageTimer()
    blobs = [r.SerializeToString() for r in requests]

    async def go() -> float:
        engine = Retrieval(load_settings())
        await engine.start(store)
        try:
            for i in range(n):
                blob = blobs[i % len(blobs)]
                with timer("request parse (bytes -> message)"):
                    request = retrieval_pb2.SearchRequest.FromString(blob)
                with timer("request validation (spec, top_k, filter)"):
                    spec = convert.search_spec(request)
                    request.WhichOneof("query")
                with timer("catalog lookup (cached entry)"):
                    entry = await engine._entry(request.collection)
                with timer("query vector proto -> numpy + checks"):
                    vector = np.asarray(request.vector.values, dtype=np.float32)
                    search.check_vector(vector, entry.dim)
                with timer("store query build (filter)"):
                    query = search.dense_query(spec, vector)
                with timer("Qdrant call (EdgeVectorStore.search_batch)"):
                    hits = store.search_batch(entry.name, [query])[0]
                assert isinstance(hits, list)
                with timer("hits -> proto (ids, scores, payloads)"):
                    response = retrieval_pb2.SearchResponse(
                        model=model_ref(entry.model), collection=entry.name
                    )
                    convert.add_hits(response.hits, hits)
                with timer("response serialize"):
                    response.SerializeToString()
            servicer = RetrievalServicer(engine, None)  # type: ignore[arg-type]
            started = time.perf_counter()
            for i in range(n):
                await servicer._search(requests[i % len(requests)])
            return (time.perf_counter() - started) / n
        finally:
            await engine.stop()

    whole = asyncio.run(go())
    return timer, whole


def stage_table(timer: StageTimer, n: int, whole: float, served_mean: float) -> str:
    total = sum(timer.seconds.values())
    lines = [
        "| stage | ms / request | share of served latency |",
        "|---|---:|---:|",
    ]
    for stage, s in timer.seconds.items():
        lines.append(f"| {stage} | {s * 1e3 / n:.3f} | {s / n / served_mean:.1%} |")
    rest = served_mean - whole
    lines += [
        f"| *sum of the steps* | {total * 1e3 / n:.3f} | {total / n / served_mean:.1%} |",
        f"| *handler whole (servicer._search)* | {whole * 1e3:.3f} | {whole / served_mean:.1%} |",
        f"| gRPC (client stub, transport, aio server, interceptor): served - handler "
        f"| {rest * 1e3:.3f} | {rest / served_mean:.1%} |",
        f"| **served mean latency, 1 client** | **{served_mean * 1e3:.3f}** | 100% |",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


@app.command()
def main(
    points: Annotated[int, typer.Option(help="vectors in the collection")] = 100_000,
    dim: Annotated[int, typer.Option(help="vector size")] = 128,
    queries: Annotated[int, typer.Option(help="distinct query vectors")] = 500,
    top_k: Annotated[int, typer.Option(help="hits per query")] = 10,
    clients: Annotated[int, typer.Option(help="concurrent clients (and raw threads)")] = 8,
    rounds: Annotated[int, typer.Option(help="alternating raw/served rounds")] = 3,
    seconds: Annotated[float, typer.Option(help="seconds per round and mode")] = 2.0,
    profile: Annotated[bool, typer.Option(help="py-spy the server (if installed)")] = True,
    cache: Annotated[
        Path | None, typer.Option(help="keep the built collection here and reuse it")
    ] = None,
    out: Annotated[Path, typer.Option(help="report directory")] = Path("reports"),
) -> None:
    prioritise()
    query_vectors = _unit(np.random.default_rng(1), queries, dim)
    with built(cache, points, dim) as (source, build_seconds), tempfile.TemporaryDirectory() as tmp:
        raw_home, served_home = Path(tmp) / "raw", Path(tmp) / "served"
        shutil.copytree(source / "vectors", raw_home / "vectors")
        shutil.copytree(source / "vectors", served_home / "vectors")
        store = EdgeVectorStore(raw_home / "vectors")
        requests = [
            retrieval_pb2.SearchRequest(
                collection=COLLECTION,
                vector=common_pb2.Embedding(values=q.tolist()),
                top_k=top_k,
                with_payload=True,
            )
            for q in query_vectors
        ]

        def raw(i: int) -> object:
            return store.search(COLLECTION, query_vectors[i % queries], limit=top_k)

        modes = {(path, c): Mode() for path in ("raw", "served") for c in (1, clients)}
        with serve(["retrieval"], served_home) as served:
            server = child_pid("serve")
            prioritise(server)
            address = served.address("retrieval")
            channels = [grpc.insecure_channel(address) for _ in range(clients)]
            stubs = [retrieval_pb2_grpc.RetrievalServiceStub(c) for c in channels]

            def grpc_call(i: int) -> object:
                return stubs[i % clients].Search(requests[i % queries])

            for i in range(200):  # warm both copies and every channel
                raw(i)
                grpc_call(i)
            load_before = load_note()
            for _ in range(rounds):
                for c in (1, clients):
                    measure(modes[("raw", c)], raw, c, seconds, None)
                    measure(modes[("served", c)], grpc_call, c, seconds, server)
            load_after = load_note()
            health = health_pb2_grpc.HealthStub(channels[0])
            floor = Mode()
            measure(
                floor,
                lambda i: health.Check(health_pb2.HealthCheckRequest()),  # type: ignore[attr-defined]
                1,
                1.0,
                server,
            )
            profiles = []
            if profile:
                for c in (1, clients):
                    with sample(server, rate=250) as prof:
                        _, qps = run_clients(grpc_call, c, seconds)
                    breakdown = prof.breakdown(SEARCH_STAGES, requests=int(qps * prof.seconds))
                    profiles.append(breakdown.markdown(f"server profile, {c} client(s)"))
            for ch in channels:
                ch.close()
        stage_n = 1000
        timer, whole = handler_stages(store, requests, stage_n)
        store.close()

    split = f"{points} x {dim}, top-{top_k}"
    rows: list[MetricRow] = []
    summary: list[str] = []
    for c in (1, clients):
        r, s = modes[("raw", c)], modes[("served", c)]
        ratios = [b / a for a, b in zip(r.qps, s.qps, strict=True)]
        tag = f"{c} client" + ("s" if c > 1 else "")
        raw_name = "raw engine" if c == 1 else f"raw engine ({c} threads)"
        rows += [
            MetricRow(f"QPS ({tag})", split, raw_name, statistics.median(r.qps)),
            MetricRow(f"QPS ({tag})", split, "gRPC Search", statistics.median(s.qps), raw_name),
            MetricRow(f"served/raw QPS ({tag})", split, "gRPC Search", statistics.median(ratios)),
        ]
        for q in (50, 99):
            rows.append(MetricRow(f"p{q} ms ({tag})", split, raw_name, r.p(q)))
            rows.append(MetricRow(f"p{q} ms ({tag})", split, "gRPC Search", s.p(q), raw_name))
        summary.append(
            f"| {c} | {statistics.median(r.qps):.0f} | {statistics.median(s.qps):.0f} | "
            f"{statistics.median(ratios):.2f} ({', '.join(f'{x:.2f}' for x in ratios)}) | "
            f"{r.p(50):.2f} / {r.p(99):.2f} | {s.p(50):.2f} / {s.p(99):.2f} | "
            f"{statistics.median(r.cpu) * 1e3:.2f} | {statistics.median(s.server_cpu) * 1e3:.2f} "
            f"| {statistics.median(s.cpu) * 1e3:.2f} |"
        )
    bounds = []
    for c in (1, clients):
        r, s = modes[("raw", c)], modes[("served", c)]
        raw_cpu = statistics.median(r.cpu)
        served_cpu = statistics.median(s.server_cpu) + statistics.median(s.cpu)
        bounds.append(
            f"{c} client(s): {raw_cpu * 1e3:.2f} / {served_cpu * 1e3:.2f} = "
            f"{raw_cpu / served_cpu:.2f}"
        )
    rows.append(MetricRow("build s", split, "upsert + HNSW", build_seconds))
    served_mean = float(np.mean(modes[("served", 1)].latencies))
    notes = "\n".join(
        [
            f"Load: {load_before} before the rounds, {load_after} after. {rounds} alternating "
            f"rounds of {seconds:.0f} s per mode; QPS and ratios are medians over rounds "
            "(each round's ratio in brackets), percentiles pool every round.",
            "",
            "| clients | raw QPS | gRPC QPS | served/raw | raw p50 / p99 ms | gRPC p50 / p99 ms "
            "| raw process CPU ms / search | server CPU ms / search | client CPU ms / search |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *summary,
            "",
            "CPU per search bounds the ratio where the cores are the limit (2 shared cores: "
            "always, here): served/raw <= raw CPU / (server + client CPU) per search, i.e. "
            + "; ".join(bounds)
            + ".",
            "",
            f"gRPC floor on the same server and client: Health/Check p50 {floor.p(50):.2f} ms, "
            f"{floor.server_cpu[0] * 1e3:.2f} ms server CPU and {floor.cpu[0] * 1e3:.2f} ms "
            "client CPU per call (an empty unary call through grpc.aio, no interceptor).",
            "",
            f"**Search handler step by step** (this process, raw copy, {stage_n} requests one "
            "at a time; the gRPC row is the 1-client served mean less the whole handler):",
            "",
            stage_table(timer, stage_n, whole, served_mean),
            "",
            "py-spy runs beside the server for the profiles (the request counts there are "
            "lower than in the rounds above: sampling costs CPU too) and, attached without "
            "pausing the server, cannot always tell a thread waiting in epoll or on the thread "
            "pool's queue from a busy one: the event-loop and hand-off rows include such idle "
            "waits; read the shares of the other rows against each other, and the exact CPU "
            "per search from the table above.",
            "",
            *profiles,
        ]
    )
    files = write_report(
        "bench_search", rows, out, title="Search: gRPC vs the raw Qdrant engine", notes=notes
    )
    typer.echo(notes)
    for row in rows:
        typer.echo(f"{row.metric:>24} {row.method:<24} {row.value:10.2f}")
    typer.echo(f"wrote {files.markdown}")


if __name__ == "__main__":
    app()
