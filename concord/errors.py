"""Domain errors shared by every layer; the serving core maps them to gRPC status codes.

Raised by validation, stores, registries and servables alike (no grpc import here), so a
caller always learns which field was wrong, and a worker knows what is worth retrying.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    field: str  # dotted path into the request, e.g. "items[3].image.data"
    description: str


class ConcordError(Exception):
    """Base of every error Concord means to report to a caller."""

    status = "INTERNAL"
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ConcordError):
    """The request itself is wrong; carries one violation per offending field."""

    status = "INVALID_ARGUMENT"

    def __init__(self, field: str, description: str, *more: FieldViolation) -> None:
        self.violations: tuple[FieldViolation, ...] = (FieldViolation(field, description), *more)
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in self.violations))

    @classmethod
    def from_violations(cls, violations: list[FieldViolation]) -> InvalidArgument:
        if not violations:
            raise ValueError("InvalidArgument needs at least one violation")
        first, *rest = violations
        return cls(first.field, first.description, *rest)


class NotFound(ConcordError):
    status = "NOT_FOUND"


class FailedPrecondition(ConcordError):
    """The system is not in a state to serve this (e.g. no model loaded or registered)."""

    status = "FAILED_PRECONDITION"


class ResourceExhausted(ConcordError):
    """Overloaded: the caller should back off and retry."""

    status = "RESOURCE_EXHAUSTED"
    retryable = True


class DeadlineExceeded(ConcordError):
    """The caller's deadline cannot be met: said before any work is spent on the call."""

    status = "DEADLINE_EXCEEDED"
    retryable = True


class Unavailable(ConcordError):
    """A dependency (broker, vector store, registry) cannot be reached right now."""

    status = "UNAVAILABLE"
    retryable = True
