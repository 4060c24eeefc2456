"""Typed client of the scorer service: `ScorerClient.score` (calibrated alignment of image-text
pairs) and `ScorerClient.explain` (which words the image contradicts, and where), returning
frozen dataclasses, never protos."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np

from concord.clients.convert import error_from_rpc
from concord.clients.encoder import ImageInput, Metadata, image_proto
from concord.proto.v1 import common_pb2, scorer_pb2, scorer_pb2_grpc
from concord.wire import ModelId, array_from_tensor, model_id


@dataclass(frozen=True)
class ScorePair:
    """One pair to score; `references` (optional captions of the image) add RefCLIPScore."""

    image: ImageInput
    text: str
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class PairScore:
    """How well one image matches its text.

    clip_score: w * max(cos, 0) (CLIPScore, w = 2.5).
    ref_clip_score: harmonic mean with the best reference (None without references).
    fine_grained_score: FILIP word-patch late interaction.
    f_clip_score: CLIPScore combined with the misaligned words' attributions (CLIP4DM).
    aligned_probability: calibrated P(the pair is aligned).
    """

    clip_score: float
    ref_clip_score: float | None
    fine_grained_score: float
    f_clip_score: float
    aligned_probability: float


@dataclass(frozen=True)
class Scores:
    """The answer to one Score call, in request order."""

    scores: tuple[PairScore, ...]
    model: ModelId


@dataclass(frozen=True)
class WordAlignment:
    """One word of the text: its [start, end) span in the text, CLIP4DM attribution (negative:
    the image contradicts it), best word-patch similarity and that patch (row-major index)."""

    word: str
    span: tuple[int, int]
    attribution: float
    similarity: float
    misaligned: bool
    best_patch: int


@dataclass(frozen=True, eq=False)
class Misalignment:
    """The answer to one ExplainMisalignment call."""

    text: str
    words: tuple[WordAlignment, ...]
    score: PairScore
    model: ModelId
    heatmap: np.ndarray | None = field(default=None)  # (n_words, grid_h, grid_w) when asked

    @property
    def flagged(self) -> tuple[WordAlignment, ...]:
        """The words the image contradicts."""
        return tuple(w for w in self.words if w.misaligned)

    def most_negative(self) -> WordAlignment | None:
        """The word with the lowest attribution (None for a text without words)."""
        return min(self.words, key=lambda w: w.attribution, default=None)


def pair_score_from_proto(score: scorer_pb2.PairScore, has_references: bool) -> PairScore:
    return PairScore(
        clip_score=score.clip_score,
        ref_clip_score=score.ref_clip_score if has_references else None,
        fine_grained_score=score.fine_grained_score,
        f_clip_score=score.f_clip_score,
        aligned_probability=score.aligned_probability,
    )


def _pair(pair: ScorePair | tuple[ImageInput, str]) -> ScorePair:
    return pair if isinstance(pair, ScorePair) else ScorePair(pair[0], pair[1])


def score_request(
    pairs: Sequence[ScorePair | tuple[ImageInput, str]],
) -> tuple[scorer_pb2.ScoreRequest, list[ScorePair]]:
    typed = [_pair(p) for p in pairs]
    request = scorer_pb2.ScoreRequest(
        pairs=[
            scorer_pb2.ScorePair(
                image=image_proto(p.image), text=p.text, references=list(p.references)
            )
            for p in typed
        ]
    )
    return request, typed


def misalignment_from_proto(text: str, reply: scorer_pb2.ExplainResponse) -> Misalignment:
    words = tuple(
        WordAlignment(
            word=w.word,
            span=(w.span.start, w.span.end),
            attribution=w.attribution,
            similarity=w.similarity,
            misaligned=w.misaligned,
            best_patch=w.best_patch,
        )
        for w in reply.words
    )
    heatmap = array_from_tensor(reply.heatmap, "heatmap") if reply.HasField("heatmap") else None
    return Misalignment(
        text=text,
        words=words,
        score=pair_score_from_proto(reply.score, has_references=False),
        model=model_id(reply.model),
        heatmap=heatmap,
    )


class ScorerClient:
    """Blocking scorer calls; failures raise the domain error the server raised.

    Args:
        channel: a channel to the scorer service.
        metadata: call metadata (the bearer token).
        timeout: seconds per call (None: no deadline).
    """

    def __init__(
        self, channel: grpc.Channel, metadata: Metadata = (), timeout: float | None = 60.0
    ) -> None:
        self._stub = scorer_pb2_grpc.ScorerServiceStub(channel)
        self._metadata = metadata
        self._timeout = timeout

    def score(self, pairs: Sequence[ScorePair | tuple[ImageInput, str]]) -> Scores:
        """Score image-text pairs.

        Args:
            pairs: ScorePair (image, text, optional references) or (image, text) tuples;
                images are bytes, ImageData, PIL images or file paths.
        Returns:
            One PairScore per pair, in order, with the scorer model that served.
        """
        request, typed = score_request(pairs)
        try:
            reply = self._stub.Score(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        return Scores(
            scores=tuple(
                pair_score_from_proto(s, bool(p.references))
                for s, p in zip(reply.scores, typed, strict=True)
            ),
            model=model_id(reply.model),
        )

    def explain(
        self,
        image: ImageInput,
        text: str,
        *,
        include_heatmap: bool = False,
        threshold: float = 0.0,
    ) -> Misalignment:
        """Per-word alignment of one pair: which words the image contradicts, and where.

        Args:
            image: bytes, ImageData, a PIL image or a file path.
            text: the caption, prompt or ad text.
            include_heatmap: also return the word x patch-grid similarity map.
            threshold: attribution below -threshold flags a word; 0 = the service default.
        Returns:
            The words with spans in `text`, the pair's scores and the model that served.
        """
        request = scorer_pb2.ExplainRequest(
            image=image_proto(image),
            text=text,
            include_heatmap=include_heatmap,
            threshold=threshold,
        )
        try:
            reply = self._stub.ExplainMisalignment(
                request, timeout=self._timeout, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        return misalignment_from_proto(text, reply)

    def models(self) -> tuple[ModelId, ...]:
        """Returns: the scorer package and its encoder, or () when none is loaded."""
        try:
            info = self._stub.GetInfo(
                common_pb2.GetInfoRequest(), timeout=self._timeout, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        return tuple(model_id(m) for m in info.models) if info.ready else ()


class AsyncScorerClient:
    """The explain call on a grpc.aio channel (create it inside the running event loop), for
    services that call the scorer from a handler (retrieval's explained search hits)."""

    def __init__(
        self, channel: grpc.aio.Channel, metadata: Metadata = (), timeout: float | None = 60.0
    ) -> None:
        self._stub = scorer_pb2_grpc.ScorerServiceStub(channel)
        self._metadata = metadata
        self._timeout = timeout

    async def explain(
        self,
        image: ImageInput,
        text: str,
        *,
        include_heatmap: bool = False,
        threshold: float = 0.0,
        timeout: float | None = None,
    ) -> Misalignment:
        """As `ScorerClient.explain`; `timeout` (seconds) overrides the client's."""
        request = scorer_pb2.ExplainRequest(
            image=image_proto(image),
            text=text,
            include_heatmap=include_heatmap,
            threshold=threshold,
        )
        try:
            reply = await self._stub.ExplainMisalignment(
                request,
                timeout=self._timeout if timeout is None else timeout,
                metadata=self._metadata,
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        return misalignment_from_proto(text, reply)
