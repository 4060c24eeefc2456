"""The generation job worker: consumes `concord.generation.jobs` (events_pb2.GenerationJob) in
a bus consumer thread. A customization fine-tunes, saves and registers a concept; a generation
runs the model and publishes one `concord.generated` event per prompt (key = job id). A
generation whose spec sets `aligned` (an AlignmentPolicy) generates each prompt until the
scorer service's audit passes (services.generator.aligned) and its event carries the best try's
image and every try's audit (`tries`, `aligned_passed`).

Delivery is at-least-once: a job whose handler fails is retried by the bus, then dead-lettered
to `concord.generation.jobs.dlq`; a malformed job (InvalidArgument) goes there at once. The
job table follows each step so GetJob can say what happened. Replays are harmless: a concept
version records its job id (the second registration is skipped), and a generation is
deterministic in its seed, so a repeated Generated event carries the same image (consumers
may dedupe on job id + prompt index).

Kafka's `max.poll.interval.ms` bounds one poll's work: Concord sets it from
`kafka.max_poll_interval_ms` (30 min by default); fine-tunes longer than that need a larger value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from concord.bus import Bus, Delivery, Worker, topics
from concord.config import Settings
from concord.errors import InvalidArgument
from concord.proto.v1 import events_pb2
from services.generator import convert
from services.generator.aligned import ScorerAuditor, Try, generate_aligned
from services.generator.jobs import JobRecord, JobTable
from services.generator.params import GenerateParams
from services.generator.servable import GeneratorServable

log = logging.getLogger(__name__)

JOBS_TOPIC = topics.GENERATION_JOBS
GENERATED_TOPIC = topics.GENERATED


class JobWorker(Worker):
    """Owns one consumer-group member on the jobs topic.

    Args:
        servable: the loaded generator (its gate serialises jobs with RPC generations).
        jobs: the job table GetJob reads.
        bus: returns the process bus.
        max_attempts: handler calls per job before the bus dead-letters it (the bus's
            max_retries + 1), so the job can be marked FAILED on its last attempt.
    """

    group = "generator"
    message_type = events_pb2.GenerationJob

    def __init__(
        self,
        servable: GeneratorServable,
        jobs: JobTable,
        bus: Callable[[], Bus],
        *,
        max_attempts: int,
        topic: str = JOBS_TOPIC,
        generated_topic: str = GENERATED_TOPIC,
        settings: Settings | None = None,
    ) -> None:
        super().__init__(bus, topic)
        self.settings = settings or Settings()  # where the scorer is (aligned jobs)
        self.servable = servable
        self.jobs = jobs
        self.generated_topic = generated_topic
        self.max_attempts = max_attempts
        self._attempts: dict[str, int] = {}

    # ----------------------------------------------------------------- handling

    def handle(self, job: events_pb2.GenerationJob, delivery: Delivery) -> None:
        """Run one job; raising hands it back to the bus (retry, then DLQ)."""
        job_id = job.job_id or (delivery.key or b"").decode(errors="replace")
        kind = job.WhichOneof("work")
        if not job_id:
            raise InvalidArgument("job_id", "is empty (and the record has no key)")
        if kind is None:
            err = InvalidArgument("work", "set one of generate or customize")
            self._fail(job_id, "generate", f"invalid job: {err.message}")
            raise err
        known = self.jobs.get(job_id)
        if known is not None and known.state == "SUCCEEDED":
            log.info("job %s already succeeded here; skipping the replay", job_id)
            return
        try:
            if kind == "customize":
                self._customize(job_id, job.customize)
            else:
                self._generate(job_id, job.generate)
        except InvalidArgument as err:
            self._fail(job_id, kind, f"invalid job: {err.message}")
            raise
        except Exception as err:
            self._failed_attempt(job_id, kind, err)
            raise
        self._attempts.pop(job_id, None)

    def _customize(self, job_id: str, spec: events_pb2.CustomizationSpec) -> None:
        params = convert.customize_request(spec, prefix="customize.")
        self._running(job_id, "customize", params.concept, "fine-tuning")

        def on_step(step: int, total: int) -> bool:
            self.jobs.update(job_id, progress=step / total, message=f"step {step}/{total}")
            return True

        concept = self.servable.finetune(params, self.servable.gate.admit(wait=True), on_step)
        self.jobs.update(job_id, progress=1.0, message="registering the concept")
        model = self.servable.concepts.register(concept, job_id)
        self.jobs.update(job_id, state="SUCCEEDED", progress=1.0, message=f"registered {model}")
        log.info("job %s: concept %r registered as %s", job_id, params.concept, model)

    def _generate(self, job_id: str, spec: events_pb2.GenerationSpec) -> None:
        params = convert.generation_spec(spec, self.servable.shape(), self.servable.limits)
        if spec.HasField("aligned"):
            self._generate_aligned(job_id, spec, params)
            return
        self.servable.concept(params.concept, "generate.concept")  # NotFound before the gate
        self._running(job_id, "generate", params.concept, "generating")

        def on_progress(step: int, total: int, _previews: object) -> None:
            self.jobs.update(job_id, progress=step / total, message=f"step {step}/{total}")

        done = self.servable.generate(params, self.servable.gate.admit(wait=True), on_progress)
        bus = self._bus()
        for i, (prompt, sample) in enumerate(zip(params.prompts, done.samples, strict=True)):
            event = convert.generated_event(
                job_id, i, prompt, sample, done.model, params.with_layout
            )
            bus.publish(self.generated_topic, job_id, event)
        bus.flush()
        self.jobs.update(
            job_id,
            state="SUCCEEDED",
            progress=1.0,
            message=f"published {len(done.samples)} images to {self.generated_topic}",
        )

    def _generate_aligned(
        self, job_id: str, spec: events_pb2.GenerationSpec, params: GenerateParams
    ) -> None:
        """Each prompt generated until the scorer's audit passes; its Generated event carries
        the best try's image and every try's audit."""
        runs = convert.aligned_spec(spec, params)
        self._running(job_id, "generate", "", "generating until aligned")
        per_prompt = runs[0].policy.max_tries
        total = len(runs) * per_prompt
        events = []
        with ScorerAuditor(self.settings) as auditor:
            auditor.check()  # UNAVAILABLE / FAILED_PRECONDITION: retried, then dead-lettered
            for i, run in enumerate(runs):

                def on_try(attempt: Try, i: int = i) -> None:
                    done = i * per_prompt + attempt.index + 1
                    self.jobs.update(
                        job_id,
                        progress=done / total,
                        message=f"prompt {i}: try {attempt.index + 1} scored "
                        f"{attempt.audit.value:.3f}",
                    )

                result = generate_aligned(
                    self.servable, run, auditor, self.servable.gate.admit(wait=True), None, on_try
                )
                events.append(
                    convert.aligned_event(job_id, i, run.prompt, result, params.with_layout)
                )
        bus = self._bus()
        for event in events:
            bus.publish(self.generated_topic, job_id, event)
        bus.flush()
        passed = sum(e.aligned_passed for e in events)
        self.jobs.update(
            job_id,
            state="SUCCEEDED",
            progress=1.0,
            message=f"published {len(events)} images to {self.generated_topic} "
            f"({passed} passed the audit)",
        )

    # ----------------------------------------------------------------- job states

    def _running(self, job_id: str, kind: str, concept: str, what: str) -> None:
        record = self.jobs.get(job_id) or JobRecord(job_id, kind)  # type: ignore[arg-type]
        self.jobs.put(
            JobRecord(job_id, record.kind, "RUNNING", what, 0.0, concept or record.concept)
        )

    def _fail(self, job_id: str, kind: str, message: str) -> None:
        record = self.jobs.get(job_id) or JobRecord(job_id, kind)  # type: ignore[arg-type]
        self.jobs.put(JobRecord(job_id, record.kind, "FAILED", message, 0.0, record.concept))
        self._attempts.pop(job_id, None)

    def _failed_attempt(self, job_id: str, kind: str, err: Exception) -> None:
        attempts = self._attempts.get(job_id, 0) + 1
        self._attempts[job_id] = attempts
        reason = getattr(err, "message", None) or f"{type(err).__name__}: {err}"
        log.warning("job %s attempt %d/%d failed: %s", job_id, attempts, self.max_attempts, reason)
        if attempts >= self.max_attempts:
            self._fail(job_id, kind, f"failed after {attempts} attempts: {reason}")
        else:
            self.jobs.update(
                job_id, state="QUEUED", message=f"attempt {attempts} failed ({reason}); retrying"
            )
