"""The pure parts of generate-until-aligned: emphasis of flagged words within the text
encoder's budget, which try is best, and the policy's validation and guidance schedule."""

from __future__ import annotations

import pytest

from concord.clients.scorer import PairScore
from concord.errors import InvalidArgument
from concord.wire import ModelId
from services.generator.aligned import Audit, Try, best_index, emphasised
from services.generator.params import (
    MAX_GUIDANCE,
    AlignmentPolicy,
    Violations,
    alignment_policy,
)

PROMPT = "a red circle above a blue square"
RED, BLUE = (2, 5), (21, 25)


def test_flagged_words_are_repeated_in_place_more_each_time_they_are_flagged() -> None:
    assert emphasised(PROMPT, {RED: 1}, lambda _: True) == "a red red circle above a blue square"
    assert emphasised(PROMPT, {RED: 2, BLUE: 1}, lambda _: True) == (
        "a red red red circle above a blue blue square"
    )
    assert emphasised(PROMPT, {RED: 9}, lambda _: True).count("red") == 3  # capped


def test_emphasis_stops_where_the_prompt_would_no_longer_fit() -> None:
    def fits(text: str) -> bool:
        return len(text.split()) <= 8

    assert emphasised(PROMPT, {RED: 1, BLUE: 1}, fits) == "a red red circle above a blue square"
    assert emphasised(PROMPT, {RED: 1}, lambda _: False) == PROMPT


def _try(index: int, score: float, passed: bool) -> Try:
    audit = Audit(PairScore(0.0, None, 0.0, 0.0, score), (), ModelId("s", "1"))
    return Try(index, index, 1.0, PROMPT, None, audit, passed)  # type: ignore[arg-type]


def test_a_passing_try_is_best_else_the_highest_score_else_the_earliest() -> None:
    assert best_index([_try(0, 0.9, False), _try(1, 0.6, True)]) == 1
    assert best_index([_try(0, 0.3, False), _try(1, 0.7, False), _try(2, 0.5, False)]) == 1
    assert best_index([_try(0, 0.5, False), _try(1, 0.5, False)]) == 0


def test_policy_defaults_and_guidance_schedule() -> None:
    bad = Violations()
    policy = alignment_policy(
        max_tries=0, min_score=0, word_threshold=0, guidance_step=0, no_emphasis=False, bad=bad
    )
    assert not bad.found
    assert policy == AlignmentPolicy(4, 0.5, 0.0, 1.0, True)
    assert [policy.guidance(3.0, i) for i in range(3)] == [3.0, 4.0, 5.0]
    assert policy.guidance(49.5, 3) == MAX_GUIDANCE


def test_policy_names_every_bad_field_with_the_prefix() -> None:
    bad = Violations("generate.")
    alignment_policy(
        max_tries=99,
        min_score=float("inf"),
        word_threshold=-1,
        guidance_step=-2,
        no_emphasis=True,
        bad=bad,
        field="aligned.",
    )
    with pytest.raises(InvalidArgument) as caught:
        bad.raise_any()
    assert [v.field for v in caught.value.violations] == [
        "generate.aligned.max_tries",
        "generate.aligned.min_score",
        "generate.aligned.word_threshold",
        "generate.aligned.guidance_step",
    ]
