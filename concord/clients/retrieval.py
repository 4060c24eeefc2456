"""Typed blocking client of the retrieval service: index, search by text / image / vector,
delete, and collection info; failures raise the domain error the server raised."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import grpc
import numpy as np

from concord.clients.convert import (
    FilterSpec,
    collection_from_proto,
    error_from_rpc,
    filter_from_mapping,
    search_result_from_proto,
)
from concord.clients.encoder import ImageInput, Metadata, image_proto
from concord.clients.scorer import pair_score_from_proto
from concord.clients.types import (
    CollectionSummary,
    ExplainedWord,
    HitExplanation,
    IndexItem,
    IndexResult,
    SearchResult,
)
from concord.proto.v1 import common_pb2, retrieval_pb2, retrieval_pb2_grpc
from concord.wire import MODALITY_ENUMS, ImageData, model_id, payload_from_dict

Target = Literal["image", "text", "any"]

VERDICTS = {
    retrieval_pb2.WORD_VERDICT_SUPPORTS: "supports",
    retrieval_pb2.WORD_VERDICT_CONTRADICTS: "contradicts",
    retrieval_pb2.WORD_VERDICT_NEUTRAL: "neutral",
}


def _item_proto(item: IndexItem) -> retrieval_pb2.IndexItem:
    if item.text is not None:
        content = common_pb2.Item(text=item.text)
    else:
        image = item.image if isinstance(item.image, ImageData) else ImageData(item.image or b"")
        content = common_pb2.Item(image=image_proto(image))
    return retrieval_pb2.IndexItem(
        item=content, payload=payload_from_dict(item.payload), id=item.id
    )


def explanation_from_proto(proto: retrieval_pb2.HitExplanation) -> HitExplanation:
    return HitExplanation(
        words=tuple(
            ExplainedWord(
                word=w.word,
                span=(w.span.start, w.span.end),
                attribution=w.attribution,
                verdict=VERDICTS.get(w.verdict, "neutral"),  # type: ignore[arg-type]
            )
            for w in proto.words
        ),
        score=pair_score_from_proto(proto.score, False) if proto.HasField("score") else None,
        unavailable=proto.unavailable,
    )


def explained_result(reply: retrieval_pb2.SearchResponse) -> SearchResult:
    """Returns: the search result with each hit's explanation and the scorer model."""
    result = search_result_from_proto(reply)
    hits = tuple(
        replace(hit, explanation=explanation_from_proto(proto.explanation))
        if proto.HasField("explanation")
        else hit
        for hit, proto in zip(result.hits, reply.hits, strict=True)
    )
    scorer = model_id(reply.scorer_model) if reply.HasField("scorer_model") else None
    return replace(result, hits=hits, scorer_model=scorer)


class RetrievalClient:
    """Blocking retrieval calls.

    Args:
        channel: a channel to the retrieval service.
        metadata: call metadata (the bearer token).
        timeout: seconds per call (None: no deadline).
    """

    def __init__(
        self, channel: grpc.Channel, metadata: Metadata = (), timeout: float | None = 60.0
    ) -> None:
        self._stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        self._metadata = metadata
        self._timeout = timeout

    def _call(self, method: str, request: object) -> object:
        try:
            return getattr(self._stub, method)(
                request, timeout=self._timeout, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None

    def index(
        self,
        items: Sequence[IndexItem],
        *,
        collection: str = "",
        store_tokens: bool = False,
        store_thumbnails: bool = False,
    ) -> IndexResult:
        """Index items (idempotent: the same content keeps the same id).

        Args:
            items: images or texts with payloads.
            collection: target collection ("" = the one of the encoder's current model).
            store_tokens: also store token embeddings for late-interaction rerank.
            store_thumbnails: also keep a small copy of each image (<= 224 px PNG) so that
                searches with explain=True can explain these images.
        Returns:
            Point ids in item order, the collection and the model that encoded them.
        """
        request = retrieval_pb2.IndexRequest(
            collection=collection,
            items=[_item_proto(i) for i in items],
            store_tokens=store_tokens,
            store_thumbnails=store_thumbnails,
        )
        reply: retrieval_pb2.IndexResponse = self._call("Index", request)  # type: ignore[assignment]
        return IndexResult(tuple(reply.ids), reply.collection, model_id(reply.model))

    def search_text(self, text: str, **options: object) -> SearchResult:
        """Search with a text query; options as in `search`."""
        return self.search(retrieval_pb2.SearchRequest(text=text), **options)  # type: ignore[arg-type]

    def search_image(self, image: ImageInput, **options: object) -> SearchResult:
        """Search with an image query; options as in `search`."""
        return self.search(retrieval_pb2.SearchRequest(image=image_proto(image)), **options)  # type: ignore[arg-type]

    def search_vector(
        self, vector: Sequence[float] | np.ndarray, **options: object
    ) -> SearchResult:
        """Search with a raw embedding; options as in `search`."""
        values = np.asarray(vector, dtype=np.float32).ravel().tolist()
        request = retrieval_pb2.SearchRequest(vector=common_pb2.Embedding(values=values))
        return self.search(request, **options)  # type: ignore[arg-type]

    def search(
        self,
        query: retrieval_pb2.SearchRequest,
        *,
        collection: str = "",
        top_k: int = 10,
        target: Target = "any",
        filter: FilterSpec | None = None,
        rerank: bool = False,
        exact: bool = False,
        with_payload: bool = True,
        explain: bool = False,
    ) -> SearchResult:
        """Run a search whose query part is already set on `query`.

        Args:
            query: a SearchRequest with its text, image or vector set.
            collection: collection ("" = the one of the encoder's current model).
            top_k: hits wanted (1..1000).
            target: return only images, only texts, or both ("any").
            filter: payload equality conditions (a list of strings matches any of them).
            rerank: rerank dense candidates by token late interaction (MAX_SIM).
            exact: exhaustive search instead of HNSW.
            with_payload: return the hits' payloads.
            explain: for a text query, explain each image hit: which query words the image
                supports and which it contradicts (the scorer's CLIP4DM attributions, with
                spans in the query) and the pair's alignment score; top_k <= 20. Only images
                indexed with store_thumbnails (or through the ingest topic) get words.
                Raises Unavailable when the scorer cannot be reached.
        Returns:
            Hits best first, the model and the collection searched (and with explain, each
            image hit's `explanation` and the `scorer_model`).
        """
        request = retrieval_pb2.SearchRequest()
        request.CopyFrom(query)
        request.collection = collection
        request.top_k = top_k
        request.target = MODALITY_ENUMS.get(
            "" if target == "any" else target, common_pb2.MODALITY_UNSPECIFIED
        )
        request.rerank_late_interaction = rerank
        request.exact = exact
        request.with_payload = with_payload
        request.explain = explain
        proto_filter = filter_from_mapping(filter)
        if proto_filter is not None:
            request.filter.CopyFrom(proto_filter)
        reply: retrieval_pb2.SearchResponse = self._call("Search", request)  # type: ignore[assignment]
        return explained_result(reply) if explain else search_result_from_proto(reply)

    def delete(
        self, ids: Sequence[str] = (), *, collection: str = "", filter: FilterSpec | None = None
    ) -> int:
        """Delete points by id or by payload filter. Returns: how many were deleted."""
        request = retrieval_pb2.DeleteRequest(collection=collection, ids=list(ids))
        proto_filter = filter_from_mapping(filter)
        if proto_filter is not None:
            request.filter.CopyFrom(proto_filter)
        reply: retrieval_pb2.DeleteResponse = self._call("Delete", request)  # type: ignore[assignment]
        return int(reply.deleted)

    def collection(self, name: str) -> CollectionSummary:
        """Returns: a collection's model, dimension, point count and token flag."""
        request = retrieval_pb2.GetCollectionRequest(name=name)
        return collection_from_proto(self._call("GetCollection", request))  # type: ignore[arg-type]

    def collections(self, page_size: int = 100) -> list[CollectionSummary]:
        """Returns: every collection (all pages)."""
        found: list[CollectionSummary] = []
        token = ""
        while True:
            page = common_pb2.PageRequest(page_size=page_size, page_token=token)
            reply: retrieval_pb2.ListCollectionsResponse = self._call(
                "ListCollections", retrieval_pb2.ListCollectionsRequest(page=page)
            )  # type: ignore[assignment]
            found.extend(collection_from_proto(c) for c in reply.collections)
            token = reply.page.next_page_token
            if not token:
                return found
