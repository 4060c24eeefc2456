"""Word spans: the words of a text and the tokens that make each word (pure Python, no I/O).

Word spans are character spans of the ORIGINAL text: words are `\\w+` runs (apostrophes inside
a word kept), found with a regex on the text, and a token belongs to the word its tokenizer
offsets overlap. Special tokens and punctuation carry no word.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

WORD_RE = re.compile(r"\w+(?:['\u2019]\w+)*")


def word_spans(text: str) -> list[tuple[int, int]]:
    """Returns: the character spans of the words of `text` (`WORD_RE`), in order."""
    return [m.span() for m in WORD_RE.finditer(text)]


def group_words(
    text: str, offsets: Sequence[tuple[int, int]], prefix: int = 0
) -> list[tuple[tuple[int, int], tuple[int, ...]]]:
    """Assign tokens to the words of `text`.

    Args:
        text: the original text (without any template).
        offsets: per token, its character span in `template + text` ((0, 0) for specials).
        prefix: len(template); offsets are shifted back by it.
    Returns:
        (word span in `text`, token positions) for each word that has at least one token
        (words cut off by truncation are dropped). Tokens of the template, special tokens and
        punctuation belong to no word.
    """
    spans = word_spans(text)
    members: list[list[int]] = [[] for _ in spans]
    k = 0
    for pos, (a, b) in enumerate(offsets):
        a, b = a - prefix, b - prefix
        if b <= a or b <= 0:
            continue  # special token, empty, or inside the template
        while k < len(spans) and spans[k][1] <= a:
            k += 1
        j = k
        while j < len(spans) and spans[j][0] < b:
            members[j].append(pos)  # a token straddling two words counts for both
            j += 1
    return [(s, tuple(m)) for s, m in zip(spans, members, strict=True) if m]
