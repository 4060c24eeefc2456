"""Linker wire <-> domain: request validation naming the wrong field (`mentions[3].span`,
`entities[1].images[0].data`, `source.triples[2].head`, `seeds[0].source_id`), and results
-> protos. Shared by the servicer and the Kafka workers, so an event is checked as a call is."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from PIL import Image

from concord.config import LinkerSettings
from concord.errors import FieldViolation, InvalidArgument
from concord.media import PixelBudget, decode_image
from concord.proto.v1 import linker_pb2
from concord.serving.requests import count_violations, text_violations
from concord.wire import ModelId, model_ref, payload_to_dict
from services.linker.kb import check_name
from services.linker.types import AlignIn, EntityIn, GraphIn, MentionIn, Pair, Ranked

DEFAULT_TOP_K = 5
MAX_ATTRIBUTES = 256  # keys per entity: UMAEA's attribute vocabulary grows with them
MAX_ATTRIBUTE_DEPTH = 8
TRIPLES_PER_ENTITY = 50  # a graph may carry at most this many triples per entity


@dataclass(frozen=True)
class Limits:
    """The per-request limits of the linker settings."""

    max_mentions: int
    max_entities: int
    max_text_chars: int
    max_top_k: int
    max_images: int
    max_graph_entities: int

    @classmethod
    def of(cls, linker: LinkerSettings, *, job: bool = False) -> Limits:
        """Returns: the limits of a call (`job`: of an align job, whose graphs may be larger)."""
        return cls(
            linker.max_mentions_per_request,
            linker.max_entities_per_request,
            linker.max_text_chars,
            linker.max_top_k,
            linker.max_images_per_entity,
            linker.max_job_graph_entities if job else linker.max_graph_entities,
        )


def _raise(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument.from_violations(violations)


# ----------------------------------------------------------------------------- entities


def decode_entity(
    entity: linker_pb2.Entity,
    where: str,
    limits: Limits,
    budget: PixelBudget | None = None,
    *,
    needs_content: bool = True,
) -> tuple[EntityIn | None, list[FieldViolation]]:
    """Check and decode one entity.

    Args:
        where: its field path (`entities[3]`).
        needs_content: an entity must have a text or an image (a KB entity; a graph entity
            may be structure only).
    Returns:
        (the entity, or None when it is bad; its violations).
    """
    found: list[FieldViolation] = []
    if not entity.id.strip():
        found.append(FieldViolation(f"{where}.id", "is empty"))
    elif len(entity.id) > 256:
        found.append(FieldViolation(f"{where}.id", "is longer than 256 characters"))
    for name in ("name", "description"):
        value = getattr(entity, name)
        if len(value) > limits.max_text_chars:
            found.append(
                FieldViolation(
                    f"{where}.{name}",
                    f"has {len(value)} characters; the limit is {limits.max_text_chars}",
                )
            )
    try:
        attributes = payload_to_dict(entity.attributes)
    except (ValueError, RecursionError) as err:  # a Struct may carry NaN / infinity
        found.append(FieldViolation(f"{where}.attributes", f"is not JSON: {str(err)[:120]}"))
        attributes = {}
    found += attribute_violations(attributes, f"{where}.attributes")
    has_text = bool(entity.name.strip() or entity.description.strip() or attributes)
    if needs_content and not has_text and not entity.images:
        found.append(
            FieldViolation(where, "has neither text (name, description, attributes) nor an image")
        )
    if len(entity.images) > limits.max_images:
        found.append(
            FieldViolation(
                f"{where}.images",
                f"has {len(entity.images)} images; the limit is {limits.max_images}",
            )
        )
    images: list[Image.Image] = []
    for j, image in enumerate(entity.images[: limits.max_images]):
        try:
            images.append(
                decode_image(
                    image.data, image.media_type, field=f"{where}.images[{j}]", budget=budget
                )
            )
        except InvalidArgument as err:
            found.extend(err.violations)
    if found:
        return None, found
    decoded = EntityIn(entity.id, entity.name, entity.description, attributes, tuple(images))
    return decoded, []


def attribute_violations(attributes: dict[str, Any], where: str) -> list[FieldViolation]:
    """The problems of an entity's attributes: too many keys, nesting too deep, a number
    that is not finite (a Struct carries NaN and infinity, a payload must not)."""
    if len(attributes) > MAX_ATTRIBUTES:
        return [FieldViolation(where, f"has {len(attributes)} keys; the limit is {MAX_ATTRIBUTES}")]

    def walk(value: Any, at: str, depth: int) -> list[FieldViolation]:
        if depth > MAX_ATTRIBUTE_DEPTH:
            return [FieldViolation(at, f"nests deeper than {MAX_ATTRIBUTE_DEPTH} levels")]
        if isinstance(value, float) and not math.isfinite(value):
            return [FieldViolation(at, f"is {value}; numbers must be finite")]
        if isinstance(value, dict):
            return [v for k, item in value.items() for v in walk(item, f"{at}.{k[:64]}", depth + 1)]
        if isinstance(value, list):
            return [v for i, item in enumerate(value) for v in walk(item, f"{at}[{i}]", depth + 1)]
        return []

    return walk(attributes, where, 0)[:10]


def decode_entities(
    entities: Sequence[linker_pb2.Entity], limits: Limits, field: str = "entities"
) -> list[EntityIn]:
    """Check and decode an UpsertEntities request's entities.

    Raises:
        InvalidArgument: none or too many; else naming every bad field (`entities[3]`: no
            text nor image; `entities[1].images[0].data`: a bad image; `entities[2].id`:
            empty or repeated).
    """
    _raise(count_violations(len(entities), field, limits.max_entities, "entities"))
    violations: list[FieldViolation] = []
    decoded: list[EntityIn] = []
    seen: dict[str, int] = {}
    budget = PixelBudget()
    for i, entity in enumerate(entities):
        where = f"{field}[{i}]"
        if entity.id in seen:
            violations.append(FieldViolation(f"{where}.id", f"repeats {field}[{seen[entity.id]}]"))
            continue
        seen[entity.id] = i
        one, found = decode_entity(entity, where, limits, budget)
        violations += found
        if one is not None:
            decoded.append(one)
    _raise(violations)
    return decoded


def check_ids(ids: Sequence[str], limits: Limits, field: str = "ids") -> list[str]:
    """Returns: the ids. Raises: InvalidArgument (none, too many, or an empty one)."""
    violations = count_violations(len(ids), field, limits.max_entities, "ids")
    violations += [FieldViolation(f"{field}[{i}]", "is empty") for i, v in enumerate(ids) if not v]
    _raise(violations)
    return list(ids)


# ----------------------------------------------------------------------------- mentions


def decode_mentions(mentions: Sequence[linker_pb2.Mention], limits: Limits) -> list[MentionIn]:
    """Check and decode a LinkMentions request's mentions.

    Raises:
        InvalidArgument: none or too many; else naming every bad field (`mentions[0].text`
            empty or too long, `mentions[3].span` outside the text, `mentions[1].image.data`).
    """
    _raise(count_violations(len(mentions), "mentions", limits.max_mentions, "mentions"))
    violations: list[FieldViolation] = []
    decoded: list[MentionIn] = []
    budget = PixelBudget()
    for i, mention in enumerate(mentions):
        where = f"mentions[{i}]"
        found = text_violations(mention.text, f"{where}.text", limits.max_text_chars)
        start, end = mention.span.start, mention.span.end
        if not found and not 0 <= start < end <= len(mention.text):
            found.append(
                FieldViolation(
                    f"{where}.span",
                    f"[{start}, {end}) is not a non-empty range inside the text of "
                    f"{len(mention.text)} characters",
                )
            )
        elif not found and not mention.text[start:end].strip():
            found.append(FieldViolation(f"{where}.span", "covers only whitespace"))
        image = None
        if mention.HasField("image"):
            try:
                image = decode_image(
                    mention.image.data,
                    mention.image.media_type,
                    field=f"{where}.image",
                    budget=budget,
                )
            except InvalidArgument as err:
                found.extend(err.violations)
        violations += found
        if not found:
            decoded.append(MentionIn(mention.text, (start, end), image))
    _raise(violations)
    return decoded


def check_top_k(
    top_k: int, limits: Limits, field: str = "top_k", default: int = DEFAULT_TOP_K
) -> int:
    """Returns: `top_k` (`default` for 0). Raises: InvalidArgument outside 0..max_top_k."""
    if not 0 <= top_k <= limits.max_top_k:
        raise InvalidArgument(field, f"must be between 1 and {limits.max_top_k} (0: {default})")
    return top_k or default


def link_request(
    request: linker_pb2.LinkMentionsRequest, limits: Limits
) -> tuple[str, list[MentionIn], int]:
    """Returns: (knowledge base, mentions, top_k). Raises: InvalidArgument naming fields."""
    violations: list[FieldViolation] = []
    try:
        check_name(request.knowledge_base)
    except InvalidArgument as err:
        violations += err.violations
    try:
        top_k = check_top_k(request.top_k, limits)
    except InvalidArgument as err:
        violations += err.violations
    try:
        mentions = decode_mentions(request.mentions, limits)
    except InvalidArgument as err:
        violations += err.violations
    _raise(violations)
    return request.knowledge_base, mentions, top_k


# ----------------------------------------------------------------------------- graphs


def decode_graph(graph: linker_pb2.Graph, where: str, limits: Limits) -> GraphIn:
    """Check and decode one graph (`source` or `target`).

    Raises:
        InvalidArgument: fewer than 2 or too many entities, empty or repeated ids, bad images,
            a triple naming an entity the graph does not have (`source.triples[2].head`).
    """
    field = f"{where}.entities"
    if len(graph.entities) < 2:
        raise InvalidArgument(field, f"has {len(graph.entities)} entities; send at least 2")
    if len(graph.entities) > limits.max_graph_entities:
        raise InvalidArgument(
            field,
            f"has {len(graph.entities)} entities; the limit is {limits.max_graph_entities} "
            "(larger graphs go through SubmitAlignJob)",
        )
    max_triples = TRIPLES_PER_ENTITY * len(graph.entities)
    if len(graph.triples) > max_triples:
        raise InvalidArgument(
            f"{where}.triples",
            f"has {len(graph.triples)} triples; the limit is {TRIPLES_PER_ENTITY} per entity",
        )
    violations: list[FieldViolation] = []
    entities: list[EntityIn] = []
    index: dict[str, int] = {}
    budget = PixelBudget(limit=2**62)  # graphs are bounded by their entity count
    for i, entity in enumerate(graph.entities):
        at = f"{field}[{i}]"
        if entity.id in index:
            violations.append(FieldViolation(f"{at}.id", f"repeats {field}[{index[entity.id]}]"))
            continue
        one, found = decode_entity(entity, at, limits, budget, needs_content=False)
        violations += found
        index[entity.id] = i
        if one is not None:
            entities.append(one)
    triples: list[tuple[int, str, int]] = []
    for t, triple in enumerate(graph.triples):
        at = f"{where}.triples[{t}]"
        for part in ("head", "tail"):
            name = getattr(triple, part)
            if name not in index:
                violations.append(FieldViolation(f"{at}.{part}", f"names unknown entity {name!r}"))
        if not triple.relation.strip():
            violations.append(FieldViolation(f"{at}.relation", "is empty"))
        if triple.head in index and triple.tail in index:
            triples.append((index[triple.head], triple.relation, index[triple.tail]))
    _raise(violations)
    return GraphIn(tuple(entities), tuple(triples))


def align_request(request: linker_pb2.AlignGraphsRequest, limits: Limits) -> AlignIn:
    """Check and decode an AlignGraphs request (or an align job's graphs).

    Raises:
        InvalidArgument: naming every bad field; `seeds` when there are none,
            `seeds[0].source_id` / `.target_id` naming an id its graph does not have.
    """
    violations: list[FieldViolation] = []
    graphs: dict[str, GraphIn] = {}
    for where in ("source", "target"):
        try:
            graphs[where] = decode_graph(getattr(request, where), where, limits)
        except InvalidArgument as err:
            violations += err.violations
    seeds: list[tuple[int, int]] = []
    if not request.seeds:
        violations.append(FieldViolation("seeds", "is empty; send at least one known pair"))
    source_ids = {e.id: i for i, e in enumerate(request.source.entities)}
    target_ids = {e.id: i for i, e in enumerate(request.target.entities)}
    for s, seed in enumerate(request.seeds):
        ok = True
        for part, ids, graph in (
            ("source_id", source_ids, "source"),
            ("target_id", target_ids, "target"),
        ):
            value = getattr(seed, part)
            if value not in ids:
                violations.append(
                    FieldViolation(f"seeds[{s}].{part}", f"names no entity of the {graph} graph")
                )
                ok = False
        if ok:
            seeds.append((source_ids[seed.source_id], target_ids[seed.target_id]))
    try:
        top_k = check_top_k(request.top_k, limits, default=1)
    except InvalidArgument as err:
        violations += err.violations
    _raise(violations)
    return AlignIn(graphs["source"], graphs["target"], tuple(dict.fromkeys(seeds)), top_k)


# ----------------------------------------------------------------------------- results


def _optional(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def candidate(ranked: Ranked) -> linker_pb2.Candidate:
    out = linker_pb2.Candidate(
        entity_id=ranked.entity_id,
        name=ranked.name,
        description=ranked.description,
        score=ranked.score,
    )
    for matcher in ("text_coarse", "text_fine", "visual", "cross_modal"):
        value = _optional(getattr(ranked, matcher))
        if value is not None:
            setattr(out, matcher, value)
    return out


def link_response(
    links: Sequence[Sequence[Ranked]], model: ModelId
) -> linker_pb2.LinkMentionsResponse:
    return linker_pb2.LinkMentionsResponse(
        links=[
            linker_pb2.MentionLinks(candidates=[candidate(r) for r in ranked]) for ranked in links
        ],
        model=model_ref(model),
    )


def aligned_pair(pair: Pair) -> linker_pb2.AlignedPair:
    return linker_pb2.AlignedPair(
        source_id=pair.source_id, target_id=pair.target_id, score=pair.score
    )


def now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp
