"""The linker's bus workers.

`EntityWorker` consumes `concord.entities` (linker_pb2.EntityEvent, key `<kb>/<entity id>`):
an upsert embeds the entity and writes its point, a delete removes it. The point id is the
knowledge base + entity id, so a replayed event rewrites the same point (or deletes what is
already gone): a replay changes nothing. Events of one poll are applied in order, upserts
grouped into one encoder call per run. A bad event (no text nor image, a corrupt image, a bad
knowledge base name) raises InvalidArgument, which the bus dead-letters to
`concord.entities.dlq` with the reason; the others of its poll are applied.

`AlignWorker` consumes `concord.align.jobs` (linker_pb2.AlignJob, key = job id): it runs
UMAEA, stores the pairs under the linker's home and publishes every status change on
`concord.aligned`. A replay of a job that already succeeded is skipped; a malformed job is
marked FAILED and dead-lettered; a job that keeps failing is marked FAILED on its last attempt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from concord.bus import Bus, Delivery, Worker, topics
from concord.errors import FieldViolation, InvalidArgument
from concord.proto.v1 import linker_pb2
from services.linker import convert
from services.linker.convert import Limits
from services.linker.jobs import FAILED, QUEUED, RUNNING, SUCCEEDED, AlignJobs, check_job_id
from services.linker.kb import KnowledgeBases, check_name
from services.linker.servable import LinkerServable
from services.linker.types import EntityIn

log = logging.getLogger(__name__)

ENTITIES_TOPIC = topics.ENTITIES
ALIGN_JOBS_TOPIC = topics.ALIGN_JOBS
ALIGNED_TOPIC = topics.ALIGNED
PROGRESS_EVERY_SECONDS = 1.0  # how often a running job's status is rewritten


def entity_key(kb: str, entity_id: str) -> str:
    """The key of an entity event: one entity's events stay in order on one partition."""
    return f"{kb}/{entity_id}"


@dataclass(frozen=True, eq=False)
class _Change:
    kb: str
    upsert: EntityIn | None  # None: delete `entity_id`
    entity_id: str


def check_event(event: linker_pb2.EntityEvent, limits: Limits) -> _Change:
    """Returns: the checked change. Raises: InvalidArgument naming the event's fields
    (`knowledge_base`, `change`, `deleted_id`, `upserted.images[0].data`, `upserted`)."""
    violations: list[FieldViolation] = []
    try:
        check_name(event.knowledge_base)
    except InvalidArgument as err:
        violations += err.violations
    kind = event.WhichOneof("change")
    change = None
    if kind is None:
        violations.append(FieldViolation("change", "set upserted or deleted_id"))
    elif kind == "deleted_id":
        if not event.deleted_id:
            violations.append(FieldViolation("deleted_id", "is empty"))
        else:
            change = _Change(event.knowledge_base, None, event.deleted_id)
    else:
        entity, found = convert.decode_entity(event.upserted, "upserted", limits)
        violations += found
        if entity is not None:
            change = _Change(event.knowledge_base, entity, entity.id)
    if violations or change is None:
        raise InvalidArgument.from_violations(violations)
    return change


class EntityWorker(Worker):
    """Owns one consumer-group member on the entities topic.

    Args:
        servable: the linker (loaded: the worker starts only when it is).
        kbs: returns the knowledge bases.
        bus: returns the process bus.
        limits: the request limits an event is checked against.
    """

    group = "linker"
    message_type = linker_pb2.EntityEvent
    batched = True

    def __init__(
        self,
        servable: LinkerServable,
        kbs: Callable[[], KnowledgeBases],
        bus: Callable[[], Bus],
        limits: Limits,
        topic: str = ENTITIES_TOPIC,
    ) -> None:
        super().__init__(bus, topic)
        self._servable = servable
        self._kbs = kbs
        self._limits = limits
        self.applied = 0  # changes applied (upserts + deletes), for tests and metrics

    def handle_batch(self, batch: list[tuple[linker_pb2.EntityEvent, Delivery]]) -> None:
        """Apply a poll's changes in order. Every event is checked first, so a bad one fails
        the batch before any effect; the bus then retries the events one by one and
        dead-letters only the bad ones (effects are idempotent, so the repeat is safe)."""
        changes = [check_event(event, self._limits) for event, _ in batch]
        run: list[_Change] = []
        for change in changes:
            if change.upsert is None:
                self._upsert(run)
                run = []
                self._delete(change)
            else:
                if run and run[0].kb != change.kb:
                    self._upsert(run)
                    run = []
                run.append(change)
        self._upsert(run)
        log.debug("applied %d entity events from %s", len(batch), self.topic)

    def _upsert(self, run: list[_Change]) -> None:
        if not run:
            return
        latest = {c.entity_id: c.upsert for c in run}  # the last event of an entity wins
        entities = [e for e in latest.values() if e is not None]
        loaded = self._servable.require()
        kbs = self._kbs()
        kbs.ensure(run[0].kb, loaded.id, loaded.dims)
        kbs.upsert(run[0].kb, self._servable.embed_sync(entities))
        self.applied += len(run)

    def _delete(self, change: _Change) -> None:
        kbs = self._kbs()
        if change.kb in kbs.names():  # deleting from a knowledge base that is gone: done
            kbs.delete(change.kb, [change.entity_id])
        self.applied += 1

    async def start(self) -> None:
        """Start consuming only when the model loaded: without it no entity can be embedded,
        so the events are left queued."""
        if self._servable.ready:
            await super().start()
        else:
            log.warning("linker entity worker not started: no linker model loaded")


class AlignWorker(Worker):
    """Owns one consumer-group member on the align jobs topic.

    Args:
        servable: the linker (loaded: the worker starts only when it is).
        jobs: the job directory.
        bus: returns the process bus.
        limits: the job limits the graphs are checked against.
        max_attempts: handler calls per job before the bus dead-letters it (the bus's
            max_retries + 1), so the job is marked FAILED on its last attempt.
    """

    group = "linker-align"
    message_type = linker_pb2.AlignJob

    def __init__(
        self,
        servable: LinkerServable,
        jobs: AlignJobs,
        bus: Callable[[], Bus],
        limits: Limits,
        *,
        max_attempts: int,
        topic: str = ALIGN_JOBS_TOPIC,
        status_topic: str = ALIGNED_TOPIC,
    ) -> None:
        super().__init__(bus, topic)
        self._servable = servable
        self.jobs = jobs
        self._limits = limits
        self.status_topic = status_topic
        self.max_attempts = max_attempts
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()

    def publish(self, status: linker_pb2.AlignJobStatus) -> None:
        bus = self._bus()
        bus.publish(self.status_topic, status.job_id, status)
        bus.flush()

    def _put(
        self, job_id: str, state: int, message: str, progress: float = 0.0, pairs: int = 0
    ) -> None:
        model = self._servable.model_id
        self.publish(self.jobs.put(job_id, state, message, progress, pairs, model))

    def handle(self, job: linker_pb2.AlignJob, delivery: Delivery) -> None:
        """Run one job; raising hands it back to the bus (retry, then the DLQ)."""
        job_id = check_job_id(job.job_id or (delivery.key or b"").decode(errors="replace"))
        known = self.jobs.status(job_id)
        if known is not None and known.state == SUCCEEDED:
            log.info("align job %s already succeeded; skipping the replay", job_id)
            return
        if known is None:  # published straight to the topic, not through SubmitAlignJob
            self.jobs.create(job_id)
        try:
            request = self.jobs.load_request(job)
            aligned = convert.align_request(request, self._limits)
        except InvalidArgument as err:
            self._put(job_id, FAILED, f"invalid job: {err.message}")
            self._attempts.pop(job_id, None)
            raise
        self._put(job_id, RUNNING, "aligning")
        try:
            pairs = self._servable.align_sync(aligned, self._progress(job_id))
        except Exception as err:
            self._failed_attempt(job_id, err)
            raise
        self.jobs.store_result(job_id, [convert.aligned_pair(p) for p in pairs])
        self._put(job_id, SUCCEEDED, f"aligned {len(pairs)} pairs", progress=1.0, pairs=len(pairs))
        self._attempts.pop(job_id, None)
        log.info("align job %s: %d pairs", job_id, len(pairs))

    def _progress(self, job_id: str) -> Callable[[str, int, int], None]:
        config = self._servable.require().umaea
        epochs = {
            "stage1": (0, config.stage1_epochs),
            "stage2": (config.stage1_epochs, config.stage2_epochs),
            "stage3": (config.stage1_epochs + config.stage2_epochs, config.stage3_epochs),
        }
        total = max(1, sum(n for _, n in epochs.values()))
        last = [0.0]

        def progress(stage: str, step: int, steps: int) -> None:
            now = time.monotonic()
            if now - last[0] < PROGRESS_EVERY_SECONDS and step < steps:
                return
            last[0] = now
            offset = epochs.get(stage, (0, 0))[0]
            fraction = min(0.99, (offset + step) / total)
            self.jobs.put(
                job_id,
                RUNNING,
                f"{stage}: epoch {step}/{steps}",
                progress=fraction,
                model=self._servable.model_id,
            )

        return progress

    def _failed_attempt(self, job_id: str, err: Exception) -> None:
        with self._lock:
            attempts = self._attempts.get(job_id, 0) + 1
            self._attempts[job_id] = attempts
        reason = getattr(err, "message", None) or f"{type(err).__name__}: {err}"
        log.warning(
            "align job %s attempt %d/%d failed: %s", job_id, attempts, self.max_attempts, reason
        )
        if attempts >= self.max_attempts:
            self._put(job_id, FAILED, f"failed after {attempts} attempts: {reason}")
            self._attempts.pop(job_id, None)
        else:
            self._put(job_id, QUEUED, f"attempt {attempts} failed ({reason}); retrying")

    async def start(self) -> None:
        """Start running jobs only when the model loaded (jobs stay queued otherwise)."""
        if self._servable.ready:
            await super().start()
        else:
            log.warning("linker align worker not started: no linker model loaded")
