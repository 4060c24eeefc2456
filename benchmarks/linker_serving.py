"""Linker serving vs the same work in process: LinkMentions through gRPC (decode, featurize the
mentions, ANN candidates from each modality, M3EL re-rank) against `LinkerServable.link_sync`
on the same knowledge base, in one run; candidate recall@K of the ANN search (HNSW) beside
exact search, and mentions/s.

    python -m benchmarks.linker_serving [--entities 100000] [--queries 200] [--seconds 5]

The knowledge base holds synthetic vectors (building 100,000 entities through a model would
measure the encoder, not linking): per query mention one gold entity, its features the
mention's own plus noise, `confusers` near-duplicates with more noise, and random entities drawn
from the per-dimension statistics of real features; every fused vector comes from M3EL itself.
The mentions are real (text + half with an image) through a tiny random encoder and a random
M3EL: speed and ANN recall do not depend on what the weights learned. The KB is built and
optimised (HNSW) in this process, measured in process, closed, served by `concord serve linker`
from the same home (one process owns a shard), then measured in process again (the better in-
process figure is kept, so load from other processes does not fake a ratio).
Writes reports/bench_linker.md and .json.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, cast

import grpc
import numpy as np
import torch
import typer

from benchmarks.harness import concurrent_rate, latencies, pct, serve
from concord.checkpoints import build_encoder, save_encoder
from concord.checkpoints.linker import write_linker_package
from concord.config import Settings
from concord.devices import default_threads
from concord.media import decode_image, encode_png
from concord.models.config import load_config
from concord.models.linking import M3EL, M3ELConfig
from concord.models.linking.features import EntityFeatures
from concord.proto.v1 import common_pb2, linker_pb2, linker_pb2_grpc
from concord.registry import Registry
from concord.vectors import EdgeVectorStore, ScoredPoint
from pipelines.evaluate.report import MetricRow, write_report
from services.linker.kb import EntityRecord, KnowledgeBases
from services.linker.servable import LinkerServable
from services.linker.types import LinkIn, MentionIn

app = typer.Typer(add_completion=False)
KB = "bench"
N_LATENCY = 30
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "star", "cross", "triangle"]


def _package(home: Path) -> Path:
    encoder = home / "encoder"
    save_encoder(*build_encoder(load_config("tiny"), seed=0), encoder)
    dim = load_config("tiny").embed_dim
    config = M3ELConfig(hidden=32, heads=4)
    torch.manual_seed(0)
    return write_linker_package(home / "linker", M3EL(config, dim, dim), config, str(encoder))


def _mentions(n: int, image_size: int) -> tuple[list[MentionIn], list[bytes | None]]:
    rng = np.random.default_rng(0)
    mentions, pngs = [], []
    for i in range(n):
        name = f"{COLOURS[i % 6].title()} {SHAPES[(i // 6) % 5].title()} {i}"
        text = f"Yesterday I saw {name} near the {SHAPES[(i + 2) % 5]} by the river"
        start = text.index(name)
        data = None
        if i % 2 == 0:
            pixels = rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8)
            data = encode_png(pixels)
        image = decode_image(data) if data is not None else None
        mentions.append(MentionIn(text, (start, start + len(name)), image))
        pngs.append(data)
    return mentions, pngs


def _build_kb(
    servable: LinkerServable,
    kbs: KnowledgeBases,
    mentions: Sequence[MentionIn],
    entities: int,
    confusers: int,
    noise: float,
) -> list[str]:
    """Fill the KB; returns the gold entity id of each mention."""
    loaded = servable.require()
    m3el = loaded.m3el
    from concord.models.linking.features import featurize_mentions
    from concord.models.preprocess import images_to_tensor

    encoder = loaded.encoder.torch_model()
    with torch.inference_mode():
        features = featurize_mentions(
            encoder,
            loaded.encoder.tokenizer,
            [m.text for m in mentions],
            [m.span for m in mentions],
            [
                images_to_tensor([m.image], loaded.image_size)[0] if m.image else None
                for m in mentions
            ],
        )
    text = features.text_global.numpy()
    image = features.image_global.numpy()
    has_image = features.has_image.numpy()
    rng = np.random.default_rng(1)
    t_mu, t_sd = text.mean(0), text.std(0) + 1e-3
    with_image = image[has_image]
    i_mu, i_sd = with_image.mean(0), with_image.std(0) + 1e-3
    scale_t = float(np.linalg.norm(text, axis=1).mean())
    scale_i = float(np.linalg.norm(with_image, axis=1).mean())

    rows_text, rows_image, rows_has, ids = [], [], [], []
    gold = []
    for q in range(len(mentions)):
        for c in range(confusers + 1):
            sigma = noise * (1.0 if c == 0 else 2.0)
            t = text[q] + rng.standard_normal(text.shape[1]) * sigma * scale_t / np.sqrt(
                text.shape[1]
            )
            img = image[q] if has_image[q] else rng.normal(i_mu, i_sd)
            im = img + rng.standard_normal(image.shape[1]) * sigma * scale_i / np.sqrt(
                image.shape[1]
            )
            rows_text.append(t)
            rows_image.append(im)
            rows_has.append(True)
            ids.append(f"q{q}-{'gold' if c == 0 else c}")
        gold.append(f"q{q}-gold")
    filler = entities - len(ids)
    rows_text += list(rng.normal(t_mu, t_sd, (filler, text.shape[1])))
    rows_image += list(rng.normal(i_mu, i_sd, (filler, image.shape[1])))
    rows_has += list(rng.random(filler) < 0.7)  # some entities without an image
    ids += [f"r{i}" for i in range(filler)]
    loaded_id = loaded.id
    kbs.ensure(KB, loaded_id, loaded.dims)
    chunk = 5000
    for start in range(0, len(ids), chunk):
        t = torch.tensor(np.array(rows_text[start : start + chunk]), dtype=torch.float32)
        i = torch.tensor(np.array(rows_image[start : start + chunk]), dtype=torch.float32)
        h = torch.tensor(rows_has[start : start + chunk])
        i = i * h[:, None]
        with torch.inference_mode():
            fused = m3el.entity_embedding(EntityFeatures(t, i, h)).numpy()
        records = [
            EntityRecord(
                ids[start + j],
                ids[start + j],
                "",
                {},
                int(h[j]),
                t[j].numpy(),
                i[j].numpy() if h[j] else None,
                fused[j],
            )
            for j in range(len(t))
        ]
        kbs.upsert(KB, records)
    return gold


def _recall(
    servable: LinkerServable,
    kbs: KnowledgeBases,
    mentions: Sequence[MentionIn],
    gold: list[str],
    exact: bool,
    top_k: int,
) -> tuple[float, float]:
    """Fractions of mentions whose gold entity is among the ANN candidates (the union of every
    modality's), and among the first `top_k` after M3EL's re-rank."""
    original = kbs.search

    def search(
        name: str, using: str, vector: np.ndarray, limit: int, exact_: bool = exact
    ) -> list[ScoredPoint]:
        return original(name, using, vector, limit, exact=exact_)

    kbs.search = search  # type: ignore[method-assign]
    found = ranked_top = 0
    try:
        for m, g in zip(mentions, gold, strict=True):
            ranked = servable.link_sync([LinkIn(KB, m, 3 * servable.candidates)])[0]
            ids = [r.entity_id for r in ranked]
            found += g in ids
            ranked_top += g in ids[:top_k]
    finally:
        kbs.search = original  # type: ignore[method-assign]
    return found / len(mentions), ranked_top / len(mentions)


def _in_process(
    servable: LinkerServable, mentions: Sequence[MentionIn], batch: int, seconds: float, top_k: int
) -> tuple[float, np.ndarray]:
    items = [LinkIn(KB, m, top_k) for m in mentions]
    position = [0]

    def one_batch() -> int:
        start = position[0] % len(items)
        chunk = (items + items)[start : start + batch]
        position[0] += batch
        servable.link_sync(chunk)
        return len(chunk)

    from benchmarks.harness import rate

    per_second = rate(one_batch, seconds)
    single = latencies(lambda: servable.link_sync(items[:1]), n=N_LATENCY)
    return per_second, single


@app.command()
def main(
    entities: Annotated[int, typer.Option(help="entities in the knowledge base")] = 100_000,
    queries: Annotated[int, typer.Option(help="distinct mentions")] = 200,
    confusers: Annotated[int, typer.Option(help="near-duplicates per gold entity")] = 20,
    noise: Annotated[float, typer.Option(help="relative noise of a gold entity's features")] = 0.5,
    candidates: Annotated[int, typer.Option(help="ANN candidates per modality (K)")] = 32,
    batch: Annotated[int, typer.Option(help="mentions per request and per in-process call")] = 16,
    top_k: Annotated[int, typer.Option(help="candidates returned per mention")] = 10,
    seconds: Annotated[float, typer.Option(help="measuring time per figure")] = 5.0,
    threads: Annotated[
        int, typer.Option(help="torch threads, here and in the service (0: as the service picks)")
    ] = 0,
    out: Annotated[Path, typer.Option(help="report directory")] = Path("reports"),
) -> None:
    # The same thread count on both sides: on a loaded machine two spinning threads were 10x
    # slower than one, which would fake the ratio either way.
    threads = threads or default_threads()
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        package = _package(home)
        settings = Settings(
            home=home, linker={"model": str(package), "candidates": candidates, "max_top_k": 200}
        )

        def open_in_process() -> tuple[LinkerServable, KnowledgeBases, EdgeVectorStore]:
            store = EdgeVectorStore(settings.vectors_dir)
            kbs = KnowledgeBases(store)
            no_registry = cast("Callable[[], Registry]", lambda: None)  # local package only
            servable = LinkerServable(settings, no_registry, lambda: kbs)
            servable.loaded = servable.load()
            return servable, kbs, store

        servable, kbs, store = open_in_process()
        mentions, pngs = _mentions(queries, servable.require().image_size)
        started = time.perf_counter()
        gold = _build_kb(servable, kbs, mentions, entities, confusers, noise)
        upsert_s = time.perf_counter() - started
        started = time.perf_counter()
        store.optimize("kb-" + KB)
        optimize_s = time.perf_counter() - started
        typer.echo(f"built {entities} entities in {upsert_s:.1f}s, HNSW in {optimize_s:.1f}s")
        recall_hnsw, hits_k = _recall(servable, kbs, mentions, gold, False, top_k)
        recall_exact, _ = _recall(servable, kbs, mentions, gold, True, top_k)
        before = _in_process(servable, mentions, batch, seconds, top_k)
        store.close()

        requests = []
        for start in range(0, queries, batch):
            chunk = []
            for m, data in zip(
                mentions[start : start + batch], pngs[start : start + batch], strict=True
            ):
                proto = linker_pb2.Mention(
                    text=m.text, span=common_pb2.Span(start=m.span[0], end=m.span[1])
                )
                if data is not None:
                    proto.image.CopyFrom(common_pb2.Image(data=data, media_type="image/png"))
                chunk.append(proto)
            requests.append(
                linker_pb2.LinkMentionsRequest(knowledge_base=KB, mentions=chunk, top_k=top_k)
            )
        singles = [
            linker_pb2.LinkMentionsRequest(knowledge_base=KB, mentions=[m], top_k=top_k)
            for r in requests
            for m in r.mentions
        ]
        env = {
            "CONCORD_LINKER__MODEL": str(package),
            "CONCORD_LINKER__CANDIDATES": str(candidates),
            "CONCORD_LINKER__MAX_TOP_K": "200",
            "CONCORD_DEVICE__TORCH_THREADS": str(threads),
        }
        with serve(["linker"], home, **env) as served:
            channel = grpc.insecure_channel(served.address("linker"))
            stub = linker_pb2_grpc.LinkerServiceStub(channel)
            position = [0]

            def served_batch() -> int:
                request = requests[position[0] % len(requests)]
                position[0] += 1
                return len(stub.LinkMentions(request, timeout=120).links)

            def served_single() -> int:
                request = singles[position[0] % len(singles)]
                position[0] += 1
                return len(stub.LinkMentions(request, timeout=120).links)

            from benchmarks.harness import rate

            served_rate = rate(served_batch, seconds)
            served_8 = concurrent_rate(served_single, 8, seconds)
            served_lat = latencies(lambda: stub.LinkMentions(singles[0], timeout=120), n=N_LATENCY)
            channel.close()

        servable, kbs, store = open_in_process()
        after = _in_process(servable, mentions, batch, seconds, top_k)
        store.close()
    ceiling = max(before[0], after[0])
    raw1 = min(before[1], after[1], key=lambda s: pct(s, 50))

    kb = f"KB={entities}"
    base = f"in process, batch {batch} (ceiling)"
    rows = [
        MetricRow(f"candidate recall@{candidates}", kb, "HNSW (served path)", recall_hnsw, "exact"),
        MetricRow(f"candidate recall@{candidates}", kb, "exact", recall_exact),
        MetricRow(f"gold in top {top_k} after M3EL", kb, "HNSW + re-rank", hits_k),
        MetricRow("mentions/s", kb, base, ceiling),
        MetricRow("mentions/s", kb, f"gRPC LinkMentions, batch {batch}", served_rate, base),
        MetricRow("mentions/s", kb, "gRPC, 1 mention x 8 clients (batched)", served_8, base),
        MetricRow(
            "served/in-process", kb, f"gRPC LinkMentions, batch {batch}", served_rate / ceiling
        ),
        MetricRow("served/in-process", kb, "gRPC, 1 mention x 8 clients", served_8 / ceiling),
        MetricRow("build s", kb, "upsert", upsert_s),
        MetricRow("build s", kb, "HNSW optimize", optimize_s),
    ]
    for q in (50, 99):
        rows.append(MetricRow(f"p{q} ms", "1 mention", "in process", pct(raw1, q) * 1e3))
        rows.append(
            MetricRow(f"p{q} ms", "1 mention", "gRPC", pct(served_lat, q) * 1e3, "in process")
        )
    files = write_report(
        "bench_linker",
        rows,
        out,
        title="Linker serving vs the same search + re-rank in process",
        notes=(
            f"torch threads: {torch.get_num_threads()}; tiny random encoder + random M3EL "
            f"(hidden 32); {queries} mentions (half with an image), synthetic KB vectors with "
            f"{confusers} confusers per gold entity (noise {noise}); K = {candidates} candidates "
            "per modality (text, image when the mention has one, fused), union re-ranked."
        ),
    )
    for row in rows:
        typer.echo(f"{row.metric:>26} {row.split:>12} {row.method:<42} {row.value:10.3f}")
    typer.echo(f"wrote {files.markdown}")


if __name__ == "__main__":
    app()
