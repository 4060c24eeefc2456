"""Generate until aligned: generate an image, audit it with the scorer service (its CLIP4DM
word flags and calibrated P(aligned), called over gRPC through `concord.clients.scorer`), and
while the audit fails regenerate with the next seed, more guidance and the flagged words
emphasised, up to the policy's max_tries. Blocking (a worker thread: the RPC's or the Kafka
worker's); no proto types.

Emphasis: the generator's text conditioning is the frozen MiniLM's token states of the prompt,
so a flagged word is emphasised by repeating it in place ("a red circle" -> "a red red circle"):
its tokens then hold more of the cross-attention's mass. A word is repeated once more each time
it is flagged (at most MAX_REPEATS extra copies), and only while the prompt still fits the
model's max_text_tokens (a truncated prompt would lose its last words). The audit is always of
the request's own prompt, so spans and scores of every try are comparable.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import TracebackType

import grpc
import numpy as np

from concord.clients.scorer import PairScore, ScorerClient, WordAlignment
from concord.config import Settings
from concord.errors import (
    ConcordError,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
)
from concord.media import encode_png
from concord.models.diffusion.pipeline import Sample
from concord.transport import open_channel
from concord.wire import ModelId
from services.generator.params import AlignedParams
from services.generator.servable import Cancelled, GeneratorServable, Ticket

log = logging.getLogger(__name__)

MAX_REPEATS = 2  # extra copies of a flagged word in a retry's prompt
SCORER_TIMEOUT = 60.0  # seconds per scorer call


@dataclass(frozen=True)
class Audit:
    """The scorer's verdict on one image against the prompt."""

    score: PairScore
    flagged: tuple[WordAlignment, ...]  # spans index the audited prompt
    model: ModelId

    @property
    def value(self) -> float:
        """The audit score: the scorer's calibrated P(aligned)."""
        return self.score.aligned_probability


@dataclass(frozen=True, eq=False)
class Try:
    """One try of an aligned generation."""

    index: int
    seed: int
    guidance_scale: float
    prompt: str  # what the image was drawn from (flagged words repeated)
    sample: Sample
    audit: Audit
    passed: bool


@dataclass(frozen=True, eq=False)
class AlignedResult:
    """Every try in order; `best` indexes the passing try, else the highest-scoring one."""

    tries: tuple[Try, ...]
    best: int
    model: ModelId  # the generator's
    class_names: tuple[str, ...]
    min_score: float

    @property
    def passed(self) -> bool:
        return self.tries[self.best].passed


Auditor = Callable[[np.ndarray, str, float], Audit]  # (uint8 HxWx3, prompt, threshold)


class ScorerAuditor:
    """Audits images through the scorer service at `serving.address_for("scorer")`, over one
    channel for a whole aligned run (`with ScorerAuditor(settings) as audit: ...`).

    Errors say what is wrong with the scorer: UNAVAILABLE when it cannot be reached,
    FAILED_PRECONDITION when it serves no model; a prompt the scorer refuses is INVALID_ARGUMENT
    naming `prompt`.
    """

    def __init__(self, settings: Settings, *, timeout: float = SCORER_TIMEOUT) -> None:
        serving = settings.serving
        self.address = serving.address_for("scorer")
        token = serving.auth_token
        self._metadata = (("authorization", f"Bearer {token.get_secret_value()}"),) if token else ()
        size = serving.max_message_bytes
        self._channel: grpc.Channel = open_channel(
            self.address,
            serving,
            [("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)],
        )
        self._client = ScorerClient(self._channel, self._metadata, timeout)

    def check(self) -> tuple[ModelId, ...]:
        """Fail before any image is made when the scorer cannot audit. Returns: its models."""
        try:
            models = self._client.models()
        except ConcordError as err:
            raise self._explained(err) from None
        if not models:
            raise FailedPrecondition(
                f"the scorer at {self.address} serves no model; aligned generation audits every "
                "image with it (register a scorer package and point scorer.model at it)"
            )
        return models

    def __call__(self, image: np.ndarray, prompt: str, threshold: float = 0.0) -> Audit:
        try:
            explained = self._client.explain(encode_png(image), prompt, threshold=threshold)
        except ConcordError as err:
            raise self._explained(err) from None
        return Audit(explained.score, explained.flagged, explained.model)

    def _explained(self, err: ConcordError) -> ConcordError:
        if isinstance(err, InvalidArgument):  # the scorer's limits (e.g. its max_text_chars)
            return InvalidArgument(
                "prompt", f"the scorer at {self.address} cannot audit it: {err.message}"
            )
        if isinstance(err, Unavailable) or err.status == "DEADLINE_EXCEEDED":
            return Unavailable(
                f"the scorer at {self.address} is unreachable ({err.message}); aligned "
                "generation audits every image with it"
            )
        if isinstance(err, FailedPrecondition):
            return FailedPrecondition(f"the scorer at {self.address} cannot audit: {err.message}")
        if err.status == "RESOURCE_EXHAUSTED":
            return err  # the scorer is overloaded: the caller backs off and retries
        if err.status in ("UNAUTHENTICATED", "PERMISSION_DENIED"):  # a deployment's mistake
            return FailedPrecondition(
                f"the scorer at {self.address} refused the generator ({err.status}: "
                f"{err.message}); check serving.auth_token"
            )
        return Unavailable(
            f"the scorer at {self.address} failed the audit ({err.status}: {err.message})"
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ScorerAuditor:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def emphasised(prompt: str, counts: dict[tuple[int, int], int], fits: Callable[[str], bool]) -> str:
    """`prompt` with each flagged span repeated `counts[span]` extra times (capped at
    MAX_REPEATS), spans taken in order of the words; a span whose repetition would make the
    prompt too long for the text encoder (`fits` False) stays as it is."""
    chosen: dict[tuple[int, int], int] = {}
    text = prompt
    for span in sorted(counts):
        trial = {**chosen, span: min(counts[span], MAX_REPEATS)}
        candidate = _repeat(prompt, trial)
        if fits(candidate):
            chosen, text = trial, candidate
    return text


def _repeat(prompt: str, repeats: dict[tuple[int, int], int]) -> str:
    out, at = [], 0
    for (start, end), n in sorted(repeats.items()):
        word = prompt[start:end]
        out += [prompt[at:end], (" " + word) * n]
        at = end
    out.append(prompt[at:])
    return "".join(out)


def best_index(tries: Sequence[Try]) -> int:
    """A passing try wins; otherwise the highest audit score (the earliest on a tie)."""
    return max(range(len(tries)), key=lambda i: (tries[i].passed, tries[i].audit.value, -i))


def generate_aligned(
    servable: GeneratorServable,
    params: AlignedParams,
    audit: Auditor,
    first: Ticket,
    stop: threading.Event | None = None,
    on_try: Callable[[Try], None] | None = None,
) -> AlignedResult:
    """Generate, audit, and retry until a try passes or the policy's max_tries are spent.

    Args:
        servable: the loaded generator; each try goes through its gate.
        params: the validated request (its base holds the first try's parameters).
        audit: scores an image against the prompt (`ScorerAuditor`).
        first: the first try's admission (the RPC's is taken before the work starts, so an
            overloaded generator refuses at once); later tries wait for the gate.
        stop: set by the caller to stop between (and inside) tries.
        on_try: called after each audited try (progress for jobs).
    Raises:
        Cancelled: `stop` was set. The auditor's errors (UNAVAILABLE, FAILED_PRECONDITION).
    """
    stop = stop or threading.Event()
    policy, prompt = params.policy, params.prompt
    tries: list[Try] = []
    flagged_counts: dict[tuple[int, int], int] = {}
    model: ModelId | None = None
    class_names: tuple[str, ...] = ()
    ticket = first
    try:
        for i in range(policy.max_tries):
            if stop.is_set():
                raise Cancelled("aligned generation cancelled by the caller")
            if i > 0:
                ticket = servable.gate.admit(wait=True)
            text = prompt
            if policy.emphasis and flagged_counts:
                text = emphasised(prompt, flagged_counts, servable.fits_prompt)
            guidance = policy.guidance(params.base.guidance_scale, i)
            run = replace(
                params.base, prompts=(text,), seed=params.base.seed + i, guidance_scale=guidance
            )
            done = servable.generate(run, ticket, None, stop)
            model, class_names = done.model, done.class_names
            sample = done.samples[0]
            verdict = audit(sample.image, prompt, policy.word_threshold)
            passed = not verdict.flagged and verdict.value > policy.min_score
            attempt = Try(i, sample.seed, guidance, text, sample, verdict, passed)
            tries.append(attempt)
            log.debug(
                "aligned try %d: score %.3f, flagged %s, passed %s",
                i,
                verdict.value,
                [w.word for w in verdict.flagged],
                passed,
            )
            if on_try is not None:
                on_try(attempt)
            if passed:
                break
            for word in verdict.flagged:
                flagged_counts[word.span] = flagged_counts.get(word.span, 0) + 1
    finally:
        ticket.release()  # idempotent: a try that never ran leaves its place here
    assert model is not None
    return AlignedResult(tuple(tries), best_index(tries), model, class_names, policy.min_score)
