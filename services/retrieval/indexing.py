"""Turning items into points: validation with field names, one encode call per modality
(through an encoder client, sync or async), deterministic ids and payloads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from concord.clients.types import Embedding, Encoded
from concord.errors import FieldViolation, InvalidArgument
from concord.serving.requests import check_count, text_violations
from concord.vectors import Point, point_id
from concord.vectors.errors import InvalidArgument as VectorInvalidArgument
from concord.vectors.types import PointId, check_payload, parse_point_id
from concord.wire import ImageData, ModelId
from services.retrieval.collections import DENSE, TOKENS

RESERVED_PAYLOAD = ("modality", "text", "thumbnail")  # set by the service (thumbnails.py)
MAX_ITEMS_PER_REQUEST = 1024


def at(where: str, field: str) -> str:
    """Returns: `field` under the request path `where` ("" = the request's top level)."""
    return f"{where}.{field}" if where else field


@dataclass(frozen=True)
class ItemIn:
    """One item to index; `where` is its request path for errors ("items[3]", "" for an
    ingest event)."""

    where: str
    text: str | None = None
    image: ImageData | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    id: str = ""

    @property
    def modality(self) -> Literal["image", "text"]:
        return "text" if self.text is not None else "image"

    @property
    def content(self) -> bytes:
        return self.text.encode() if self.text is not None else self.image.data  # type: ignore[union-attr]


def validate(
    items: Sequence[ItemIn], field_name: str = "items", max_text_chars: int | None = None
) -> None:
    """Raises: InvalidArgument naming every bad item (empty or too long text, no content,
    reserved keys, payload values Qdrant cannot hold, malformed id) or a batch that is empty
    or too large."""
    check_count(len(items), field_name, MAX_ITEMS_PER_REQUEST)
    violations: list[FieldViolation] = []
    for item in items:
        if item.text is None and item.image is None:
            violations.append(FieldViolation(at(item.where, "item"), "needs an image or a text"))
        elif item.text is not None:
            violations += text_violations(item.text, at(item.where, "item.text"), max_text_chars)
        elif item.image is not None and not item.image.data:
            violations.append(FieldViolation(at(item.where, "item.image.data"), "is empty"))
        for key in RESERVED_PAYLOAD:
            if key in item.payload:
                violations.append(
                    FieldViolation(at(item.where, f"payload.{key}"), "is reserved (set by Concord)")
                )
        try:
            check_payload(item.payload, at(item.where, "payload"))
            if item.id:
                parse_point_id(item.id, at(item.where, "id"))
        except VectorInvalidArgument as err:
            violations.extend(err.violations)
    if violations:
        raise InvalidArgument.from_violations(violations)


def _id_value(raw: str) -> PointId:
    return parse_point_id(raw)


@dataclass(frozen=True)
class EncodeCalls:
    """The two encoder calls, sync or async (the servicer and the worker supply their own)."""

    texts: Callable[[list[str]], Any]
    images: Callable[[list[ImageData]], Any]


def _remap(err: InvalidArgument, wheres: list[str], kind: str) -> InvalidArgument:
    """Rename `texts[2]` / `images[2].data` from the encoder to the indexing request's
    `items[7].item.text` / `items[7].item.image.data`."""
    out = []
    for v in err.violations:
        head, sep, rest = v.field.partition("]")
        prefix = f"{kind}s["
        if head.startswith(prefix) and head[len(prefix) :].isdigit() and sep:
            idx = int(head[len(prefix) :])
            target = at(wheres[idx], f"item.{kind}{rest}") if idx < len(wheres) else v.field
            out.append(FieldViolation(target, v.description))
        else:
            out.append(v)
    return InvalidArgument.from_violations(out)


def _split(items: Sequence[ItemIn]) -> tuple[list[int], list[int]]:
    texts = [i for i, it in enumerate(items) if it.text is not None]
    images = [i for i, it in enumerate(items) if it.text is None]
    return texts, images


def _merge(
    items: Sequence[ItemIn],
    texts: list[int],
    images: list[int],
    t: Encoded | None,
    i: Encoded | None,
) -> tuple[list[Embedding], ModelId, int]:
    found: list[Embedding | None] = [None] * len(items)
    for idx, emb in zip(texts, t.embeddings if t else (), strict=True):
        found[idx] = emb
    for idx, emb in zip(images, i.embeddings if i else (), strict=True):
        found[idx] = emb
    done = [e for e in found if e is not None]
    head = t or i
    assert head is not None and len(done) == len(items)
    if t and i and t.model != i.model:  # a model swap between the two calls
        raise InvalidArgument(
            "items", f"encoder switched models mid-request ({t.model}, {i.model})"
        )
    return done, head.model, head.dim


def encode_sync(
    items: Sequence[ItemIn], calls: EncodeCalls
) -> tuple[list[Embedding], ModelId, int]:
    """Encode items with blocking calls. Returns: embeddings in item order, model, dim."""
    texts, images = _split(items)
    try:
        t = calls.texts([items[k].text for k in texts]) if texts else None  # type: ignore[misc]
    except InvalidArgument as err:
        raise _remap(err, [items[k].where for k in texts], "text") from None
    try:
        i = calls.images([items[k].image for k in images]) if images else None  # type: ignore[misc]
    except InvalidArgument as err:
        raise _remap(err, [items[k].where for k in images], "image") from None
    return _merge(items, texts, images, t, i)


async def encode_async(
    items: Sequence[ItemIn], calls: EncodeCalls
) -> tuple[list[Embedding], ModelId, int]:
    """Encode items with awaitable calls. Returns: embeddings in item order, model, dim."""
    texts, images = _split(items)

    async def run(
        fn: Callable[[list[Any]], Awaitable[Encoded]], idx: list[int], kind: str, values: list[Any]
    ) -> Encoded | None:
        if not idx:
            return None
        try:
            return await fn(values)
        except InvalidArgument as err:
            raise _remap(err, [items[k].where for k in idx], kind) from None

    t = await run(calls.texts, texts, "text", [items[k].text for k in texts])
    i = await run(calls.images, images, "image", [items[k].image for k in images])
    return _merge(items, texts, images, t, i)


def build_points(
    items: Sequence[ItemIn], embeddings: Sequence[Embedding], collection: str, tokens: bool
) -> list[Point]:
    """Returns: one point per item: id (given, else the content hash in the collection's
    namespace), "dense" (+ "tokens" when asked) vectors, payload with modality and text."""
    points = []
    for item, emb in zip(items, embeddings, strict=True):
        pid = _id_value(item.id) if item.id else point_id(item.content, namespace=collection)
        vectors: dict[str, Any] = {DENSE: emb.vector}
        if tokens and emb.tokens is not None and len(emb.tokens.vectors):
            vectors[TOKENS] = emb.tokens.vectors
        payload = {**item.payload, "modality": item.modality}
        if item.text is not None:
            payload["text"] = item.text
        points.append(Point(pid, vectors, payload))
    return points
