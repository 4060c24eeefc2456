"""Proto <-> domain translation for the retrieval service: converts requests, calls the
engine, builds responses; publishes `concord.indexed` events for what it indexed."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc
import numpy as np

from concord.errors import InvalidArgument
from concord.proto.v1 import common_pb2, retrieval_pb2, retrieval_pb2_grpc
from concord.serving import requests
from concord.serving.definitions import service_info
from concord.wire import ImageData, model_ref
from services.retrieval import convert, explain
from services.retrieval.engine import Query, Retrieval
from services.retrieval.events import IndexedPublisher
from services.retrieval.search import MAX_SEARCHES_PER_BATCH


def _remaining(context: grpc.aio.ServicerContext | None) -> float | None:
    """Returns: seconds left of the caller's deadline (None: no deadline), for the calls this
    request makes to the scorer."""
    left = context.time_remaining() if context is not None else None
    return max(left, 0.001) if left is not None else None


class RetrievalServicer(retrieval_pb2_grpc.RetrievalServiceServicer):
    def __init__(self, engine: Retrieval, events: IndexedPublisher) -> None:
        self.engine = engine
        self.events = events

    async def Index(
        self, request: retrieval_pb2.IndexRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.IndexResponse:
        items = convert.items_from_proto(request.items)
        done = await self.engine.index(
            items, request.collection, request.store_tokens, request.store_thumbnails
        )
        await asyncio.to_thread(self.events.publish, done)
        return retrieval_pb2.IndexResponse(
            ids=list(done.ids), collection=done.collection, model=model_ref(done.model)
        )

    async def Search(
        self, request: retrieval_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.SearchResponse:
        return await self._search(request, context)

    async def _search(
        self,
        request: retrieval_pb2.SearchRequest,
        context: grpc.aio.ServicerContext | None = None,
    ) -> retrieval_pb2.SearchResponse:
        spec = convert.search_spec(request)
        kind = request.WhichOneof("query")
        if request.explain:
            explain.check(kind or "", spec.top_k)
            spec = replace(spec, with_payload=True)  # image hits carry their thumbnails
        if kind == "text":
            query = Query(text=request.text)
        elif kind == "image":
            query = Query(image=ImageData(request.image.data, request.image.media_type))
        elif kind == "vector":
            query = Query(vector=np.asarray(request.vector.values, dtype=np.float32))
        else:
            raise InvalidArgument("query", "set one of text, image or vector")
        hits, entry = await self.engine.search(query, spec, request.collection)
        response = retrieval_pb2.SearchResponse(model=model_ref(entry.model), collection=entry.name)
        if request.explain:
            explained, scorer = await self.engine.explain(request.text, hits, _remaining(context))
            if scorer is not None:
                response.scorer_model.CopyFrom(model_ref(scorer))
            convert.add_hits(response.hits, hits, explained, request.with_payload)
        else:
            convert.add_hits(response.hits, hits)
        return response

    async def SearchBatch(
        self, request: retrieval_pb2.SearchBatchRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.SearchBatchResponse:
        # Counted before any work: 1,100 searches kept the server encoding long after the
        # caller had given up (CANCELLED).
        if not request.searches:
            raise InvalidArgument("searches", "is empty")
        if len(request.searches) > MAX_SEARCHES_PER_BATCH:
            raise InvalidArgument(
                "searches",
                f"has {len(request.searches)} searches; the limit per request is "
                f"{MAX_SEARCHES_PER_BATCH}",
            )

        async def one(i: int, search: retrieval_pb2.SearchRequest) -> retrieval_pb2.SearchResponse:
            try:
                return await self._search(search, context)
            except InvalidArgument as err:
                raise convert.prefixed(err, f"searches[{i}].") from None

        results = await asyncio.gather(*(one(i, s) for i, s in enumerate(request.searches)))
        return retrieval_pb2.SearchBatchResponse(results=results)

    async def Delete(
        self, request: retrieval_pb2.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.DeleteResponse:
        where = convert.filter_from_proto(request.filter) if request.HasField("filter") else None
        name = request.collection or (await self.engine.default_entry()).name
        deleted = await asyncio.to_thread(self.engine.delete, name, list(request.ids), where)
        return retrieval_pb2.DeleteResponse(deleted=deleted)

    async def GetCollection(
        self, request: retrieval_pb2.GetCollectionRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.CollectionInfo:
        requests.require(request.name, "name")
        entry, info = await asyncio.to_thread(self.engine.collections.info, request.name)
        return convert.collection_proto(entry, info)

    async def ListCollections(
        self, request: retrieval_pb2.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.ListCollectionsResponse:
        size = requests.page_size(request.page)
        collections = self.engine.collections
        names = await asyncio.to_thread(collections.names)
        # The token is the last name of the previous page: stable while collections come and go.
        after = [n for n in names if n > request.page.page_token]
        page, more = after[:size], len(after) > size
        infos = [await asyncio.to_thread(collections.info, n) for n in page]
        return retrieval_pb2.ListCollectionsResponse(
            collections=[convert.collection_proto(e, i) for e, i in infos],
            page=common_pb2.PageResponse(
                next_page_token=page[-1] if more else "", total_size=len(names)
            ),
        )

    async def GetInfo(
        self, request: common_pb2.GetInfoRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ServiceInfo:
        # Retrieval serves whatever the encoder serves; without one it can still search by vector.
        model, reason = None, self.engine.dependencies.reason
        if self.engine.encoder is not None and not reason:
            try:
                model = await self.engine.encoder.model(timeout=1.0)
            except Exception as err:  # an unreachable encoder is "not ready", not an error
                reason = f"encoder at {self.engine.dependencies.addresses['encoder']}: {err}"
            if model is None and not reason:
                reason = "the encoder serves no model"
        return service_info(
            "retrieval",
            models=[model_ref(model)] if model else [],
            ready=model is not None,
            reason=reason,
        )
