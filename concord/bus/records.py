"""What travels on the bus: records as fetched, deliveries handed to handlers, and headers.

Concord puts the message type on every event, so a reader (or the DLQ) can tell what the
bytes are; a dead-lettered record carries `DlqHeaders` saying why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

DLQ_SUFFIX = ".dlq"
# Headers Concord puts on every event, so a reader (or the DLQ) can tell what the bytes are.
HEADER_MESSAGE_TYPE = "concord.message-type"
HEADER_CONTENT_TYPE = "content-type"
CONTENT_TYPE_PROTOBUF = "application/x-protobuf"


class DlqHeaders:
    """Header names on a dead-lettered record (values are strings)."""

    REASON = "dlq.reason"  # one of the Reason values below
    ERROR = "dlq.error"  # str(exception), truncated
    EXCEPTION = "dlq.exception"  # exception type, module-qualified
    TOPIC = "dlq.topic"  # where the record came from
    PARTITION = "dlq.partition"
    OFFSET = "dlq.offset"
    GROUP = "dlq.group"  # the consumer group that gave up on it
    ATTEMPTS = "dlq.attempts"  # handler calls made (0 when it could not be decoded)


class Reason:
    """Why a record was dead-lettered (the value of `DlqHeaders.REASON`)."""

    UNDECODABLE = "undecodable"  # bytes are not a valid message_type (or no value at all)
    WRONG_TYPE = "wrong-type"  # the message-type header names another message
    HANDLER_FAILED = "handler-failed"  # the handler raised on every attempt
    # a dependency (encoder, vector store, broker) stayed down longer than the outage bound
    # (settings.kafka.outage_retry_seconds): the content may be fine, so replay it later
    DEPENDENCY_UNAVAILABLE = "dependency-unavailable"


def dlq_topic(topic: str) -> str:
    """Return the dead-letter topic of `topic`."""
    return topic + DLQ_SUFFIX


class BusError(RuntimeError):
    """A bus operation failed (publish not acknowledged, topic not creatable, ...)."""


@dataclass(frozen=True)
class Delivery:
    """Where a message came from; handed to the handler beside the decoded message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: Mapping[str, str] = field(default_factory=dict)
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class RawRecord:
    """A record as a backend fetched it, before decoding."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, str] = field(default_factory=dict)
    timestamp_ms: int | None = None

    def delivery(self) -> Delivery:
        return Delivery(
            self.topic, self.partition, self.offset, self.key, self.headers, self.timestamp_ms
        )


Handler = Callable[[M, Delivery], None]
RawHandler = Callable[[bytes, Delivery], None]
BatchHandler = Callable[[list[tuple[Any, Delivery]]], None]


def encode_key(key: str | bytes | None) -> bytes | None:
    """Keys are bytes on the wire; strings are UTF-8."""
    return key.encode() if isinstance(key, str) else key


def event_headers(message: Message, headers: Mapping[str, str] | None) -> dict[str, str]:
    """Return the headers to publish: the caller's plus the message type."""
    out = {
        HEADER_CONTENT_TYPE: CONTENT_TYPE_PROTOBUF,
        HEADER_MESSAGE_TYPE: message.DESCRIPTOR.full_name,
    }
    out.update(headers or {})
    return out
