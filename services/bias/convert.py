"""Bias wire <-> domain: request parsing and validation with field names, results -> protos.

A proto3 `string` must be UTF-8; protobuf refuses the whole message when one is not, before
any servicer code runs, and grpc would answer INTERNAL without saying which text was wrong.
`request_parser` parses the body itself and, when it does not parse, finds the offending
string fields by walking the raw wire format, so the caller learns `pairs[2].text`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf import empty_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet  # type: ignore[import-not-found]

from concord.errors import FieldViolation, InvalidArgument
from concord.media import decode_image
from concord.proto.v1 import bias_pb2, common_pb2
from concord.serving.requests import check_count, text_violations, texts_violations
from concord.wire import ModelId, model_ref
from services.bias.types import Cue, PairIn, Probe, Verdict

M = TypeVar("M", bound=Message)

LENGTH_DELIMITED = 2  # the wire type of strings, bytes and embedded messages
MAX_DEPTH = 16  # how deep the UTF-8 walk follows embedded messages


# ----------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Unparsed:
    """A request body that did not parse; the servicer raises `error` (INVALID_ARGUMENT)."""

    error: InvalidArgument


def utf8_violations(data: bytes, descriptor: Any, prefix: str = "") -> list[FieldViolation]:
    """The string fields of a serialized `descriptor` message that are not UTF-8.

    Args:
        data: the serialized message (which protobuf refused to parse).
        descriptor: its message type.
        prefix: the path of this message in the request ("pairs[2]").
    Returns:
        One violation per bad string, named like `pairs[2].text` or `counterfactual_texts[1]`.
    """
    if len(prefix) > 0 and prefix.count(".") >= MAX_DEPTH:
        return []
    holder = empty_pb2.Empty()  # every field lands in the unknown-field set, unparsed
    try:
        holder.ParseFromString(data)
    except DecodeError:
        return []
    found: list[FieldViolation] = []
    seen: dict[int, int] = {}
    for unknown in UnknownFieldSet(holder):
        field = descriptor.fields_by_number.get(unknown.field_number)
        if field is None or unknown.wire_type != LENGTH_DELIMITED:
            continue
        index = seen.get(field.number, 0)
        seen[field.number] = index + 1
        name = f"{prefix}.{field.name}" if prefix else field.name
        if _is_repeated(field):
            name = f"{name}[{index}]"
        if field.type == FieldDescriptor.TYPE_STRING:
            try:
                bytes(unknown.data).decode("utf-8")
            except UnicodeDecodeError as err:
                found.append(FieldViolation(name, f"is not valid UTF-8 (byte {err.start})"))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            found += utf8_violations(bytes(unknown.data), field.message_type, name)
    return found


def _is_repeated(field: FieldDescriptor) -> bool:
    # `label` is deprecated in newer protobuf releases in favour of `is_repeated`.
    flag = getattr(field, "is_repeated", None)
    if isinstance(flag, bool):
        return flag
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def request_parser(message_type: type[M]) -> Callable[[bytes], M | Unparsed]:
    """A gRPC request deserializer that never raises.

    Returns:
        A function: bytes -> the parsed message, or Unparsed naming every string field that
        is not UTF-8 (or `request` when the bytes are not the message at all).
    """
    name = message_type.DESCRIPTOR.name

    def parse(data: bytes) -> M | Unparsed:
        try:
            return message_type.FromString(data)
        except (DecodeError, RuntimeError, RecursionError):
            violations = utf8_violations(data, message_type.DESCRIPTOR)
            if not violations:
                violations = [FieldViolation("request", f"the body is not a valid {name}")]
            return Unparsed(InvalidArgument.from_violations(violations))

    return parse


def parsed(request: M | Unparsed) -> M:
    """Returns: the parsed request. Raises: InvalidArgument when the body did not parse."""
    if isinstance(request, Unparsed):
        raise request.error
    return request


# ----------------------------------------------------------------------------- requests


def decode_pairs(
    pairs: Sequence[bias_pb2.BiasPair], max_pairs: int, max_chars: int, explain: bool = True
) -> list[PairIn]:
    """Validate and decode a Detect request's pairs.

    Returns:
        The decoded pairs, in order.
    Raises:
        InvalidArgument: no pairs or too many (`pairs`); naming every bad field otherwise
            (`pairs[3].text`, `pairs[0].image.data`).
    """
    check_count(len(pairs), "pairs", max_pairs, "pairs")
    violations: list[FieldViolation] = []
    decoded: list[PairIn] = []
    for i, pair in enumerate(pairs):
        try:
            decoded.append(decode_pair(pair.image, pair.text, f"pairs[{i}]", max_chars, explain))
        except InvalidArgument as err:
            violations.extend(err.violations)
    if violations:
        raise InvalidArgument.from_violations(violations)
    return decoded


def decode_pair(
    image: common_pb2.Image,
    text: str,
    where: str,
    max_chars: int,
    explain: bool = True,
    text_field: str = "text",
) -> PairIn:
    """Decode one pair.

    Args:
        where: the pair's path in the request ("pairs[3]"; "" for top-level fields).
        text_field: what the message calls its text ("prompt" in a Generated event).
    Returns:
        The decoded pair.
    Raises:
        InvalidArgument: naming `<where>.text` and `<where>.image.data` (both when both are bad).
    """
    prefix = f"{where}." if where else ""
    violations = text_violations(text, f"{prefix}{text_field}", max_chars)
    try:
        decoded = decode_image(image.data, image.media_type, field=f"{prefix}image")
    except InvalidArgument as err:
        violations.extend(err.violations)
    if violations:
        raise InvalidArgument.from_violations(violations)
    return PairIn(decoded, text, explain)


def decode_probe(
    request: bias_pb2.ProbeRequest, max_chars: int, max_counterfactuals: int
) -> tuple[PairIn, list[str]]:
    """Validate a ProbeTextReliance request.

    Returns:
        The pair and the counterfactual texts.
    Raises:
        InvalidArgument: naming `pair.text`, `pair.image.data`, `counterfactual_texts` (none
            or too many) or `counterfactual_texts[i]`.
    """
    violations: list[FieldViolation] = []
    pair = None
    try:
        pair = decode_pair(request.pair.image, request.pair.text, "pair", max_chars)
    except InvalidArgument as err:
        violations.extend(err.violations)
    texts = list(request.counterfactual_texts)
    count = len(texts)
    if count == 0:
        violations.append(
            FieldViolation("counterfactual_texts", "is empty; send at least one altered text")
        )
    elif count > max_counterfactuals:
        violations.append(
            FieldViolation(
                "counterfactual_texts",
                f"has {count} texts; the limit per request is {max_counterfactuals}",
            )
        )
    violations += texts_violations(texts, "counterfactual_texts", max_chars)
    if violations or pair is None:
        raise InvalidArgument.from_violations(violations)
    return pair, texts


def content_hash(image: bytes, text: str) -> str:
    """The identity of a pair's content: sha256 of the image bytes, a separator and the
    UTF-8 text (hex). Equal content always gets the same key, so a replay changes nothing."""
    digest = hashlib.sha256()
    digest.update(len(image).to_bytes(8, "big"))
    digest.update(image)
    digest.update(text.encode("utf-8"))
    return digest.hexdigest()


# ----------------------------------------------------------------------------- responses

_KINDS = {
    "linguistic": bias_pb2.Cue.KIND_LINGUISTIC,
    "visual": bias_pb2.Cue.KIND_VISUAL,
    "inconsistency": bias_pb2.Cue.KIND_INCONSISTENCY,
}


def cue_proto(cue: Cue) -> bias_pb2.Cue:
    out = bias_pb2.Cue(
        kind=_KINDS[cue.kind], description=cue.description, weight=cue.weight, text=cue.text
    )
    if cue.span is not None:
        out.span.CopyFrom(common_pb2.Span(start=cue.span[0], end=cue.span[1]))
    if cue.region is not None:
        x0, y0, x1, y1 = cue.region
        out.region.CopyFrom(bias_pb2.Region(x0=x0, y0=y0, x1=x1, y1=y1))
    return out


def verdict_proto(verdict: Verdict) -> bias_pb2.BiasVerdict:
    label = bias_pb2.BIAS_LABEL_BIASED if verdict.biased else bias_pb2.BIAS_LABEL_NEUTRAL
    return bias_pb2.BiasVerdict(
        label=label,
        probability=verdict.probability,
        cues=[cue_proto(c) for c in verdict.cues],
        rationale=verdict.rationale,
        inconsistency=verdict.inconsistency,
        threshold=verdict.threshold,
    )


def detect_response(verdicts: Sequence[Verdict], model: ModelId) -> bias_pb2.DetectResponse:
    return bias_pb2.DetectResponse(
        verdicts=[verdict_proto(v) for v in verdicts], model=model_ref(model)
    )


def probe_response(probe: Probe, model: ModelId) -> bias_pb2.ProbeResponse:
    return bias_pb2.ProbeResponse(
        original=verdict_proto(probe.original),
        counterfactuals=[verdict_proto(v) for v in probe.counterfactuals],
        text_reliance=probe.text_reliance,
        model=model_ref(model),
        text_effect=probe.text_effect,
        image_effect=probe.image_effect,
        flip_rate=probe.flip_rate,
    )
