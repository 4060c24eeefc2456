"""Proto <-> domain translation for the generator service: validates, admits the call through
the servable's gate, streams progress from the worker thread, then the results. No ML logic.

Cancellation: when the caller cancels (or its deadline passes) the handler is cancelled, the
`finally` below sets the stop flag, and the denoising loop ends at its next step."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from concord.bus import Bus
from concord.config import Settings
from concord.errors import NotFound, Unavailable
from concord.media import encode_png
from concord.proto.v1 import common_pb2, events_pb2, generator_pb2, generator_pb2_grpc
from concord.serving import requests
from concord.serving.definitions import servable_info
from services.generator import convert
from services.generator.aligned import ScorerAuditor, generate_aligned
from services.generator.jobs import JobRecord, JobTable
from services.generator.servable import Generated, GeneratorServable
from services.generator.worker import JOBS_TOPIC

_DONE = object()  # end of the progress queue


class GeneratorServicer(generator_pb2_grpc.GeneratorServiceServicer):
    def __init__(
        self,
        servable: GeneratorServable,
        jobs: JobTable,
        bus: Callable[[], Bus],
        jobs_topic: str = JOBS_TOPIC,
        settings: Settings | None = None,
    ) -> None:
        self.servable = servable
        self.jobs = jobs
        self._bus = bus
        self.jobs_topic = jobs_topic
        self.settings = settings or Settings()  # where the scorer is (GenerateAligned)

    async def Generate(
        self, request: generator_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[generator_pb2.GenerateEvent]:
        servable = self.servable
        requests.check_model(request.model, servable.require().id, "generator")
        params = convert.generate_request(request, servable.shape(), servable.limits)
        if params.concept:  # NOT_FOUND before any work is queued
            await asyncio.to_thread(servable.concept, params.concept)
        ticket = servable.gate.admit()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()

        def post(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop closed (shutdown): nobody is listening any more
                stop.set()

        def on_progress(step: int, total: int, previews: np.ndarray | None) -> None:
            post((step, total, previews))

        def run() -> Generated:
            try:
                return servable.generate(params, ticket, on_progress, stop)
            finally:
                ticket.release()
                post(_DONE)

        work = asyncio.ensure_future(asyncio.to_thread(run))
        work.add_done_callback(_consume_exception)
        try:
            while (item := await queue.get()) is not _DONE:
                step, total, previews = item  # type: ignore[misc]
                for event in convert.progress_events(step, total, previews):
                    yield event
            done = await work
            for i, sample in enumerate(done.samples):
                yield await asyncio.to_thread(
                    convert.result_event,
                    i,
                    sample,
                    done.model,
                    done.class_names,
                    params.with_layout,
                )
        finally:
            stop.set()  # a cancelled or failed call stops the denoising loop at its next step

    async def GenerateAligned(
        self, request: generator_pb2.GenerateAlignedRequest, context: grpc.aio.ServicerContext
    ) -> generator_pb2.GenerateAlignedResponse:
        servable = self.servable
        requests.check_model(request.model, servable.require().id, "generator")
        params = convert.aligned_request(request, servable.limits)
        auditor = await asyncio.to_thread(ScorerAuditor, self.settings)
        try:
            await asyncio.to_thread(auditor.check)  # before any image: is the scorer there?
            ticket = servable.gate.admit()
            stop = threading.Event()
            work = asyncio.ensure_future(
                asyncio.to_thread(generate_aligned, servable, params, auditor, ticket, stop)
            )
            work.add_done_callback(_consume_exception)
            try:
                result = await asyncio.shield(work)
            finally:
                stop.set()  # a cancelled call stops the tries at the next denoising step
                if not work.done():
                    await asyncio.wait([work])  # the thread still holds the channel
        finally:
            auditor.close()
        return await asyncio.to_thread(convert.aligned_response, result, params.base.with_layout)

    async def Customize(
        self, request: generator_pb2.CustomizeRequest, context: grpc.aio.ServicerContext
    ) -> generator_pb2.Job:
        size = self.servable.shape().image_size  # FAILED_PRECONDITION without a model
        params = await asyncio.to_thread(convert.customize_request, request)
        job_id = uuid.uuid4().hex
        # The worker resizes references to the model's size anyway; sending them at that size
        # keeps the job well under Kafka's 1 MB default message limit. In a thread: resizing
        # 32 large references on the event loop stalled every other call for seconds.
        references = await asyncio.to_thread(_resized_pngs, params.references, size)
        now = Timestamp()
        now.GetCurrentTime()
        job = events_pb2.GenerationJob(
            job_id=job_id,
            customize=events_pb2.CustomizationSpec(
                concept=params.concept,
                references=references,
                class_word=params.class_word,
                steps=params.steps,
            ),
            created_at=now,
        )
        record = self.jobs.put(JobRecord(job_id, "customize", "QUEUED", "", 0.0, params.concept))
        try:
            await asyncio.to_thread(self._publish, job_id, job)
        except Exception as err:
            self.jobs.update(job_id, state="FAILED", message=f"could not queue the job: {err}")
            raise Unavailable(f"could not queue the customization job: {err}") from None
        return convert.job_proto(record)

    def _publish(self, key: str, job: events_pb2.GenerationJob) -> None:
        bus = self._bus()
        bus.publish(self.jobs_topic, key, job)
        bus.flush()

    async def GetJob(
        self, request: generator_pb2.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> generator_pb2.Job:
        requests.require(request.id, "id")
        record = self.jobs.get(request.id)
        if record is None:
            raise NotFound(f"job {request.id!r} is not known to this generator")
        return convert.job_proto(record)

    async def ListConcepts(
        self, request: generator_pb2.ListConceptsRequest, context: grpc.aio.ServicerContext
    ) -> generator_pb2.ListConceptsResponse:
        size = requests.page_size(request.page)
        concepts = await asyncio.to_thread(self.servable.concepts.list)
        # The token is the last name of the previous page: stable while concepts come and go.
        after = [c for c in concepts if c.name > request.page.page_token]
        page, more = after[:size], len(after) > size
        return generator_pb2.ListConceptsResponse(
            concepts=[convert.concept_proto(c) for c in page],
            page=common_pb2.PageResponse(
                next_page_token=page[-1].name if more else "", total_size=len(concepts)
            ),
        )

    async def GetInfo(
        self, request: common_pb2.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ServiceInfo:
        return servable_info(self.servable)


def _resized_pngs(images: Sequence[object], size: int) -> list[common_pb2.Image]:
    return [
        common_pb2.Image(
            data=encode_png(image.convert("RGB").resize((size, size))),  # type: ignore[attr-defined]
            media_type="image/png",
        )
        for image in images
    ]


def _consume_exception(task: asyncio.Future[Any]) -> None:
    # The work of a cancelled call ends later with Cancelled; nobody awaits it then.
    if not task.cancelled():
        task.exception()
