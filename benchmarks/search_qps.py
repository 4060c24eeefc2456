"""Search through gRPC vs the raw Qdrant engine on the same vectors: QPS and p50/p99.

    python -m benchmarks.search_qps [--points 100000] [--dim 128] [--seconds 5]

The collection is built and optimised (HNSW) by the embedded engine in this process, timed
raw, closed, then served by `concord serve retrieval` from the same directory (one process
owns a shard). Queries are raw vectors, so the encoder is not part of the measurement.
Writes reports/bench_search.md and .json.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated

import grpc
import numpy as np
import typer

from benchmarks.harness import latencies, pct, serve
from concord.proto.v1 import common_pb2, retrieval_pb2, retrieval_pb2_grpc
from concord.vectors import CollectionSpec, EdgeVectorStore, Point, point_id
from pipelines.evaluate.report import MetricRow, write_report

COLLECTION = "bench-v1"
app = typer.Typer(add_completion=False)


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@app.command()
def main(
    points: Annotated[int, typer.Option(help="vectors in the collection")] = 100_000,
    dim: Annotated[int, typer.Option(help="vector size")] = 128,
    queries: Annotated[int, typer.Option(help="distinct query vectors")] = 500,
    top_k: Annotated[int, typer.Option(help="hits per query")] = 10,
    out: Annotated[Path, typer.Option(help="report directory")] = Path("reports"),
) -> None:
    rng = np.random.default_rng(0)
    data, query_vectors = _unit(rng, points, dim), _unit(rng, queries, dim)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        store = EdgeVectorStore(home / "vectors")
        store.create_collection(CollectionSpec(COLLECTION, dense={"dense": dim}))
        started = time.perf_counter()
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
        build_seconds = time.perf_counter() - started
        cursor = iter(range(10**9))

        def raw() -> None:
            store.search(COLLECTION, query_vectors[next(cursor) % queries], limit=top_k)

        raw_lat = latencies(raw, n=1000)
        store.close()

        with serve(["retrieval"], home) as served:
            channel = grpc.insecure_channel(served.address("retrieval"))
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            requests = [
                retrieval_pb2.SearchRequest(
                    collection=COLLECTION,
                    vector=common_pb2.Embedding(values=q.tolist()),
                    top_k=top_k,
                    with_payload=True,
                )
                for q in query_vectors
            ]
            served_lat = latencies(lambda: stub.Search(requests[next(cursor) % queries]), n=1000)
            channel.close()

    split = f"{points} x {dim}, top-{top_k}"
    rows = [
        MetricRow("QPS (1 client)", split, "raw engine", 1 / raw_lat.mean()),
        MetricRow("QPS (1 client)", split, "gRPC Search", 1 / served_lat.mean(), "raw engine"),
        MetricRow("served/raw QPS", split, "gRPC Search", raw_lat.mean() / served_lat.mean()),
        MetricRow("build s", split, "upsert + HNSW", build_seconds),
    ]
    for q in (50, 99):
        rows.append(MetricRow(f"p{q} ms", split, "raw engine", pct(raw_lat, q) * 1e3))
        rows.append(
            MetricRow(f"p{q} ms", split, "gRPC Search", pct(served_lat, q) * 1e3, "raw engine")
        )
    files = write_report("bench_search", rows, out, title="Search: gRPC vs the raw Qdrant engine")
    for row in rows:
        typer.echo(f"{row.metric:>16} {row.method:<16} {row.value:10.2f}")
    typer.echo(f"wrote {files.markdown}")


if __name__ == "__main__":
    app()
