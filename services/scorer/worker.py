"""The auditor: consumes `concord.generated` (events_pb2.Generated, from the generator) in a
bus consumer thread, scores and explains each image against its prompt, and publishes
`concord.audit` (events_pb2.AuditResult, keyed by subject id `<job_id>/<prompt_index>`).

Bad content (a corrupt image, an empty prompt, no job id) raises InvalidArgument, which the
bus dead-letters to `concord.generated.dlq` with the reason; the service keeps serving.
Replays publish the same verdict again under the same key (the scorer is deterministic).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp
from PIL import Image

from concord.bus import Bus, Delivery, Worker, topics
from concord.errors import FieldViolation, InvalidArgument
from concord.media import decode_image
from concord.proto.v1 import events_pb2
from concord.serving import requests
from concord.wire import model_ref
from services.scorer import convert
from services.scorer.servable import ScorerServable

log = logging.getLogger(__name__)

GENERATED_TOPIC = topics.GENERATED
AUDIT_TOPIC = topics.AUDIT


def subject_id(event: events_pb2.Generated) -> str:
    """One audit subject per generated image: a job may generate for several prompts."""
    return f"{event.job_id}/{event.prompt_index}"


@dataclass(frozen=True)
class _Checked:
    event: events_pb2.Generated
    image: Image.Image


class Auditor(Worker):
    """Owns one consumer-group member on the generated topic.

    Args:
        servable: the scorer (loaded: the auditor starts only when it is).
        bus: returns the process bus.
        topic: the topic to consume; results go to `audit_topic`.
    """

    group = "scorer"
    message_type = events_pb2.Generated
    batched = True

    def __init__(
        self,
        servable: ScorerServable,
        bus: Callable[[], Bus],
        topic: str = GENERATED_TOPIC,
        audit_topic: str = AUDIT_TOPIC,
    ) -> None:
        super().__init__(bus, topic)
        self._servable = servable
        self.audit_topic = audit_topic

    def check(self, event: events_pb2.Generated) -> _Checked:
        """Returns: the event with its decoded image. Raises: InvalidArgument naming fields."""
        violations: list[FieldViolation] = []
        if not event.job_id.strip():
            violations.append(FieldViolation("job_id", "is empty"))
        violations += requests.text_violations(
            event.prompt, "prompt", self._servable.max_text_chars
        )
        image = None
        try:
            image = decode_image(event.image.data, event.image.media_type, field="image")
        except InvalidArgument as err:
            violations.extend(err.violations)
        if violations or image is None:
            raise InvalidArgument.from_violations(violations)
        return _Checked(event, image)

    def audit(self, checked: _Checked) -> events_pb2.AuditResult:
        """Score and explain one generated image against its prompt."""
        explained = self._servable.explain_sync(checked.image, checked.event.prompt)
        now = Timestamp()
        now.GetCurrentTime()
        return events_pb2.AuditResult(
            subject_id=subject_id(checked.event),
            text=checked.event.prompt,
            alignment_score=explained.explanation.scores.f_clip_score,
            aligned_probability=explained.probability,
            flagged_words=convert.flagged_words(explained),
            model=model_ref(self._servable.require().id),
            audited_at=now,
        )

    def handle_batch(self, batch: list[tuple[events_pb2.Generated, Delivery]]) -> None:
        """Audit a poll's events and flush their results once. Every event is checked before
        anything is published, so a bad one fails the batch without duplicates; the bus then
        retries the events one by one and dead-letters only the bad ones."""
        checked = [self.check(event) for event, _ in batch]
        bus = self._bus()
        for item in checked:
            result = self.audit(item)
            bus.publish(self.audit_topic, result.subject_id, result)
        bus.flush()
        log.debug("audited %d events from %s", len(batch), self.topic)

    async def start(self) -> None:
        """Start auditing once the scorer has a model (at start, or when one is registered
        later): without a model, audits would fail, so the events are left queued."""
        if not self._servable.ready:
            log.warning("scorer auditor waits for a scorer model; events stay queued")
        await self.start_when_ready(lambda: self._servable.ready)
