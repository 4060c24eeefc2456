"""End to end, as a user would from a fresh clone: make data, train and register the `tiny`
encoder, serve it, ingest the test split through Kafka, search by text over gRPC.

1. Generate a Concord Scenes `retrieval` set (seed 0) with the data pipeline's Python API:
   1500 train / 64 val / 50 test scenes (the generator's mixed 1-4 object scenes, no knob).
2. `pipelines.train_encoder.train` the `tiny` preset (frozen MiniLM text tower) for 8 epochs at
   batch 64, tracked in a temporary sqlite MLflow store, registered as `concord-encoder` and
   aliased `production`. On 2 CPU cores the whole `train()` call takes ~105 s (frozen text
   tower caching ~50 s, the loop ~55 s) and reaches val R@1 (text->image, 64 images) ~0.3.
3. `concord serve encoder retrieval` as a subprocess, with `encoder_model` set to
   `models:/concord-encoder@production` so the model is resolved through the registry, the
   real Kafka broker as the bus and free ports.
4. Publish one `concord.ingest` IngestRequest per test image (PNG bytes, payload naming the
   image id) and wait for every `concord.indexed` event.
5. Query with each of the 5 captions of every test image (`Concord.search_text`,
   target="image") and require the captioned image in the top K=5 of the 50-image gallery for
   at least 3x chance (K / gallery = 0.1) and at least 0.3 of the queries. Measured on 2 cores:
   0.90 with seed 0 (three runs; CPU training is deterministic), 0.84 with seed 1.
6. The encoder's GetInfo, every Indexed event and every search name `concord-encoder` at the
   registered version. The module takes ~2.5 min on 2 cores, training included.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from concord.bus import Delivery, make_bus, topics
from concord.clients import Concord, status_of
from concord.config import Settings
from concord.proto.v1 import common_pb2, events_pb2
from concord.wire import payload_from_dict
from pipelines.data.sets import BuildArgs, registry
from pipelines.data.store import read_jsonl
from pipelines.train_encoder import MODEL_NAME, TrainConfig, TrainResult, train
from tests.fixtures.serving import free_ports
from tools.kafka.broker import KafkaBroker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SEED = 0
COUNTS = {"train": 1500, "val": 64, "test": 50}
EPOCHS = 8
BATCH = 64
TOP_K = 5
MIN_HIT_RATE = 0.3  # and at least 3x chance (TOP_K / gallery size)
START_WAIT_S = 120.0  # services: start the process, load the model from the registry
INDEX_WAIT_S = 120.0  # every test image: consumed, encoded, upserted, Indexed emitted


@dataclass(frozen=True)
class Trained:
    data: Path
    tracking_uri: str
    result: TrainResult


@dataclass(frozen=True)
class ServeProcess:
    """`concord serve encoder retrieval` running in a subprocess: its settings and log."""

    settings: Settings
    log: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A dataset made with the data pipeline and the `tiny` encoder trained and registered."""
    root = tmp_path_factory.mktemp("e2e-train")
    data = root / "retrieval"
    registry()["retrieval"].build(BuildArgs(data, SEED, dict(COUNTS), image_size=64, workers=2))
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    t0 = time.perf_counter()
    result = train(
        TrainConfig(
            preset="tiny",
            data=data,
            seed=SEED,
            epochs=EPOCHS,
            batch_size=BATCH,
            threads=2,
            out=root / "model",
            tracking_uri=tracking_uri,
            register=True,
            alias="production",
            run_name="e2e-tiny",
            progress=False,
        )
    )
    last = result.history[-1]
    print(
        f"\ntrained {EPOCHS} epochs in {time.perf_counter() - t0:.1f}s (loop {result.seconds:.1f}s):"
        f" loss {last.loss:.3f}, val R@1 t2i {last.val_r1_t2i:.3f} i2t {last.val_r1_i2t:.3f},"
        f" registered {MODEL_NAME} v{result.version}"
    )
    assert result.version is not None, "train(register=True) registered no version"
    return Trained(data, tracking_uri, result)


def _env(settings: Settings) -> dict[str, str]:
    """The same settings as `CONCORD_*` variables, the way a user configures a process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONCORD_")}
    env.update(
        CONCORD_HOME=str(settings.home),
        CONCORD_MLFLOW_TRACKING_URI=settings.tracking_uri,
        CONCORD_ENCODER_MODEL=settings.encoder_model,
        CONCORD_BUS=settings.bus,
        CONCORD_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
        CONCORD_KAFKA__GROUP_PREFIX=settings.kafka.group_prefix,
        CONCORD_SERVING__PORTS=json.dumps(settings.serving.ports),
        CONCORD_SERVING__METRICS_PORT="0",
        CONCORD_LOG_LEVEL="INFO",
    )
    return env


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else "(no log)"


def _concord_exe() -> list[str]:
    exe = Path(sys.executable).with_name("concord")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("concord")
    assert found, "the `concord` console script is not installed (pip install -e .)"
    return [found]


@pytest.fixture(scope="module")
def served(
    trained: Trained, own_kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """`concord serve encoder retrieval` in a subprocess, serving the registry's production."""
    tmp = tmp_path_factory.mktemp("e2e-serve")
    encoder_port, retrieval_port = free_ports(2)
    settings = Settings(
        home=tmp / "home",
        mlflow_tracking_uri=trained.tracking_uri,
        encoder_model=f"models:/{MODEL_NAME}@production",
        bus="kafka",
        kafka={
            "bootstrap_servers": own_kafka_broker.bootstrap,
            "group_prefix": f"e2e{uuid.uuid4().hex[:8]}",
        },
        serving={
            "ports": {"encoder": encoder_port, "retrieval": retrieval_port},
            "metrics_port": 0,
        },
    )
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*_concord_exe(), "serve", "encoder", "retrieval"],
            env=_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_WAIT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"`concord serve` exited with {proc.returncode}:\n{_tail(log)}", pytrace=False
                )
            health = {n: status_of(n, settings).health for n in ("encoder", "retrieval")}
            if all(h == "SERVING" for h in health.values()):
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"services not SERVING after {START_WAIT_S:.0f}s ({health}):\n{_tail(log)}",
                    pytrace=False,
                )
            time.sleep(0.5)
        yield ServeProcess(settings, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def test_encoder_serves_the_registered_version(trained: Trained, served: ServeProcess) -> None:
    with Concord(served.settings) as sdk:
        model = sdk.encoder.model()
    assert model is not None, f"the encoder reports no loaded model:\n{_tail(served.log)}"
    assert (model.name, model.version) == (MODEL_NAME, str(trained.result.version))


def test_kafka_ingest_then_text_search_finds_the_image(
    trained: Trained, served: ServeProcess
) -> None:
    records = read_jsonl(trained.data / "test.jsonl")
    collection = f"e2e-{uuid.uuid4().hex[:8]}"
    lock = threading.Lock()
    indexed: list[events_pb2.Indexed] = []

    def on_indexed(message: events_pb2.Indexed, _: Delivery) -> None:
        if message.collection == collection:
            with lock:
                indexed.append(message)

    with make_bus(served.settings) as bus:
        observer = bus.subscribe(
            topics.INDEXED, f"e2e-obs-{collection}", on_indexed, events_pb2.Indexed
        ).start()
        try:
            for rec in records:
                event = events_pb2.IngestRequest(
                    collection=collection,
                    item=common_pb2.Item(
                        image=common_pb2.Image(
                            data=(trained.data / rec["image"]).read_bytes(),
                            media_type="image/png",
                        )
                    ),
                    payload=payload_from_dict({"image_id": rec["id"]}),
                )
                bus.publish(topics.INGEST, f"{collection}-{rec['id']}", event)
            bus.flush()
            deadline = time.monotonic() + INDEX_WAIT_S
            while True:
                with lock:
                    seen = len(indexed)
                if seen >= len(records):
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"only {seen}/{len(records)} Indexed events for {collection} after"
                        f" {INDEX_WAIT_S:.0f}s of ingest through Kafka:\n{_tail(served.log)}"
                    )
                time.sleep(0.1)
        finally:
            observer.stop()

    version = str(trained.result.version)
    assert {(e.model.name, e.model.version) for e in indexed} == {(MODEL_NAME, version)}

    with Concord(served.settings) as sdk:
        gallery = sdk.retrieval.collection(collection).points
        assert gallery == len({e.id for e in indexed}) > 0.9 * len(records)
        hits = queries = 0
        for rec in records:
            for caption in rec["captions"]:
                result = sdk.search_text(
                    caption, collection=collection, target="image", top_k=TOP_K
                )
                assert (result.model.name, result.model.version) == (MODEL_NAME, version)
                queries += 1
                hits += rec["id"] in [h.payload.get("image_id") for h in result.hits]
    rate, chance = hits / queries, TOP_K / gallery
    print(f"\ntext->image R@{TOP_K}: {rate:.3f} over {queries} queries; chance {chance:.3f}")
    assert rate >= max(MIN_HIT_RATE, 3 * chance), (
        f"text->image R@{TOP_K} {rate:.3f} ({hits}/{queries} caption queries, gallery {gallery})"
        f" is not far enough above chance {chance:.3f}: want >= max({MIN_HIT_RATE}, 3x chance)"
    )
