"""Request checks every service shares: the requested model against the served one, page
sizes, per-request counts and text lengths. Each names the offending field (a
`google.rpc.BadRequest` violation on the wire), so callers see one wording across services.
"""

from __future__ import annotations

from collections.abc import Sequence

from concord.errors import FailedPrecondition, FieldViolation, InvalidArgument
from concord.proto.v1 import common_pb2
from concord.wire import ModelId

DEFAULT_PAGE_SIZE = 100  # a List call's page when the request leaves page_size 0
MAX_PAGE_SIZE = 1000


def check_model(wanted: common_pb2.ModelRef, served: ModelId, service: str) -> None:
    """Raises: FailedPrecondition when the caller asked for a model other than the served one
    (an empty `wanted.name` accepts whatever is served)."""
    if not wanted.name:
        return
    if wanted.name != served.name or (wanted.version and wanted.version != served.version):
        asked = f"{wanted.name}@{wanted.version or wanted.alias or 'any'}"
        raise FailedPrecondition(f"this {service} serves {served}, not {asked}")


def page_size(
    page: common_pb2.PageRequest,
    default: int = DEFAULT_PAGE_SIZE,
    maximum: int = MAX_PAGE_SIZE,
    field: str = "page.page_size",
) -> int:
    """Returns: the requested page size, `default` when 0. Raises: InvalidArgument outside
    1..maximum."""
    size = page.page_size or default
    if not 1 <= size <= maximum:
        raise InvalidArgument(field, f"must be between 1 and {maximum}")
    return size


def count_violations(count: int, field: str, limit: int, noun: str) -> list[FieldViolation]:
    """The problems of a repeated field of `count` `noun`s: none, or more than `limit`."""
    if count == 0:
        return [FieldViolation(field, f"is empty; send at least one {noun.removesuffix('s')}")]
    if count > limit:
        return [FieldViolation(field, f"has {count} {noun}; the limit per request is {limit}")]
    return []


def check_count(count: int, field: str, limit: int, noun: str = "items") -> None:
    """Raises: InvalidArgument when a request carries no `noun`s or more than `limit`."""
    violations = count_violations(count, field, limit, noun)
    if violations:
        raise InvalidArgument.from_violations(violations)


def text_violations(text: str, field: str, max_chars: int | None = None) -> list[FieldViolation]:
    """The problems of one text: empty (or blank), or longer than `max_chars` characters."""
    if not text.strip():
        return [FieldViolation(field, "is empty")]
    if max_chars is not None and len(text) > max_chars:
        return [FieldViolation(field, f"has {len(text)} characters; the limit is {max_chars}")]
    return []


def texts_violations(
    texts: Sequence[str], field: str, max_chars: int | None = None
) -> list[FieldViolation]:
    """The problems of every text of a repeated field, each named `field[i]`."""
    found: list[FieldViolation] = []
    for i, text in enumerate(texts):
        found += text_violations(text, f"{field}[{i}]", max_chars)
    return found


def check_text(text: str, field: str, max_chars: int | None = None) -> str:
    """Returns: the text. Raises: InvalidArgument naming `field`."""
    violations = text_violations(text, field, max_chars)
    if violations:
        raise InvalidArgument.from_violations(violations)
    return text


def check_texts(texts: Sequence[str], field: str, max_chars: int | None = None) -> list[str]:
    """Returns: the texts. Raises: InvalidArgument naming every bad one (`texts[3]`)."""
    violations = texts_violations(texts, field, max_chars)
    if violations:
        raise InvalidArgument.from_violations(violations)
    return list(texts)


def require(value: str, field: str) -> str:
    """Returns: `value`. Raises: InvalidArgument when a required string field is empty."""
    if not value:
        raise InvalidArgument(field, "is empty")
    return value
