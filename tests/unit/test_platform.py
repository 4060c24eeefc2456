"""The per-process Platform: embedded bus, vector store and registry built from settings
under the Concord home, shared by every service of the process, and closed with it."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from concord.bus import MemoryBus
from concord.config import load_settings
from concord.platform import Platform
from concord.proto.v1 import events_pb2
from concord.registry import ModelNotFound
from concord.vectors import CollectionSpec, EdgeVectorStore, Point, point_id


def test_embedded_platform_works_end_to_end(tmp_path: Path) -> None:
    platform = Platform(load_settings(home=tmp_path))
    try:
        assert isinstance(platform.bus, MemoryBus)
        assert platform.bus is platform.bus  # one bus per process
        assert isinstance(platform.vectors, EdgeVectorStore)

        received: list[str] = []
        done = threading.Event()

        def handle(message: events_pb2.IngestRequest, delivery: object) -> None:
            received.append(message.item.text)
            done.set()

        consumer = platform.bus.subscribe(
            "platform.test", "g", handle, events_pb2.IngestRequest
        ).start()
        event = events_pb2.IngestRequest(id="1")
        event.item.text = "a red circle"
        platform.bus.publish("platform.test", "1", event)
        assert done.wait(10), "the embedded bus did not deliver"
        consumer.stop()
        assert received == ["a red circle"]

        platform.vectors.create_collection(CollectionSpec("c", dense=4))
        vector = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
        pid = point_id(b"a red circle")
        platform.vectors.upsert("c", [Point(pid, {"dense": vector}, {"text": "a red circle"})])
        hits = platform.vectors.search("c", vector, limit=1, exact=True)
        assert [h.id for h in hits] == [pid]

        with pytest.raises(ModelNotFound):
            platform.registry.resolve("models:/concord-encoder@production")
    finally:
        platform.close()
    assert (tmp_path / "vectors" / "c").is_dir(), "embedded vectors live under the home dir"
    assert (tmp_path / "mlflow.db").exists(), "the embedded registry lives under the home dir"


def test_parts_are_built_only_when_used(tmp_path: Path) -> None:
    platform = Platform(load_settings(home=tmp_path))
    platform.close()
    assert not (tmp_path / "vectors").exists()
    assert not (tmp_path / "mlflow.db").exists()
