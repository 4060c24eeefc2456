"""Maps domain errors to gRPC statuses with `google.rpc` details, in one place."""

from __future__ import annotations

from typing import cast

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from concord.errors import ConcordError, InvalidArgument

# A status travels in trailers, which grpc caps (16 KiB by default): an error that echoed a
# caller's 1 MB id would arrive as RESOURCE_EXHAUSTED "metadata size" instead of its own code.
MAX_MESSAGE_CHARS = 1024
MAX_VIOLATIONS = 16  # with the cuts below, the details stay well under 16 KiB base64-encoded


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Returns: `text`, cut to `limit` characters with a marker saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def to_grpc_status(err: ConcordError) -> grpc.Status:
    """Build the status (code, message, `grpc-status-details-bin`) that a caller receives.

    Args:
        err: the domain error raised by a handler.
    Returns:
        A grpc.Status carrying `google.rpc.BadRequest` field violations for bad input.
    """
    status = status_pb2.Status(code=getattr(code_pb2, err.status), message=bounded(err.message))
    if isinstance(err, InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=bounded(v.field, 120), description=bounded(v.description, 200)
                )
                for v in err.violations[:MAX_VIOLATIONS]
            ]
        )
        status.details.add().Pack(bad_request)
    return rpc_status.to_status(status)


def field_violations(error: grpc.RpcError) -> dict[str, str]:
    """Read the BadRequest field violations from a client-side error ({} if none)."""
    # The RpcError a failed call raises is also that call (code, details, trailing metadata).
    status = rpc_status.from_call(cast(grpc.Call, error))
    found: dict[str, str] = {}
    if status is None:
        return found
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.update({v.field: v.description for v in bad_request.field_violations})
    return found
