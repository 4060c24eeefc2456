"""Training-only rewordings of drafted captions, so that the text side learns meanings rather than
one grammar's surface: colour and shape synonyms, the colour said after its noun ("a circle that
is red"), and sentence frames the drafting grammar never writes.

A caption and its foils are reworded together with one `Rewording` (the same synonyms, the same
frame), so a foil still differs from its caption in the one place that makes it false.

None of these words or frames is one that `pipelines.encoder.wording` holds out for the
unseen-wording test: that test measures transfer to wordings training never showed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from pipelines.data.vocab import PLURALS, article

# Disjoint from wording.COLOUR_SYNONYMS / SHAPE_SYNONYMS (checked by the unit test).
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("ruby", "cherry-red"),
    "orange": ("apricot", "pumpkin-orange"),
    "yellow": ("canary-yellow", "sunflower"),
    "green": ("lime", "jade"),
    "cyan": ("teal", "aquamarine"),
    "blue": ("navy", "sapphire"),
    "purple": ("plum", "mauve"),
    "pink": ("fuchsia", "bubblegum-pink"),
    "brown": ("cocoa", "walnut-brown"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("orb", "round dot"),
    "square": ("block", "square tile"),
    "triangle": ("wedge", "trigon"),
    "diamond": ("kite", "diamond shape"),
    "hexagon": ("hex", "honeycomb cell"),
    "star": ("star shape", "pentagram"),
    "cross": ("crosshair", "cross shape"),
    "heart": ("valentine", "heart shape"),
    "crescent": ("crescent moon", "croissant shape"),
}
# Frames that open a sentence (the drafting grammar's own are "an image of", "a picture of",
# "a render showing", "there are N shapes").
FRAMES: tuple[str, ...] = (
    "this image shows {}",
    "there is {}",
    "the scene contains {}",
    "{} can be seen",
)
POSTPOSED: tuple[str, ...] = ("{det}{noun} that is {colour}", "{det}{noun} in {colour}")

_COLOUR = "|".join(COLOUR_WORDS)
_SHAPE = "|".join(sorted({*SHAPE_WORDS, *PLURALS.values()}, key=len, reverse=True))
_NP = re.compile(rf"\b(an? |the |one |two |three |four |five )?({_COLOUR}) ({_SHAPE})\b", re.I)
_PLURAL_OF = {p: s for s, p in PLURALS.items()}
# A frame goes only around a bare list of noun phrases, never around a sentence with its own verb.
_FRAMEABLE = re.compile(
    r"^(?!an? (picture|image|render)\b)(an? |one |two |three |four |five )", re.I
)
_VERB = re.compile(r"\b(is|are|there)\b", re.I)


@dataclass(frozen=True)
class Rewording:
    """One choice of synonyms, noun-phrase order and frame, applied alike to a caption and its foils."""

    colours: dict[str, str]  # canonical colour -> the word said instead (absent: unchanged)
    shapes: dict[str, str]
    postposed: str | None  # a POSTPOSED pattern, or None to keep "a red circle"
    frame: str | None  # a FRAMES pattern, or None

    @staticmethod
    def draw(rng: np.random.Generator, synonym_p: float = 0.5) -> Rewording:
        def pick(table: dict[str, tuple[str, ...]]) -> dict[str, str]:
            return {
                k: v[int(rng.integers(len(v)))]
                for k, v in table.items()
                if rng.uniform() < synonym_p
            }

        colours, shapes = pick(COLOUR_WORDS), pick(SHAPE_WORDS)
        postposed = POSTPOSED[int(rng.integers(len(POSTPOSED)))] if rng.uniform() < 0.4 else None
        frame = FRAMES[int(rng.integers(len(FRAMES)))] if rng.uniform() < 0.4 else None
        return Rewording(colours, shapes, postposed, frame)

    def apply(self, text: str) -> str:
        """`text` reworded; words outside the rewording's tables are kept as they are."""
        out = _NP.sub(self._noun_phrase, text)
        if self.frame is not None and _FRAMEABLE.match(text) and not _VERB.search(text):
            out = self.frame.format(out[:1].lower() + out[1:])
        return out[:1].upper() + out[1:]

    def _noun_phrase(self, m: re.Match[str]) -> str:
        det, colour, noun = (m.group(1) or ""), m.group(2).lower(), m.group(3).lower()
        singular = _PLURAL_OF.get(noun, noun)
        plural = singular != noun
        word = self.shapes.get(singular, singular)
        noun_said = word + "s" if plural else word
        colour_said = self.colours.get(colour, colour)
        indefinite = det.lower() in ("a ", "an ")  # its article follows the new first word
        if self.postposed is None:
            phrase = f"{colour_said} {noun_said}"
            return f"{article(phrase)} {phrase}" if indefinite else f"{det}{phrase}"
        if indefinite:
            det = article(noun_said) + " "
        said = self.postposed.format(det=det, noun=noun_said, colour=colour_said)
        return said.replace(" that is ", " that are ") if plural else said
