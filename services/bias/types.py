"""The bias service's domain values: what convert.py decodes requests into and what the
servable answers. No proto and no torch types here, so the servicer, the worker, the
benchmark and the tests share one vocabulary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from PIL import Image

CueKind = Literal["linguistic", "visual", "inconsistency"]
Region = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of width / height


@dataclass(frozen=True, eq=False)
class PairIn:
    """One decoded pair. `explain` False skips cues and rationale (no occlusion passes)."""

    image: Image.Image
    text: str
    explain: bool = True


@dataclass(frozen=True)
class Cue:
    """Why a verdict leans to "biased".

    kind: linguistic (words: `span` into the text, `text` the words), visual (`region` of the
        image) or inconsistency (the text claims what the image does not show).
    weight: how much P(biased) drops when the cue is occluded (a visual cue's may be negative);
        the inconsistency cue's weight is P(inconsistent) itself.
    """

    kind: CueKind
    weight: float
    description: str
    span: tuple[int, int] | None = None
    text: str = ""
    region: Region | None = None


@dataclass(frozen=True)
class Verdict:
    """The answer for one pair: `biased` is `probability >= threshold`."""

    biased: bool
    probability: float  # calibrated P(biased)
    threshold: float
    inconsistency: float  # in [0, 1]
    cues: tuple[Cue, ...] = ()
    rationale: str = ""


@dataclass(frozen=True)
class Probe:
    """The text-reliance probe: the original pair's verdict, one per counterfactual text (same
    image) and the share of the verdict that follows the text alone,
    text_effect / (text_effect + image_effect)."""

    original: Verdict
    counterfactuals: tuple[Verdict, ...]
    text_reliance: float
    text_effect: float  # mean |P(biased) change| over the counterfactual texts
    image_effect: float  # |P(biased) change| when the image is replaced by a blank one
    flip_rate: float  # share of counterfactual texts that flip the label
