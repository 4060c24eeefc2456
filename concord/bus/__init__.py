"""Concord's event bus: protobuf events over Kafka (cluster) or an in-process log (embedded).

Workers use only the names below; `make_bus(settings)` picks the backend.
"""

from concord.bus.base import Bus
from concord.bus.consumer import Consumer
from concord.bus.factory import make_bus
from concord.bus.lifecycle import start_consumer, stop_consumer
from concord.bus.memory import MemoryBus, MemoryLog
from concord.bus.records import (
    BatchHandler,
    BusError,
    Delivery,
    DlqHeaders,
    Handler,
    RawHandler,
    RawRecord,
    Reason,
    dlq_topic,
)
from concord.bus.worker import Worker

__all__ = [
    "BatchHandler",
    "Bus",
    "BusError",
    "Consumer",
    "Delivery",
    "DlqHeaders",
    "Handler",
    "MemoryBus",
    "MemoryLog",
    "RawHandler",
    "RawRecord",
    "Reason",
    "Worker",
    "dlq_topic",
    "make_bus",
    "start_consumer",
    "stop_consumer",
]
