"""Typed client of the bias service: `BiasClient.detect` (label, calibrated P(biased), the cues
that drove it and a rationale, per image-text pair) and `BiasClient.probe` (how much of the
verdict follows the text alone), returning frozen dataclasses, never protos."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import grpc

from concord.clients.convert import error_from_rpc
from concord.clients.encoder import ImageInput, Metadata, image_proto
from concord.proto.v1 import bias_pb2, bias_pb2_grpc, common_pb2
from concord.wire import ModelId, model_id

CueKind = Literal["linguistic", "visual", "inconsistency"]

_KINDS: dict[int, CueKind] = {
    bias_pb2.Cue.KIND_LINGUISTIC: "linguistic",
    bias_pb2.Cue.KIND_VISUAL: "visual",
    bias_pb2.Cue.KIND_INCONSISTENCY: "inconsistency",
}


@dataclass(frozen=True)
class Cue:
    """One reason behind a verdict.

    kind: "linguistic" (loaded or framing words: `span` is their [start, end) range in the
        text, `text` the words), "visual" (`region` = (x0, y0, x1, y1) of the image as
        fractions of its width and height, top left = (0, 0)) or "inconsistency" (the text
        claims what the image does not show).
    weight: how much P(biased) drops when the words or the region are occluded (a region's
        may be negative); for the inconsistency cue, P(inconsistent).
    """

    kind: CueKind
    weight: float
    description: str
    span: tuple[int, int] | None = None
    text: str = ""
    region: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class BiasVerdict:
    """The verdict on one pair: `label` is "biased" when `probability` >= `threshold`."""

    label: Literal["biased", "neutral"]
    probability: float  # calibrated P(biased)
    threshold: float
    inconsistency: float  # image-text inconsistency in [0, 1]
    cues: tuple[Cue, ...]  # strongest first; () when asked for labels only
    rationale: str

    @property
    def biased(self) -> bool:
        return self.label == "biased"

    @property
    def linguistic(self) -> tuple[Cue, ...]:
        """The loaded or framing words, strongest first."""
        return tuple(c for c in self.cues if c.kind == "linguistic")


@dataclass(frozen=True)
class Detection:
    """The answer to one Detect call, in request order."""

    verdicts: tuple[BiasVerdict, ...]
    model: ModelId


@dataclass(frozen=True)
class TextReliance:
    """The answer to one ProbeTextReliance call: the pair's verdict, one per counterfactual
    text (same image, without cues) and the share of the verdict that follows the text alone:
    text_effect / (text_effect + image_effect), 0 = the image decides, 1 = the text does."""

    original: BiasVerdict
    counterfactuals: tuple[BiasVerdict, ...]
    text_reliance: float
    model: ModelId
    text_effect: float  # mean |P(biased) change| over the counterfactual texts
    image_effect: float  # |P(biased) change| when the image is replaced by a blank one
    flip_rate: float  # share of counterfactual texts that flip the label


def cue_from_proto(cue: bias_pb2.Cue) -> Cue:
    r = cue.region
    return Cue(
        kind=_KINDS.get(cue.kind, "linguistic"),
        weight=cue.weight,
        description=cue.description,
        span=(cue.span.start, cue.span.end) if cue.HasField("span") else None,
        text=cue.text,
        region=(r.x0, r.y0, r.x1, r.y1) if cue.HasField("region") else None,
    )


def verdict_from_proto(verdict: bias_pb2.BiasVerdict) -> BiasVerdict:
    return BiasVerdict(
        label="biased" if verdict.label == bias_pb2.BIAS_LABEL_BIASED else "neutral",
        probability=verdict.probability,
        threshold=verdict.threshold,
        inconsistency=verdict.inconsistency,
        cues=tuple(cue_from_proto(c) for c in verdict.cues),
        rationale=verdict.rationale,
    )


def detect_request(
    pairs: Sequence[tuple[ImageInput, str]], labels_only: bool = False
) -> bias_pb2.DetectRequest:
    return bias_pb2.DetectRequest(
        pairs=[bias_pb2.BiasPair(image=image_proto(i), text=t) for i, t in pairs],
        labels_only=labels_only,
    )


class BiasClient:
    """Blocking bias calls; failures raise the domain error the server raised.

    Args:
        channel: a channel to the bias service.
        metadata: call metadata (the bearer token).
        timeout: seconds per call (None: no deadline).
    """

    def __init__(
        self, channel: grpc.Channel, metadata: Metadata = (), timeout: float | None = 60.0
    ) -> None:
        self._stub = bias_pb2_grpc.BiasServiceStub(channel)
        self._metadata = metadata
        self._timeout = timeout

    def detect(
        self, pairs: Sequence[tuple[ImageInput, str]], *, labels_only: bool = False
    ) -> Detection:
        """Flag biased image-text pairs.

        Args:
            pairs: (image, text) tuples; images are bytes, ImageData, PIL images or paths.
            labels_only: skip cues and rationale (faster: no occlusion passes).
        Returns:
            One BiasVerdict per pair, in order, with the bias model that served.
        """
        try:
            reply = self._stub.Detect(
                detect_request(pairs, labels_only), timeout=self._timeout, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        return Detection(
            verdicts=tuple(verdict_from_proto(v) for v in reply.verdicts),
            model=model_id(reply.model),
        )

    def probe(self, image: ImageInput, text: str, counterfactuals: Sequence[str]) -> TextReliance:
        """ "Blind faith in text": judge the same image with altered texts.

        Args:
            image: bytes, ImageData, a PIL image or a file path.
            text: the pair's own text.
            counterfactuals: altered texts (e.g. the loaded words neutralised) for the same image.
        Returns:
            The original verdict, one per counterfactual, and the text reliance in [0, 1].
        """
        request = bias_pb2.ProbeRequest(
            pair=bias_pb2.BiasPair(image=image_proto(image), text=text),
            counterfactual_texts=list(counterfactuals),
        )
        try:
            reply = self._stub.ProbeTextReliance(
                request, timeout=self._timeout, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        return TextReliance(
            original=verdict_from_proto(reply.original),
            counterfactuals=tuple(verdict_from_proto(v) for v in reply.counterfactuals),
            text_reliance=reply.text_reliance,
            model=model_id(reply.model),
            text_effect=reply.text_effect,
            image_effect=reply.image_effect,
            flip_rate=reply.flip_rate,
        )

    def models(self) -> tuple[ModelId, ...]:
        """Returns: the bias package and its encoder, or () when none is loaded."""
        try:
            info = self._stub.GetInfo(
                common_pb2.GetInfoRequest(), timeout=self._timeout, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        return tuple(model_id(m) for m in info.models) if info.ready else ()
