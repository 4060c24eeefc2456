"""The wire contract: stubs are fresh, every service is complete enough to host and probe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool

from concord.config import SERVICE_NAMES
from concord.proto.v1 import events_pb2

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_are_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_every_service_has_get_info_and_a_batch_or_stream_rpc(name: str) -> None:
    __import__(f"concord.proto.v1.{name}_pb2")
    service = descriptor_pool.Default().FindServiceByName(f"concord.v1.{name.capitalize()}Service")
    methods = {m.name: m for m in service.methods}
    assert methods["GetInfo"].output_type.full_name == "concord.v1.ServiceInfo"
    batched = [
        m
        for m in service.methods
        if m.server_streaming
        or m.client_streaming
        or any(f.is_repeated for f in m.input_type.fields)
    ]
    assert batched, f"{name} has no batch or streaming RPC"


def test_events_cover_the_pipeline() -> None:
    names = set(events_pb2.DESCRIPTOR.message_types_by_name)
    assert {"IngestRequest", "Indexed", "GenerationJob", "Generated", "AuditResult"} <= names


def test_event_roundtrip_is_lossless() -> None:
    event = events_pb2.IngestRequest(id="p1", collection="c")
    event.item.text = "a red circle left of a blue square"
    event.payload.fields.update({"split": "test", "n": 3})
    decoded = events_pb2.IngestRequest.FromString(event.SerializeToString())
    assert decoded == event
    assert decoded.payload.fields["split"] == "test"
