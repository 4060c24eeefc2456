"""The test broker's KRaft cluster id: a valid Kafka Uuid that the storage tool's argument
parser accepts (one starting with "-" is read as a missing value)."""

from __future__ import annotations

import base64
from unittest import mock

from tools.kafka import broker


def test_cluster_ids_are_16_byte_base64url_and_never_start_with_a_dash() -> None:
    for _ in range(2000):  # ~31 of them would start with "-" if drawn naively
        text = broker._cluster_id()
        assert len(text) == 22 and not text.startswith("-")
        assert len(base64.urlsafe_b64decode(text + "==")) == 16


def test_a_dash_draw_is_redrawn() -> None:
    dash = bytes([0xF8]) + bytes(15)  # base64url "-A..."
    plain = bytes(range(16))
    draws = iter([mock.Mock(bytes=dash), mock.Mock(bytes=plain)])
    with mock.patch.object(broker.uuid, "uuid4", lambda: next(draws)):
        text = broker._cluster_id()
    assert text == base64.urlsafe_b64encode(plain).decode().rstrip("=")
