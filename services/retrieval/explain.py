"""Explained search hits: for each image hit of a text search, the scorer's CLIP4DM word
attributions for (hit image, query text) turned into per-word verdicts, plus the pair's
alignment. The scorer is reached over gRPC (concord.clients.scorer); no proto types here."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from concord.clients.scorer import AsyncScorerClient, Misalignment, PairScore, WordAlignment
from concord.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    Unavailable,
)
from concord.vectors import ScoredPoint
from concord.wire import ImageData, ModelId
from services.retrieval import thumbnails

MAX_EXPLAIN_HITS = 20  # top_k of a search with explain: one scorer backward pass per hit

Verdict = Literal["supports", "contradicts", "neutral"]

NO_THUMBNAIL = "indexed without store_thumbnails: the service keeps no pixels to explain"


@dataclass(frozen=True)
class ExplainedWord:
    word: str
    span: tuple[int, int]  # [start, end) in the query text
    attribution: float
    verdict: Verdict


@dataclass(frozen=True)
class HitExplanation:
    words: tuple[ExplainedWord, ...] = ()
    score: PairScore | None = None
    unavailable: str = ""  # why there are no words


def check(query_kind: str, top_k: int) -> None:
    """Raises: InvalidArgument when a search with explain has no text query or too many hits."""
    if query_kind != "text":
        raise InvalidArgument("explain", "needs a text query (its words are what gets explained)")
    if top_k > MAX_EXPLAIN_HITS:
        raise InvalidArgument(
            "top_k", f"is {top_k}; with explain the limit is {MAX_EXPLAIN_HITS} hits"
        )


def verdict(word: WordAlignment) -> Verdict:
    """Flagged by the scorer (attribution < -threshold): contradicts; positive: supports."""
    if word.misaligned:
        return "contradicts"
    return "supports" if word.attribution > 0 else "neutral"


def explanation(found: Misalignment) -> HitExplanation:
    return HitExplanation(
        words=tuple(ExplainedWord(w.word, w.span, w.attribution, verdict(w)) for w in found.words),
        score=found.score,
    )


async def explain_hits(
    scorer: AsyncScorerClient,
    address: str,
    text: str,
    hits: Sequence[ScoredPoint],
    timeout: float | None = None,
) -> tuple[list[HitExplanation | None], ModelId | None]:
    """Explain every image hit against `text`, all calls in flight at once on one channel.

    Args:
        scorer: the scorer client; `address` names it in errors.
        text: the query text.
        hits: the search hits, with payloads (image hits carry their thumbnail there).
        timeout: seconds per scorer call (None: the client's).
    Returns:
        One entry per hit (None for text hits) and the scorer model (None when nothing was
        sent to it).
    Raises:
        Unavailable: the scorer cannot be reached. FailedPrecondition: it serves no model.
        InvalidArgument: it refuses the query text (named `text`).
    """
    out: list[HitExplanation | None] = []
    todo: list[tuple[int, ImageData]] = []
    for i, hit in enumerate(hits):
        payload = hit.payload or {}
        if payload.get("modality") != "image":
            out.append(None)
            continue
        image = thumbnails.read(payload)
        out.append(HitExplanation(unavailable=NO_THUMBNAIL) if image is None else None)
        if image is not None:
            todo.append((i, image))
    if not todo:
        return out, None
    replies = await asyncio.gather(
        *(scorer.explain(image, text, timeout=timeout) for _, image in todo),
        return_exceptions=True,
    )
    model: ModelId | None = None
    for (i, _), reply in zip(todo, replies, strict=True):
        if isinstance(reply, Misalignment):
            out[i] = explanation(reply)
            model = model or reply.model
        elif isinstance(reply, InvalidArgument) and _about_image(reply):
            out[i] = HitExplanation(unavailable=f"the scorer refused the stored image: {reply}")
        else:
            raise _relay(reply, address)
    return out, model


def _about_image(err: InvalidArgument) -> bool:
    return all(v.field.startswith("image") for v in err.violations)


def _relay(err: BaseException, address: str) -> BaseException:
    """The caller's view of a failed scorer call (retrieval is the one calling it)."""
    if isinstance(err, Unavailable):
        return Unavailable(
            f"explain needs the scorer at {address}, which is unavailable ({err.message}); "
            "search without explain still works"
        )
    if isinstance(err, FailedPrecondition):
        return FailedPrecondition(f"explain needs the scorer at {address}: {err.message}")
    if isinstance(err, InvalidArgument):
        return InvalidArgument.from_violations(
            [
                FieldViolation(v.field, f"the scorer refuses it: {v.description}")
                for v in err.violations
            ]
        )
    return err
