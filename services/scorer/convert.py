"""Scorer wire <-> domain: request validation with field names, and results -> protos."""

from __future__ import annotations

from collections.abc import Sequence

from concord.errors import FieldViolation, InvalidArgument
from concord.media import PixelBudget, decode_image
from concord.models.alignment import PairScores, WordScore
from concord.proto.v1 import common_pb2, events_pb2, scorer_pb2
from concord.serving.requests import check_count, text_violations
from concord.wire import ModelId, model_ref, tensor_from_array
from services.scorer.servable import Explained, PairIn, Scored


def check_references(
    pairs: Sequence[scorer_pb2.ScorePair], limits: tuple[int, int] | None
) -> None:
    """Raises: InvalidArgument when a pair, or the request, carries more references than
    `limits` (per pair, per request) allow; counted before anything is decoded or encoded."""
    if limits is None:
        return
    per_pair, per_request = limits
    violations = [
        FieldViolation(f"pairs[{i}].references", f"has {n}; the limit is {per_pair}")
        for i, pair in enumerate(pairs)
        if (n := len(pair.references)) > per_pair
    ]
    total = sum(len(pair.references) for pair in pairs)
    if total > per_request:
        violations.append(
            FieldViolation("pairs", f"carry {total} references; the limit is {per_request}")
        )
    if violations:
        raise InvalidArgument.from_violations(violations)


def decode_pairs(
    pairs: Sequence[scorer_pb2.ScorePair],
    max_pairs: int,
    max_chars: int,
    max_references: tuple[int, int] | None = None,
) -> list[PairIn]:
    """Validate and decode a Score request's pairs.

    Returns:
        The decoded pairs, in order.
    Raises:
        InvalidArgument: no pairs or too many; naming every bad field otherwise
            (`pairs[3].text`, `pairs[0].image.data`, `pairs[1].references[2]`).
    """
    check_count(len(pairs), "pairs", max_pairs, "pairs")
    check_references(pairs, max_references)
    violations: list[FieldViolation] = []
    decoded: list[PairIn] = []
    budget = PixelBudget()  # decoded pixels of the whole request, charged before decoding
    for i, pair in enumerate(pairs):
        where = f"pairs[{i}]"
        violations += text_violations(pair.text, f"{where}.text", max_chars)
        for j, ref in enumerate(pair.references):
            violations += text_violations(ref, f"{where}.references[{j}]", max_chars)
        try:
            image = decode_image(
                pair.image.data, pair.image.media_type, field=f"{where}.image", budget=budget
            )
        except InvalidArgument as err:
            violations.extend(err.violations)
            continue
        decoded.append(PairIn(image, pair.text, tuple(pair.references)))
    if violations:
        decoded.clear()  # not pinned by the error's traceback until a gc cycle
        raise InvalidArgument.from_violations(violations)
    return decoded


def pair_score(scores: PairScores, probability: float) -> scorer_pb2.PairScore:
    return scorer_pb2.PairScore(
        clip_score=scores.clip_score,
        ref_clip_score=scores.ref_clip_score or 0.0,
        fine_grained_score=scores.fine_grained_score,
        f_clip_score=scores.f_clip_score,
        aligned_probability=probability,
    )


def score_response(scored: Sequence[Scored], model: ModelId) -> scorer_pb2.ScoreResponse:
    return scorer_pb2.ScoreResponse(
        scores=[pair_score(s.scores, s.probability) for s in scored], model=model_ref(model)
    )


def span(word: WordScore) -> common_pb2.Span:
    return common_pb2.Span(start=word.span[0], end=word.span[1])


def explain_response(
    explained: Explained, model: ModelId, include_heatmap: bool
) -> scorer_pb2.ExplainResponse:
    e = explained.explanation
    response = scorer_pb2.ExplainResponse(
        words=[
            scorer_pb2.WordAlignment(
                word=w.word,
                span=span(w),
                attribution=w.attribution,
                similarity=w.similarity,
                misaligned=w.misaligned,
                best_patch=w.best_patch,
            )
            for w in e.words
        ],
        score=pair_score(e.scores, explained.probability),
        model=model_ref(model),
    )
    if include_heatmap:
        response.heatmap.CopyFrom(tensor_from_array(e.heatmap))
    return response


def flagged_words(explained: Explained) -> list[events_pb2.FlaggedWord]:
    """The words the image contradicts, as the audit event lists them."""
    return [
        events_pb2.FlaggedWord(word=w.word, span=span(w), attribution=w.attribution)
        for w in explained.explanation.words
        if w.misaligned
    ]
