"""Proto <-> domain translation for the linker service: validates, calls the servable, the
knowledge bases and the job directory, builds responses. No ML logic; domain errors become
gRPC codes in the interceptor.

Order of checks in a model RPC: the request's own fields first (INVALID_ARGUMENT naming
them), then the model (FAILED_PRECONDITION), then the knowledge base (NOT_FOUND naming it).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

import grpc

from concord.bus import Bus
from concord.errors import FailedPrecondition, FieldViolation, InvalidArgument
from concord.proto.v1 import common_pb2, linker_pb2, linker_pb2_grpc
from concord.serving import requests
from concord.serving.definitions import servable_info
from concord.wire import model_ref
from services.linker import convert
from services.linker.convert import Limits
from services.linker.jobs import SUCCEEDED, AlignJobs, check_job_id, new_job_id
from services.linker.kb import KnowledgeBases, check_name
from services.linker.servable import LinkerServable
from services.linker.types import LinkIn
from services.linker.worker import ALIGN_JOBS_TOPIC, ALIGNED_TOPIC

INLINE_JOB_BYTES = 900 * 1024  # graphs above this travel by path (Kafka's default 1 MB)
DEFAULT_RESULT_PAGE = 1000
MAX_RESULT_PAGE = 10_000


class AlignCancelled(Exception):
    """Raised in the training thread of an AlignGraphs call whose caller has gone."""


class LinkerServicer(linker_pb2_grpc.LinkerServiceServicer):
    """Args:
    servable: the linker model. kbs: returns the knowledge bases (opened at start).
    jobs: the align job directory. bus: returns the process bus (align jobs).
    limits / job_limits: what one call / one align job may carry.
    """

    def __init__(
        self,
        servable: LinkerServable,
        kbs: Callable[[], KnowledgeBases],
        jobs: AlignJobs,
        bus: Callable[[], Bus],
        limits: Limits,
        job_limits: Limits,
    ) -> None:
        self.servable = servable
        self._kbs = kbs
        self.jobs = jobs
        self._bus = bus
        self.limits = limits
        self.job_limits = job_limits
        self._align_slot = asyncio.Semaphore(1)

    # ----------------------------------------------------------------- knowledge bases

    async def UpsertEntities(
        self, request: linker_pb2.UpsertEntitiesRequest, context: grpc.aio.ServicerContext
    ) -> linker_pb2.UpsertEntitiesResponse:
        violations: list[FieldViolation] = []
        try:
            check_name(request.knowledge_base)
        except InvalidArgument as err:
            violations += err.violations
        try:
            entities = await asyncio.to_thread(
                convert.decode_entities, request.entities, self.limits
            )
        except InvalidArgument as err:
            violations += err.violations
        if violations:
            raise InvalidArgument.from_violations(violations)
        loaded = self.servable.require()
        kbs = self._kbs()
        await asyncio.to_thread(kbs.ensure, request.knowledge_base, loaded.id, loaded.dims)
        records = await self.servable.embed(entities)
        count = await asyncio.to_thread(kbs.upsert, request.knowledge_base, records)
        return linker_pb2.UpsertEntitiesResponse(upserted=count, model=model_ref(loaded.id))

    async def DeleteEntities(
        self, request: linker_pb2.DeleteEntitiesRequest, context: grpc.aio.ServicerContext
    ) -> linker_pb2.DeleteEntitiesResponse:
        check_name(request.knowledge_base)
        ids = convert.check_ids(request.ids, self.limits)
        deleted = await asyncio.to_thread(self._kbs().delete, request.knowledge_base, ids)
        return linker_pb2.DeleteEntitiesResponse(deleted=deleted)

    async def ListKnowledgeBases(
        self, request: linker_pb2.ListKnowledgeBasesRequest, context: grpc.aio.ServicerContext
    ) -> linker_pb2.ListKnowledgeBasesResponse:
        listed = await asyncio.to_thread(self._kbs().summaries)
        return linker_pb2.ListKnowledgeBasesResponse(
            knowledge_bases=[
                linker_pb2.KnowledgeBase(name=e.name, entities=n, model=model_ref(e.model))
                for e, n in listed
            ]
        )

    async def DeleteKnowledgeBase(
        self, request: linker_pb2.DeleteKnowledgeBaseRequest, context: grpc.aio.ServicerContext
    ) -> linker_pb2.DeleteKnowledgeBaseResponse:
        kbs = self._kbs()
        await asyncio.to_thread(kbs.entry, check_name(request.name, "name"), "name")  # NotFound
        deleted = await asyncio.to_thread(kbs.drop, request.name)
        return linker_pb2.DeleteKnowledgeBaseResponse(deleted=deleted)

    # ----------------------------------------------------------------- linking

    async def LinkMentions(
        self, request: linker_pb2.LinkMentionsRequest, context: grpc.aio.ServicerContext
    ) -> linker_pb2.LinkMentionsResponse:
        kb, mentions, top_k = await asyncio.to_thread(convert.link_request, request, self.limits)
        loaded = self.servable.require()
        entry = await asyncio.to_thread(self._kbs().entry, kb)
        self.servable.check_kb(entry)
        links = await self.servable.link([LinkIn(kb, m, top_k) for m in mentions])
        return convert.link_response(links, loaded.id)

    # ----------------------------------------------------------------- alignment

    async def AlignGraphs(
        self, request: linker_pb2.AlignGraphsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[linker_pb2.AlignedPair]:
        aligned = await asyncio.to_thread(convert.align_request, request, self.limits)
        self.servable.require()
        cancelled = threading.Event()

        def progress(stage: str, step: int, steps: int) -> None:
            if cancelled.is_set():  # the caller left (cancel, deadline): stop training
                raise AlignCancelled(f"AlignGraphs cancelled in {stage} at epoch {step}/{steps}")

        try:
            # One training at a time from calls: the others wait here, not in worker threads
            # that every RPC's decoding shares.
            async with self._align_slot:
                pairs = await asyncio.to_thread(self.servable.align_sync, aligned, progress)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        for pair in pairs:
            yield convert.aligned_pair(pair)

    async def SubmitAlignJob(
        self, request: linker_pb2.SubmitAlignJobRequest, context: grpc.aio.ServicerContext
    ) -> linker_pb2.AlignJobStatus:
        job_id = check_job_id(request.job_id) if request.job_id else new_job_id()
        graphs = request.graphs
        try:
            await asyncio.to_thread(convert.align_request, graphs, self.job_limits)
        except InvalidArgument as err:  # the graphs travel in `graphs`: name fields there
            raise InvalidArgument.from_violations(
                [FieldViolation(f"graphs.{v.field}", v.description) for v in err.violations]
            ) from None
        self.servable.require()
        status, new = await asyncio.to_thread(self.jobs.create, job_id)
        if not new:
            return status
        job = linker_pb2.AlignJob(job_id=job_id, submitted_at=convert.now())
        if graphs.ByteSize() <= INLINE_JOB_BYTES:
            job.request.CopyFrom(graphs)
        else:
            job.request_path = await asyncio.to_thread(self.jobs.store_request, job_id, graphs)
        try:
            await asyncio.to_thread(self._publish, job, status)
        except Exception:
            await asyncio.to_thread(self.jobs.remove, job_id)  # not queued: nothing to report
            raise
        return status

    def _publish(self, job: linker_pb2.AlignJob, status: linker_pb2.AlignJobStatus) -> None:
        bus = self._bus()
        # QUEUED is on concord.aligned before the job can be picked up: otherwise the worker's
        # RUNNING could land ahead of it, and an observer would see the job go backwards.
        bus.publish(ALIGNED_TOPIC, job.job_id, status)
        bus.flush()
        bus.publish(ALIGN_JOBS_TOPIC, job.job_id, job)
        bus.flush()

    async def GetAlignJob(
        self, request: linker_pb2.GetAlignJobRequest, context: grpc.aio.ServicerContext
    ) -> linker_pb2.AlignJobStatus:
        return await asyncio.to_thread(self.jobs.require, check_job_id(request.job_id))

    async def GetAlignResult(
        self, request: linker_pb2.GetAlignResultRequest, context: grpc.aio.ServicerContext
    ) -> linker_pb2.AlignResult:
        job_id = check_job_id(request.job_id)
        size = requests.page_size(request.page, DEFAULT_RESULT_PAGE, MAX_RESULT_PAGE)
        token = request.page.page_token
        if token and not token.isdigit():
            raise InvalidArgument("page.page_token", "is not a token this service gave")
        start = int(token or 0)
        status = await asyncio.to_thread(self.jobs.require, job_id)
        if status.state != SUCCEEDED:
            state = linker_pb2.AlignJobState.Name(status.state).removeprefix("ALIGN_JOB_STATE_")
            raise FailedPrecondition(
                f"align job {job_id!r} is {state} ({status.message or 'no message'}); "
                "its result exists once it SUCCEEDED"
            )
        pairs = await asyncio.to_thread(self.jobs.result, job_id)
        end = min(start + size, len(pairs))
        return linker_pb2.AlignResult(
            pairs=pairs[start:end],
            page=common_pb2.PageResponse(
                next_page_token=str(end) if end < len(pairs) else "", total_size=len(pairs)
            ),
            status=status,
        )

    async def GetInfo(
        self, request: common_pb2.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ServiceInfo:
        return servable_info(self.servable)
