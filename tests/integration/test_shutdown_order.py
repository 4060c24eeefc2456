"""Shutdown of a process that hosts a service and the peer it calls (`concord up`): the
caller drains first, so an in-flight call that still needs the peer completes (issue 18:
3 of 3 in-flight `Index` calls failed with UNAVAILABLE when both stopped at once)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from concord.clients import Concord, IndexItem
from concord.serving import metrics
from tests.fixtures.media import png
from tests.fixtures.models import tiny_encoder
from tests.fixtures.serving import InProcessDeployment, encoder_settings


def _in_flight(service: str) -> float:
    return metrics.IN_FLIGHT.labels(service)._value.get()


def test_stop_lets_an_in_flight_index_finish_through_the_encoder(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A grace long enough for the call on a busy 2-core machine: this tests the order.
    settings = encoder_settings(tmp_path, str(tiny_encoder(tmp_path_factory)))
    serving = settings.serving.model_copy(update={"grace_seconds": 30.0})
    settings = settings.model_copy(update={"serving": serving})
    deployment = InProcessDeployment(["encoder", "retrieval"], settings)
    # Texts first, then images: the image call reaches the encoder only after the text call,
    # i.e. after the stop below has begun.
    items = [IndexItem(text=f"a red circle number {i} " * 4) for i in range(100)]
    items += [IndexItem(image=png((i * 15 % 255, 40, 90))) for i in range(16)]
    outcome: dict[str, object] = {}

    def index() -> None:
        with Concord(settings, timeout=120) as sdk:
            try:
                outcome["result"] = sdk.index(items)
            except Exception as err:  # recorded and asserted below
                outcome["error"] = err

    caller = threading.Thread(target=index)
    caller.start()
    deadline = time.monotonic() + 60
    while _in_flight("retrieval") < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert _in_flight("retrieval") >= 1, "the Index call never started"
    deployment.close()
    caller.join(120)
    assert "error" not in outcome, outcome.get("error")
    assert len(outcome["result"].ids) == len(items)  # type: ignore[attr-defined]
