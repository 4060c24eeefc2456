"""The bias audit chain on the bus: two consumer-group members, one per input topic, each
checking pairs in a bus consumer thread and publishing `bias_pb2.BiasVerdictEvent` on
`concord.bias.verdicts`, keyed by subject id.

- `concord.generated` (events_pb2.Generated, from the generator; group "bias", beside the
  scorer's auditor in group "scorer"): the image against its prompt, subject
  `<job_id>/<prompt_index>`.
- `concord.bias.requests` (bias_pb2.BiasRequestEvent, pairs a pipeline sends straight here;
  group "bias-requests"): subject = the event's id, or the pair's content hash when it has none.

At-least-once: the bus commits an offset only after the verdicts of its poll are flushed.
Idempotent by content: the model is deterministic, so a replay publishes the same verdict
under the same key. Bad content (a corrupt image, an empty or over-long text, no job id) raises
InvalidArgument, which the bus dead-letters to `<topic>.dlq` with the reason; a record that is
not the topic's message at all (e.g. a text that is not UTF-8) goes there undecodable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from google.protobuf.timestamp_pb2 import Timestamp

from concord.bus import Bus, Delivery, Worker, topics
from concord.errors import FieldViolation, InvalidArgument
from concord.proto.v1 import bias_pb2, events_pb2
from concord.wire import model_ref
from services.bias import convert
from services.bias.servable import BiasServable
from services.bias.types import PairIn

log = logging.getLogger(__name__)

Source = bias_pb2.BiasVerdictEvent.Source


@dataclass(frozen=True, eq=False)
class Subject:
    """One checked pair: what the verdict is keyed by and where it came from."""

    id: str
    pair: PairIn
    content_hash: str
    source: bias_pb2.BiasVerdictEvent.Source


def subject_id(event: events_pb2.Generated) -> str:
    """One subject per generated image (a job may generate for several prompts); the same
    id the scorer's audit results carry, so the two verdicts join on it."""
    return f"{event.job_id}/{event.prompt_index}"


class VerdictWorker(Worker):
    """Checks a poll's pairs in one model call and publishes their verdicts.

    Args:
        servable: the bias model (loaded: the workers start only when it is).
        bus: returns the process bus.
        topic: the topic to consume.
        verdict_topic: where the verdicts go.
    """

    batched = True
    source: ClassVar[bias_pb2.BiasVerdictEvent.Source]

    def __init__(
        self,
        servable: BiasServable,
        bus: Callable[[], Bus],
        topic: str,
        verdict_topic: str = topics.BIAS_VERDICTS,
    ) -> None:
        super().__init__(bus, topic)
        self._servable = servable
        self.verdict_topic = verdict_topic

    def check(self, message: Any) -> Subject:
        """Returns: the subject to judge. Raises: InvalidArgument naming the bad fields."""
        raise NotImplementedError

    def verdict_events(self, subjects: list[Subject]) -> list[bias_pb2.BiasVerdictEvent]:
        """Judge the subjects, at most a request's worth of pairs per model call (a poll may
        bring hundreds); one event each, in order."""
        step = self._servable.max_pairs
        verdicts = [
            v
            for i in range(0, len(subjects), step)
            for v in self._servable.detect_sync([s.pair for s in subjects[i : i + step]])
        ]
        model = model_ref(self._servable.require().id)
        now = Timestamp()
        now.GetCurrentTime()
        return [
            bias_pb2.BiasVerdictEvent(
                subject_id=s.id,
                verdict=convert.verdict_proto(v),
                model=model,
                checked_at=now,
                text=s.pair.text,
                source=s.source,
                content_hash=s.content_hash,
            )
            for s, v in zip(subjects, verdicts, strict=True)
        ]

    def handle_batch(self, batch: list[tuple[Any, Delivery]]) -> None:
        """Check a poll's events and flush their verdicts once. Every event is checked before
        anything is published, so a bad one fails the batch without duplicates; the bus then
        retries the events one by one and dead-letters only the bad ones."""
        subjects = [self.check(message) for message, _ in batch]
        bus = self._bus()
        for event in self.verdict_events(subjects):
            bus.publish(self.verdict_topic, event.subject_id, event)
        bus.flush()
        log.debug("checked %d events from %s", len(batch), self.topic)

    async def start(self) -> None:
        """Start consuming once the model is loaded (at start, or when one is registered
        later): without it every check would fail, so the events stay queued until then."""
        if not self._servable.ready:
            log.warning("bias worker on %s waits for a bias model; events stay queued", self.topic)
        await self.start_when_ready(lambda: self._servable.ready)


class GeneratedChecker(VerdictWorker):
    """The audit chain: the generator's images checked against their prompts."""

    group = "bias"
    message_type = events_pb2.Generated
    source = Source.SOURCE_GENERATED

    def __init__(
        self,
        servable: BiasServable,
        bus: Callable[[], Bus],
        topic: str = topics.GENERATED,
        verdict_topic: str = topics.BIAS_VERDICTS,
    ) -> None:
        super().__init__(servable, bus, topic, verdict_topic)

    def check(self, message: events_pb2.Generated) -> Subject:
        violations: list[FieldViolation] = []
        if not message.job_id.strip():
            violations.append(FieldViolation("job_id", "is empty"))
        pair = None
        try:
            pair = convert.decode_pair(
                message.image,
                message.prompt,
                "",
                self._servable.max_text_chars,
                text_field="prompt",
            )
        except InvalidArgument as err:
            violations.extend(err.violations)
        if violations or pair is None:
            raise InvalidArgument.from_violations(violations)
        digest = convert.content_hash(message.image.data, message.prompt)
        return Subject(subject_id(message), pair, digest, self.source)


class RequestChecker(VerdictWorker):
    """Pairs a pipeline sends straight to the bias detector."""

    group = "bias-requests"
    message_type = bias_pb2.BiasRequestEvent
    source = Source.SOURCE_REQUEST

    def __init__(
        self,
        servable: BiasServable,
        bus: Callable[[], Bus],
        topic: str = topics.BIAS_REQUESTS,
        verdict_topic: str = topics.BIAS_VERDICTS,
    ) -> None:
        super().__init__(servable, bus, topic, verdict_topic)

    def check(self, message: bias_pb2.BiasRequestEvent) -> Subject:
        if not message.HasField("pair"):
            raise InvalidArgument("pair", "is missing")
        pair = convert.decode_pair(
            message.pair.image, message.pair.text, "pair", self._servable.max_text_chars
        )
        digest = convert.content_hash(message.pair.image.data, message.pair.text)
        return Subject(message.id or digest, pair, digest, self.source)
