"""Pronounceable pseudo-words for concept tokens and entity names (never vocabulary words)."""

from __future__ import annotations

import numpy as np

from pipelines.data.vocab import COLOURS, SHAPES, SIZE_ORDER, TEXTURES

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "dr", "kr", "tr", "sh", "th")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "", "n", "r", "x", "l", "s", "k")
_RESERVED = {*COLOURS, *SHAPES, *SIZE_ORDER, *TEXTURES}


def pseudo_words(rng: np.random.Generator, n: int, syllables: tuple[int, int] = (2, 3)) -> list[str]:
    """`n` distinct pseudo-words of 2-3 syllables.

    Args:
        rng: the generator to draw from.
        n: how many words.
    Returns:
        Lower-case words, distinct and not in the scene vocabulary.
    """
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        k = int(rng.integers(syllables[0], syllables[1] + 1))
        word = "".join(str(rng.choice(_ONSETS)) + str(rng.choice(_VOWELS)) for _ in range(k))
        word += str(rng.choice(_CODAS))
        if word not in seen and word not in _RESERVED:
            seen.add(word)
            out.append(word)
    return out


def respell(rng: np.random.Generator, word: str) -> str:
    """`word` with one vowel changed: the same entity under another KG's spelling."""
    idx = [i for i, ch in enumerate(word) if ch in "aeiou"]
    if not idx:
        return word + "e"
    i = idx[int(rng.integers(len(idx)))]
    options = [v for v in "aeiou" if v != word[i]]
    return word[:i] + str(rng.choice(options)) + word[i + 1 :]
