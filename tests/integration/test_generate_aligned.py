"""GenerateAligned over real gRPC: the generator (tiny random 16x16 model) audits each try with
the scorer service (a scorer package over a tiny random encoder) over its own socket, retries
with new seeds, more guidance and flagged words repeated, stops at the first passing try, and
returns the best image with one trail entry per try; bad requests name their field, and a
missing scorer is UNAVAILABLE / FAILED_PRECONDITION with a message that says so."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from concord.cli import app
from concord.clients import Concord
from concord.config import Settings
from concord.errors import FailedPrecondition, InvalidArgument, Unavailable
from tests.fixtures.models import scorer_package, tiny_encoder, tiny_generator
from tests.fixtures.serving import InProcessDeployment, generator_settings

PROMPT = "a red circle"  # short: its flagged words can be repeated within 8 tokens
NEVER = 1.0  # min_score: P(aligned) is never above 1, so no try passes
ALWAYS = 1e-6  # min_score any image clears ...
NO_FLAGS = 1e9  # ... with a word threshold no attribution falls below


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("generate-aligned")
    # The smallest threshold flags every word with a negative attribution (a random encoder
    # has no opinion on words, so some words get flagged and retries emphasise them).
    package = scorer_package(root / "tiny-scorer", tiny_encoder(tmp_path_factory), threshold=1e-12)
    return generator_settings(
        root, str(tiny_generator(tmp_path_factory)), scorer={"model": str(package)}
    )


@pytest.fixture(scope="module")
def served(settings: Settings) -> Iterator[InProcessDeployment]:
    server = InProcessDeployment(["generator", "scorer"], settings)
    yield server
    server.close()


def test_a_try_that_passes_ends_the_run_after_one_try(
    settings: Settings, served: InProcessDeployment
) -> None:
    with Concord(settings) as sdk:
        result = sdk.generator.generate_aligned(
            PROMPT, max_tries=4, min_score=ALWAYS, word_threshold=NO_FLAGS, seed=3, steps=2
        )
    assert result.passed and result.best_try == 0
    (only,) = result.tries
    assert only.passed and only.flagged == () and only.seed == 3 and only.prompt == PROMPT
    assert only.score.aligned_probability > ALWAYS
    assert result.image.seed == 3 and result.image.array.shape == (16, 16, 3)
    assert result.image.layout is not None and result.image.layout.shape == (16, 16)
    assert result.scorer.name == "tiny-scorer" and result.min_score == pytest.approx(ALWAYS)


def test_a_run_that_never_passes_makes_max_tries_and_returns_the_best(
    settings: Settings, served: InProcessDeployment
) -> None:
    with Concord(settings) as sdk:
        result = sdk.generator.generate_aligned(
            PROMPT, max_tries=3, min_score=NEVER, seed=10, steps=2, guidance_scale=2.0
        )
        # Each trail entry is the scorer's real audit of that try's image.
        best = result.tries[result.best_try]
        explained = sdk.explain(result.image.png, PROMPT, threshold=1e-12)
        # The best image is exactly what the generator draws with the best try's parameters.
        (again,) = sdk.generate(
            [best.prompt], seed=best.seed, steps=2, guidance_scale=best.guidance_scale
        )
    assert not result.passed
    assert [t.index for t in result.tries] == [0, 1, 2]
    assert [t.seed for t in result.tries] == [10, 11, 12]
    assert [t.guidance_scale for t in result.tries] == pytest.approx([2.0, 3.0, 4.0])
    assert not any(t.passed for t in result.tries)
    assert any(t.flagged for t in result.tries)  # so the emphasis below is exercised
    scores = [t.score.aligned_probability for t in result.tries]
    assert result.best_try == scores.index(max(scores))
    assert result.image.seed == best.seed and again.png == result.image.png
    assert explained.score.aligned_probability == pytest.approx(max(scores), abs=1e-5)
    assert [(w.word, w.span) for w in explained.flagged] == [(w.word, w.span) for w in best.flagged]
    for attempt in result.tries:
        for word in attempt.flagged:  # spans index the request's prompt
            assert PROMPT[word.span[0] : word.span[1]] == word.word and word.attribution < 0
    # Words flagged in a try are repeated in the next try's prompt (they fit in 8 tokens).
    for before, after in zip(result.tries, result.tries[1:], strict=False):
        for word in before.flagged:
            assert after.prompt.split().count(word.word) > PROMPT.split().count(word.word)
        if not before.flagged and not any(t.flagged for t in result.tries[: before.index]):
            assert after.prompt == PROMPT


def test_emphasis_can_be_turned_off(settings: Settings, served: InProcessDeployment) -> None:
    with Concord(settings) as sdk:
        result = sdk.generator.generate_aligned(
            PROMPT, max_tries=2, min_score=NEVER, emphasis=False, steps=1, guidance_step=0.5
        )
    assert [t.prompt for t in result.tries] == [PROMPT, PROMPT]
    assert result.tries[1].guidance_scale - result.tries[0].guidance_scale == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("kwargs", "fields"),
    [
        ({"prompt": ""}, {"prompt"}),
        ({"max_tries": 9}, {"policy.max_tries"}),
        ({"max_tries": -1}, {"policy.max_tries"}),
        ({"min_score": 1.5}, {"policy.min_score"}),
        ({"word_threshold": -1.0}, {"policy.word_threshold"}),
        ({"guidance_step": float("nan")}, {"policy.guidance_step"}),
        ({"seed": 2**63 - 2, "max_tries": 4}, {"seed"}),
        (
            {"steps": 10_000, "max_tries": 99, "prompt": " "},
            {"steps", "policy.max_tries", "prompt"},
        ),
    ],
)
def test_bad_requests_name_every_bad_field(
    settings: Settings, served: InProcessDeployment, kwargs: dict[str, object], fields: set[str]
) -> None:
    kwargs = {"prompt": PROMPT, "steps": 1} | kwargs
    prompt = kwargs.pop("prompt")
    with Concord(settings) as sdk, pytest.raises(InvalidArgument) as caught:
        sdk.generator.generate_aligned(prompt, **kwargs)  # type: ignore[arg-type]
    assert {v.field for v in caught.value.violations} == fields


def test_without_a_scorer_that_can_audit_the_call_says_so(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("generate-aligned-noscorer")
    generator = str(tiny_generator(tmp_path_factory))
    alone = generator_settings(root / "alone", generator)  # its scorer port: nothing listens
    server = InProcessDeployment(["generator"], alone)
    try:
        with Concord(alone) as sdk, pytest.raises(Unavailable) as caught:
            sdk.generator.generate_aligned(PROMPT, steps=1)
    finally:
        server.close()
    assert f"the scorer at {alone.serving.address_for('scorer')}" in caught.value.message
    assert "unreachable" in caught.value.message

    empty = generator_settings(
        root / "empty", generator, scorer={"model": str(root / "no-such-scorer")}
    )
    server = InProcessDeployment(["generator", "scorer"], empty)
    try:
        with Concord(empty) as sdk, pytest.raises(FailedPrecondition) as failed:
            sdk.generator.generate_aligned(PROMPT, steps=1)
    finally:
        server.close()
    assert "the scorer at" in failed.value.message and "no model" in failed.value.message


def test_the_cli_prints_each_try_and_saves_the_best_image(
    settings: Settings, served: InProcessDeployment, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "CONCORD_HOME": str(settings.home),
        "CONCORD_SERVING__PORTS": json.dumps(settings.serving.ports),
        "CONCORD_SERVING__METRICS_PORT": "0",
    }
    out = tmp_path / "aligned.png"
    args = ["generate", PROMPT, "--aligned", "--max-tries", "2", "--min-score", "1", "-o"]
    result = CliRunner().invoke(app, [*args, str(out), "--steps", "1"], env=env)
    assert result.exit_code == 0, result.output
    assert "did not pass in 2 tries" in result.output
    assert "try 1: seed 0" in result.output and "try 2: seed 1" in result.output
    assert "<- best" in result.output and "layout:" in result.output
    with Image.open(out) as image:
        assert image.size == (16, 16)
    refused = CliRunner().invoke(app, ["generate", PROMPT, "--max-tries", "3"], env=env)
    assert refused.exit_code == 2 and "needs --aligned" in refused.output
