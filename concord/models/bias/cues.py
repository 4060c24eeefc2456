"""The cues behind a bias verdict, by occlusion (pure torch, no I/O), and the rationale text.

- Linguistic cues: each word of the text is removed in turn (its tokens masked out of
  attention and pooling) and the drop in P(biased) is the word's weight; the words whose removal
  lowers P(biased) most are the loaded or framing words. Character spans of the ORIGINAL text.
- Visual cue: each cell of a grid over the image (plus the four quadrants) is filled with the
  image's mean colour; the region whose occlusion changes P(biased) most is the cue (box in
  [0, 1] image coordinates, x0, y0, x1, y1).
- Inconsistency cue: P(inconsistent) from the shared concord-encoder (`calibration`).
Occlusion needs no gradients, so it works the same for frozen, LoRA and fully tuned models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from concord.models.alignment.spans import group_words
from concord.models.bias.calibration import biased_probability
from concord.models.bias.classifier import BiasClassifier

CueKind = Literal["linguistic", "visual", "inconsistency"]
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in [0, 1]


@dataclass(frozen=True)
class Cue:
    kind: CueKind
    weight: float  # linguistic / visual: change in P(biased) when occluded; inconsistency: P
    description: str
    span: tuple[int, int] | None = None  # linguistic: characters [start, end) of the text
    region: Box | None = None  # visual: the occluded box


@dataclass(frozen=True)
class WordAttribution:
    span: tuple[int, int]  # characters [start, end) of the text
    word: str
    delta: float  # P(biased) with the word minus P(biased) without it


@dataclass(frozen=True)
class RegionAttribution:
    region: Box
    delta: float  # P(biased) with the image minus P(biased) with the region occluded


@torch.no_grad()
def word_attributions(
    classifier: BiasClassifier,
    input_ids: Tensor,
    attention_mask: Tensor,
    offsets: Sequence[Sequence[tuple[int, int]]],
    texts: Sequence[str],
    image_states: Tensor | None,
    temperature: float = 1.0,
) -> list[list[WordAttribution]]:
    """Per text, every word's occlusion effect on P(biased).

    Args:
        input_ids, attention_mask: (B, T) from a TextTokenizer (its `offsets` too).
        texts: the B original texts (word spans are found in them).
        image_states: (B, image_width) from `classifier.image_states`, or None (text-only).
    Returns:
        Per text, one WordAttribution per word that has tokens, in text order.
    """
    device = input_ids.device
    out: list[list[WordAttribution]] = []
    for i, text in enumerate(texts):
        words = group_words(text, offsets[i])
        if not words:
            out.append([])
            continue
        masks = attention_mask[i].repeat(len(words) + 1, 1)
        for k, (_, positions) in enumerate(words, start=1):
            masks[k, list(positions)] = 0
        ids = input_ids[i].repeat(len(words) + 1, 1)
        image = None if image_states is None else image_states[i].expand(len(words) + 1, -1)
        text_states = classifier.text_states(ids, masks.to(device))
        probs = biased_probability(classifier.classify(text_states, image), temperature)
        out.append(
            [
                WordAttribution(span, text[span[0] : span[1]], float(probs[0] - probs[k]))
                for k, (span, _) in enumerate(words, start=1)
            ]
        )
    return out


def occlusion_boxes(grid: int = 4) -> list[Box]:
    """The regions `region_attributions` occludes: a grid x grid tiling plus the 4 quadrants."""
    step = 1.0 / grid
    cells = [
        (c * step, r * step, (c + 1) * step, (r + 1) * step)
        for r in range(grid)
        for c in range(grid)
    ]
    quads = [(x, y, x + 0.5, y + 0.5) for y in (0.0, 0.5) for x in (0.0, 0.5)]
    return cells + (quads if grid > 2 else [])


@torch.no_grad()
def region_attributions(
    classifier: BiasClassifier,
    pixels: Tensor,
    text_states: Tensor | None,
    temperature: float = 1.0,
    grid: int = 4,
) -> list[list[RegionAttribution]]:
    """Per image, every `occlusion_boxes` region's effect on P(biased).

    Args:
        pixels: (B, 3, S, S) in [0, 1].
        text_states: (B, text_width) from `classifier.text_states`, or None (image-only).
    Returns:
        Per image, one RegionAttribution per box, in `occlusion_boxes` order.
    """
    boxes = occlusion_boxes(grid)
    size = pixels.shape[-1]
    out: list[list[RegionAttribution]] = []
    for i in range(pixels.shape[0]):
        image = pixels[i]
        fill = image.mean(dim=(1, 2), keepdim=True)
        variants = image.repeat(len(boxes) + 1, 1, 1, 1)
        for k, (x0, y0, x1, y1) in enumerate(boxes, start=1):
            a, b = round(y0 * size), round(y1 * size)
            c, d = round(x0 * size), round(x1 * size)
            variants[k, :, a:b, c:d] = fill
        text = None if text_states is None else text_states[i].expand(len(boxes) + 1, -1)
        logits = classifier.classify(text, classifier.image_states(variants))
        probs = biased_probability(logits, temperature)
        out.append(
            [RegionAttribution(box, float(probs[0] - probs[k])) for k, box in enumerate(boxes, 1)]
        )
    return out


def linguistic_cues(
    attributions: Sequence[WordAttribution], top_k: int = 3, min_delta: float = 0.02
) -> list[Cue]:
    """The up to `top_k` words whose removal lowers P(biased) by at least `min_delta`,
    strongest first."""
    ranked = sorted(attributions, key=lambda a: a.delta, reverse=True)
    return [
        Cue("linguistic", a.delta, f"the word {a.word!r} raises P(biased) by {a.delta:.2f}", a.span)
        for a in ranked[:top_k]
        if a.delta >= min_delta
    ]


def visual_cue(attributions: Sequence[RegionAttribution], min_delta: float = 0.02) -> Cue | None:
    """The region whose occlusion changes P(biased) most, if by at least `min_delta`."""
    if not attributions:
        return None
    best = max(attributions, key=lambda a: abs(a.delta))
    if abs(best.delta) < min_delta:
        return None
    x0, y0, x1, y1 = best.region
    where = _where(best.region)
    verb = "raises" if best.delta > 0 else "lowers"
    return Cue(
        "visual",
        best.delta,
        f"the image's {where} region {verb} P(biased) by {abs(best.delta):.2f}",
        region=(x0, y0, x1, y1),
    )


def inconsistency_cue(probability: float, threshold: float) -> Cue | None:
    """A cue when P(inconsistent) from the shared encoder reaches `threshold`."""
    if probability < threshold:
        return None
    return Cue(
        "inconsistency",
        probability,
        f"the text claims what the image does not show (P(inconsistent) = {probability:.2f})",
    )


def rationale(text: str, biased: bool, probability: float, cues: Sequence[Cue]) -> str:
    """A short, human-readable reason built only from the cues (nothing is made up)."""
    head = f"{'biased' if biased else 'neutral'} (P(biased) = {probability:.2f})"
    parts: list[str] = []
    words = [c for c in cues if c.kind == "linguistic" and c.span is not None]
    if words:
        quoted = ", ".join(repr(text[c.span[0] : c.span[1]]) for c in words if c.span)
        parts.append(f"loaded or framing wording: {quoted}")
    for cue in cues:
        if cue.kind == "visual" or cue.kind == "inconsistency":
            parts.append(cue.description)
    if not parts:
        reason = "no word or image region moves the verdict much"
        return f"{head}: {reason}."
    return f"{head}: " + "; ".join(parts) + "."


def _where(box: Box) -> str:
    x = (box[0] + box[2]) / 2
    y = (box[1] + box[3]) / 2
    horizontal = "left" if x < 0.4 else "right" if x > 0.6 else "centre"
    vertical = "top" if y < 0.4 else "bottom" if y > 0.6 else "middle"
    return "centre" if (horizontal, vertical) == ("centre", "middle") else f"{vertical}-{horizontal}"
