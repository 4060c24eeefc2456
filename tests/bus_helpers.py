"""What the bus tests share: bounded waits that fail with a message, a recording handler,
and a numbered ingest event."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from concord.bus import Delivery
from concord.proto.v1.events_pb2 import IngestRequest


def wait_until(cond: Callable[[], bool], what: str, timeout: float, interval: float = 0.02) -> None:
    """Poll `cond` until true; fail naming `what` after `timeout` seconds (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Recorder:
    """A thread-safe handler that records (id, delivery) per call."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, Delivery]] = []

    def __call__(self, msg: IngestRequest, d: Delivery) -> None:
        with self.lock:
            self.calls.append((msg.id, d))

    def ids(self) -> list[str]:
        with self.lock:
            return [i for i, _ in self.calls]


def event(i: int | str) -> IngestRequest:
    return IngestRequest(id=f"m{i}", collection="c")
