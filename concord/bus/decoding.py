"""Decoders from a fetched record to what a handler receives; `PoisonError` marks records
that can never be handled as-is (they go straight to the DLQ).
"""

from __future__ import annotations

from collections.abc import Callable

from concord.bus.records import HEADER_MESSAGE_TYPE, M, RawRecord, Reason


class PoisonError(ValueError):
    """The record can never be handled as-is; it goes straight to the DLQ."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def protobuf_decoder(message_type: type[M]) -> Callable[[RawRecord], M]:
    """Return a decoder that parses a record as `message_type` or raises PoisonError."""
    expected = message_type.DESCRIPTOR.full_name

    def decode(record: RawRecord) -> M:
        if record.value is None:
            raise PoisonError(Reason.UNDECODABLE, "record has no value (tombstone)")
        named = record.headers.get(HEADER_MESSAGE_TYPE)
        # Protobuf happily parses many byte strings as the wrong message; the header catches that.
        if named is not None and named != expected:
            raise PoisonError(Reason.WRONG_TYPE, f"record is a {named}, expected {expected}")
        message = message_type()
        try:
            message.ParseFromString(record.value)
        except Exception as exc:  # DecodeError, or a RuntimeError from the upb parser
            raise PoisonError(Reason.UNDECODABLE, f"cannot parse as {expected}: {exc}") from exc
        return message

    return decode


def raw_decoder(record: RawRecord) -> bytes:
    """Return the record's bytes, or raise PoisonError for a tombstone."""
    if record.value is None:
        raise PoisonError(Reason.UNDECODABLE, "record has no value (tombstone)")
    return record.value
