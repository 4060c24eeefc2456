"""Search, raw vs served: the benchmark's Qdrant collection, the raw engine (vector and text
queries) and gRPC Search against it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gpu_bench_encoder_raw import Models
from benchmarks.gpu_bench_inputs import Sizes
from benchmarks.gpu_bench_report import Bench
from benchmarks.gpu_bench_serving import channels, client_rate
from benchmarks.harness import concurrent_rate, latencies, pct
from concord.devices import inference

COLLECTION = "bench-gpu"


def build_collection(bench: Bench, home: Path, sizes: Sizes, dim: int) -> Any:
    from concord.vectors import CollectionSpec, EdgeVectorStore, Point, point_id

    rng = np.random.default_rng(0)
    data = rng.standard_normal((sizes.points, dim)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    store = EdgeVectorStore(home / "vectors")
    store.create_collection(CollectionSpec(COLLECTION, dense={"dense": dim}))
    started = time.perf_counter()
    for lo in range(0, sizes.points, 5000):
        store.upsert(
            COLLECTION,
            [
                Point(point_id(str(i).encode()), {"dense": data[i]}, {"modality": "image", "i": i})
                for i in range(lo, min(lo + 5000, sizes.points))
            ],
        )
    store.optimize(COLLECTION)
    bench.facts["search collection"] = (
        f"{sizes.points} x {dim}, upsert + HNSW {time.perf_counter() - started:.1f} s"
    )
    return store


def raw_search(
    bench: Bench, store: Any, sizes: Sizes, queries: np.ndarray, m: Models, texts: list[str]
) -> None:
    device = bench.device
    precision = "bf16" if device.type == "cuda" else "fp32"
    cursor = iter(range(10**12))
    split = f"{sizes.points} x {queries.shape[1]}, top-10"

    def by_vector() -> int:
        store.search(COLLECTION, queries[next(cursor) % len(queries)], limit=10)
        return 1

    def by_text() -> int:
        tok = m.tokenizer([texts[next(cursor) % len(texts)]])
        with inference(device, precision):  # type: ignore[arg-type]
            vec = m.served_like.encode_text(tok.input_ids.to(device), tok.attention_mask.to(device))
        store.search(COLLECTION, vec.pooled.float().cpu().numpy()[0], limit=10)
        return 1

    for query, fn in (("vector", by_vector), ("text", by_text)):
        for c in (1, sizes.many):
            method = f"raw engine{' + forward' if query == 'text' else ''}, {c} clients"
            bench.measure(
                f"search {query} raw {c}",
                lambda query=query, fn=fn, c=c, method=method: bench.row(
                    "QPS", f"{query} query {split}", method, concurrent_rate(fn, c, sizes.seconds)
                ),
            )
        samples = bench.measure(
            f"search {query} raw latency", lambda fn=fn: latencies(fn, n=sizes.latency_calls * 4)
        )
        if samples is not None:
            bench.row("p50 ms", f"{query} query {split}", "raw", pct(samples, 50) * 1e3)


def served_search(
    bench: Bench, sizes: Sizes, address: str, queries: np.ndarray, texts: list[str]
) -> None:
    from concord.proto.v1 import common_pb2, retrieval_pb2, retrieval_pb2_grpc

    chans = channels(address, sizes.many)
    stubs = [retrieval_pb2_grpc.RetrievalServiceStub(c) for c in chans]
    split = f"{sizes.points} x {queries.shape[1]}, top-10"
    by_vector = [
        retrieval_pb2.SearchRequest(
            collection=COLLECTION,
            vector=common_pb2.Embedding(values=q.tolist()),
            top_k=10,
            with_payload=True,
        )
        for q in queries
    ]
    by_text = [
        retrieval_pb2.SearchRequest(collection=COLLECTION, text=t, top_k=10, with_payload=True)
        for t in texts
    ]
    cursor = iter(range(10**12))
    for query, requests in (("vector", by_vector), ("text", by_text)):

        def call(stub: Any, requests: list = requests) -> int:
            response = stub.Search(requests[next(cursor) % len(requests)], timeout=60)
            if not response.hits:
                raise AssertionError("Search answered no hits")
            return 1

        for c in (1, sizes.many):
            method = f"gRPC Search, {c} clients"
            base = f"raw engine{' + forward' if query == 'text' else ''}, {c} clients"
            bench.measure(
                f"search {query} served {c}",
                lambda query=query, c=c, method=method, base=base, call=call: bench.row(
                    "QPS",
                    f"{query} query {split}",
                    method,
                    client_rate(stubs, call, c, sizes.seconds),
                    base if bench.has("QPS", f"{query} query {split}", base) else None,
                ),
            )
        samples = bench.measure(
            f"search {query} served latency",
            lambda call=call: latencies(lambda: call(stubs[0]), n=sizes.latency_calls * 4),
        )
        if samples is not None:
            base = "raw" if bench.has("p50 ms", f"{query} query {split}", "raw") else None
            bench.row("p50 ms", f"{query} query {split}", "gRPC", pct(samples, 50) * 1e3, base)
    for c in chans:
        c.close()
