"""Retrieval wire <-> domain: index items, proto Filter -> concord.vectors.Filter, search
options, hits and collection info. Field names in errors follow the request's paths."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from concord.clients.scorer import PairScore
from concord.errors import FieldViolation, InvalidArgument
from concord.proto.v1 import common_pb2, retrieval_pb2, scorer_pb2
from concord.vectors import CollectionInfo, Filter, Match, MatchAny, Range, ScoredPoint
from concord.vectors.errors import InvalidArgument as VectorInvalidArgument
from concord.vectors.types import check_key
from concord.wire import (
    MODALITY_ENUMS,
    MODALITY_NAMES,
    ImageData,
    model_ref,
    payload_to_dict,
)
from services.retrieval import thumbnails
from services.retrieval.collections import Entry
from services.retrieval.explain import HitExplanation
from services.retrieval.indexing import ItemIn
from services.retrieval.search import SearchSpec, check_top_k


def items_from_proto(items: Sequence[retrieval_pb2.IndexItem]) -> list[ItemIn]:
    out = []
    for i, item in enumerate(items):
        kind = item.item.WhichOneof("content")
        image = item.item.image if kind == "image" else None
        out.append(
            ItemIn(
                where=f"items[{i}]",
                text=item.item.text if kind == "text" else None,
                image=ImageData(image.data, image.media_type) if image is not None else None,
                payload=payload_dict(item.payload, f"items[{i}].payload"),
                id=item.id,
            )
        )
    return out


def payload_dict(payload: common_pb2.Payload, where: str = "payload") -> dict[str, Any]:
    """Returns: the payload as plain JSON values. Raises: InvalidArgument naming the first
    number that is NaN or infinite (JSON cannot hold it; it used to surface as INTERNAL)."""
    _check_finite(payload.fields, where)
    return payload_to_dict(payload)


def _check_finite(value: struct_pb2.Struct | struct_pb2.ListValue, where: str) -> None:
    pairs = (
        ((f"{where}.{k[:64]}", v) for k, v in value.fields.items())
        if isinstance(value, struct_pb2.Struct)
        else ((f"{where}[{i}]", v) for i, v in enumerate(value.values))
    )
    for path, item in pairs:
        kind = item.WhichOneof("kind")
        if kind == "number_value" and not math.isfinite(item.number_value):
            raise InvalidArgument(path, f"is {item.number_value}; payload numbers must be finite")
        if kind == "struct_value":
            _check_finite(item.struct_value, path)
        elif kind == "list_value":
            _check_finite(item.list_value, path)


def filter_from_proto(proto: retrieval_pb2.Filter, field: str = "filter") -> Filter:
    """Translate a wire filter. Raises: InvalidArgument naming `filter.must[2].field` etc."""
    parts: dict[str, list[Match | MatchAny | Range]] = {}
    violations: list[FieldViolation] = []
    for part in ("must", "should", "must_not"):
        parts[part] = []
        for i, cond in enumerate(getattr(proto, part)):
            where = f"{field}.{part}[{i}]"
            try:
                parts[part].append(_condition(cond, where))
            except InvalidArgument as err:
                violations.extend(err.violations)
    if violations:
        raise InvalidArgument.from_violations(violations)
    return Filter(must=parts["must"], should=parts["should"], must_not=parts["must_not"])


def _condition(cond: retrieval_pb2.Condition, where: str) -> Match | MatchAny | Range:
    if not cond.field:
        raise InvalidArgument(f"{where}.field", "is empty")
    try:
        check_key(cond.field, f"{where}.field")
    except VectorInvalidArgument as err:
        raise InvalidArgument.from_violations(list(err.violations)) from None
    kind = cond.WhichOneof("match")
    try:
        if kind == "keyword":
            return Match(cond.field, cond.keyword)
        if kind == "integer":
            return Match(cond.field, int(cond.integer))
        if kind == "flag":
            return Match(cond.field, cond.flag)
        if kind == "any":
            return MatchAny(cond.field, list(cond.any.keywords))
        if kind == "range":
            r = cond.range
            return Range(
                cond.field,
                gte=r.gte if r.HasField("gte") else None,
                gt=r.gt if r.HasField("gt") else None,
                lte=r.lte if r.HasField("lte") else None,
                lt=r.lt if r.HasField("lt") else None,
            )
    except VectorInvalidArgument as err:
        raise InvalidArgument(f"{where}.{kind}", err.violations[0].description) from None
    raise InvalidArgument(f"{where}.match", "set one of keyword, integer, flag, any, range")


def search_spec(request: retrieval_pb2.SearchRequest) -> SearchSpec:
    """Returns: the search options of a request (top_k 0 = default). Raises: InvalidArgument."""
    target = MODALITY_NAMES.get(request.target)
    if target is None:
        raise InvalidArgument("target", f"unknown modality {request.target}")
    return SearchSpec(
        top_k=check_top_k(request.top_k),
        target=target,  # type: ignore[arg-type]
        filter=filter_from_proto(request.filter) if request.HasField("filter") else None,
        rerank=request.rerank_late_interaction,
        exact=request.exact,
        with_payload=request.with_payload,
    )


def add_hits(
    out: RepeatedCompositeFieldContainer[retrieval_pb2.Hit],
    points: Sequence[ScoredPoint],
    explanations: Sequence[HitExplanation | None] = (),
    with_payload: bool = True,
) -> None:
    """Append the wire hits to `out` (a response's `hits`), built in place: payloads without
    the stored thumbnail (none unless `with_payload`), each hit with its explanation when
    one is given. (Built in place, with the payload's scalars set directly: a copy of each
    Hit and a Struct per payload cost ~14 us per hit, most of a search's conversion.)"""
    add = out.add
    for i, p in enumerate(points):
        payload = p.payload
        modality = str(payload.get("modality", "")) if payload else ""
        hit = add(id=str(p.id), score=p.score, modality=MODALITY_ENUMS.get(modality, 0))
        if payload is not None and with_payload:
            struct = hit.payload.fields
            struct.SetInParent()  # an empty payload is still a payload
            _fill_struct(struct, payload)
        explained = explanations[i] if i < len(explanations) else None
        if explained is not None:
            hit.explanation.CopyFrom(explanation_proto(explained))


_HIDDEN = frozenset({"modality", thumbnails.THUMBNAIL_KEY})  # carried elsewhere / never sent


def _fill_struct(struct: struct_pb2.Struct, payload: Mapping[str, Any]) -> None:
    """`struct.update(payload)` less the hidden keys, with scalars set directly (what
    protobuf's Struct.update does for them); lists and objects go through Struct.update."""
    fields = struct.fields
    for key, value in payload.items():
        if key in _HIDDEN:
            continue
        if value is None:
            fields[key].null_value = struct_pb2.NULL_VALUE
        elif isinstance(value, bool):
            fields[key].bool_value = value
        elif isinstance(value, str):
            fields[key].string_value = value
        elif isinstance(value, int | float):
            fields[key].number_value = value
        else:
            struct.update({key: value})


VERDICTS = {
    "supports": retrieval_pb2.WORD_VERDICT_SUPPORTS,
    "contradicts": retrieval_pb2.WORD_VERDICT_CONTRADICTS,
    "neutral": retrieval_pb2.WORD_VERDICT_NEUTRAL,
}


def _pair_score(score: PairScore) -> scorer_pb2.PairScore:
    return scorer_pb2.PairScore(
        clip_score=score.clip_score,
        fine_grained_score=score.fine_grained_score,
        f_clip_score=score.f_clip_score,
        aligned_probability=score.aligned_probability,
    )


def explanation_proto(explained: HitExplanation) -> retrieval_pb2.HitExplanation:
    out = retrieval_pb2.HitExplanation(
        words=[
            retrieval_pb2.ExplainedWord(
                word=w.word,
                span=common_pb2.Span(start=w.span[0], end=w.span[1]),
                attribution=w.attribution,
                verdict=VERDICTS[w.verdict],
            )
            for w in explained.words
        ],
        unavailable=explained.unavailable,
    )
    if explained.score is not None:
        out.score.CopyFrom(_pair_score(explained.score))
    return out


def collection_proto(entry: Entry, info: CollectionInfo) -> retrieval_pb2.CollectionInfo:
    return retrieval_pb2.CollectionInfo(
        name=entry.name,
        model=model_ref(entry.model),
        dim=entry.dim,
        points=info.count,
        has_tokens=entry.has_tokens,
    )


def prefixed(err: InvalidArgument, prefix: str) -> InvalidArgument:
    """Returns: the same violations under `prefix` (e.g. `searches[2].`)."""
    return InvalidArgument.from_violations(
        [FieldViolation(f"{prefix}{v.field}", v.description) for v in err.violations]
    )
