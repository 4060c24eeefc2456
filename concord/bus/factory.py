"""make_bus: the one place that turns Settings into a Bus.

Memory is the embedded default; Kafka is the cluster bus.
"""

from __future__ import annotations

from typing import Any

from concord.bus.base import Bus
from concord.config import Settings


def make_bus(settings: Settings) -> Bus:
    """Build the bus the settings ask for.

    Args:
        settings: `settings.bus` picks the backend; `settings.kafka` holds bootstrap servers,
            group prefix and the retry policy (used by the memory bus too).

    Returns:
        A KafkaBus, or a MemoryBus on the process-wide embedded log, so every service in one
        process (`concord up`) shares it.
    """
    k = settings.kafka
    common: dict[str, Any] = {
        "group_prefix": k.group_prefix,
        "max_retries": k.max_retries,
        "retry_backoff_seconds": k.retry_backoff_seconds,
        "outage_retry_seconds": k.outage_retry_seconds,
        "partitions": k.partitions,
    }
    if settings.bus == "kafka":
        from concord.bus.kafka import KafkaBus  # kafka-python only loads where it is used

        return KafkaBus(
            k.bootstrap_servers,
            consumer_config={
                "max_poll_interval_ms": k.max_poll_interval_ms,
                "session_timeout_ms": k.session_timeout_ms,
                "heartbeat_interval_ms": k.heartbeat_interval_ms,
            },
            **common,
        )
    from concord.bus.memory import EMBEDDED_LOG, MemoryBus

    return MemoryBus(EMBEDDED_LOG, **common)
