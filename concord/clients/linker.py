"""Typed client of the linker service: knowledge bases (`upsert_entities`, `delete_entities`,
`list_knowledge_bases`, `delete_knowledge_base`), entity linking (`link`: ranked candidates
with each matcher's score) and knowledge-graph alignment (`align` streamed, or as a job:
`submit_align_job`, `get_align_job`, `wait_align_job`, `align_result`). Results are frozen
dataclasses, never protos."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from concord.clients.convert import error_from_rpc
from concord.clients.encoder import ImageInput, Metadata, image_proto
from concord.proto.v1 import common_pb2, linker_pb2, linker_pb2_grpc
from concord.wire import ModelId, model_id, payload_from_dict

JOB_STATES = {
    linker_pb2.ALIGN_JOB_STATE_UNSPECIFIED: "UNSPECIFIED",
    linker_pb2.ALIGN_JOB_STATE_QUEUED: "QUEUED",
    linker_pb2.ALIGN_JOB_STATE_RUNNING: "RUNNING",
    linker_pb2.ALIGN_JOB_STATE_SUCCEEDED: "SUCCEEDED",
    linker_pb2.ALIGN_JOB_STATE_FAILED: "FAILED",
}


@dataclass(frozen=True)
class Entity:
    """A knowledge-base (or graph) entity: an id, text and 0-n images (bytes, paths, PIL)."""

    id: str
    name: str = ""
    description: str = ""
    images: tuple[ImageInput, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: Path | None = None) -> Entity:
        """An entity from a JSON object (`concord kb upsert FILE.jsonl`): id, name,
        description, attributes and `images`, file paths relative to `base`."""
        images = tuple(
            (base / p if base is not None and not Path(p).is_absolute() else Path(p))
            for p in data.get("images") or ()
        )
        return cls(
            id=str(data.get("id", "")),
            name=str(data.get("name", "")),
            description=str(data.get("description", "")),
            images=images,
            attributes=dict(data.get("attributes") or {}),
        )


@dataclass(frozen=True)
class Mention:
    """A mention to link: the sentence, the [start, end) span of the mention, an image."""

    text: str
    span: tuple[int, int]
    image: ImageInput | None = None


@dataclass(frozen=True)
class Candidate:
    """One ranked entity. `score` is the mean of the matchers that apply; a matcher that does
    not apply (visual: either side without an image; cross_modal: the entity without one) is
    None."""

    entity_id: str
    name: str
    description: str
    score: float
    text_coarse: float | None
    text_fine: float | None
    visual: float | None
    cross_modal: float | None


@dataclass(frozen=True)
class Links:
    """The answer to one `link` call: per mention its candidates, best first."""

    candidates: tuple[tuple[Candidate, ...], ...]
    model: ModelId


@dataclass(frozen=True)
class KnowledgeBase:
    name: str
    entities: int
    model: ModelId  # the linker package whose vectors it holds


@dataclass(frozen=True)
class Graph:
    """A knowledge graph to align: entities and (head id, relation, tail id) triples."""

    entities: tuple[Entity, ...]
    triples: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: Path | None = None) -> Graph:
        """A graph from JSON: {"entities": [...], "triples": [[head, relation, tail], ...]}."""
        triples = []
        for t in data.get("triples") or ():
            if isinstance(t, Mapping):
                triples.append((str(t["head"]), str(t["relation"]), str(t["tail"])))
            else:
                head, relation, tail = t
                triples.append((str(head), str(relation), str(tail)))
        return cls(
            tuple(Entity.from_dict(e, base) for e in data.get("entities") or ()), tuple(triples)
        )


@dataclass(frozen=True)
class AlignedPair:
    source_id: str
    target_id: str
    score: float  # CSLS similarity


@dataclass(frozen=True)
class AlignJob:
    """An align job's state: QUEUED, RUNNING, SUCCEEDED or FAILED."""

    id: str
    state: str
    message: str
    progress: float
    pairs: int
    model: ModelId | None

    @property
    def done(self) -> bool:
        return self.state in ("SUCCEEDED", "FAILED")


# ----------------------------------------------------------------------------- protos


def entity_proto(entity: Entity) -> linker_pb2.Entity:
    out = linker_pb2.Entity(
        id=entity.id,
        name=entity.name,
        description=entity.description,
        images=[image_proto(i) for i in entity.images],
    )
    if entity.attributes:
        out.attributes.CopyFrom(payload_from_dict(entity.attributes))
    return out


def mention_proto(mention: Mention) -> linker_pb2.Mention:
    out = linker_pb2.Mention(
        text=mention.text, span=common_pb2.Span(start=mention.span[0], end=mention.span[1])
    )
    if mention.image is not None:
        out.image.CopyFrom(image_proto(mention.image))
    return out


def graph_proto(graph: Graph) -> linker_pb2.Graph:
    return linker_pb2.Graph(
        entities=[entity_proto(e) for e in graph.entities],
        triples=[linker_pb2.Triple(head=h, relation=r, tail=t) for h, r, t in graph.triples],
    )


def align_request(
    source: Graph, target: Graph, seeds: Sequence[tuple[str, str]], top_k: int
) -> linker_pb2.AlignGraphsRequest:
    return linker_pb2.AlignGraphsRequest(
        source=graph_proto(source),
        target=graph_proto(target),
        seeds=[linker_pb2.AlignedPair(source_id=s, target_id=t) for s, t in seeds],
        top_k=top_k,
    )


def _optional(message: Any, name: str) -> float | None:
    return float(getattr(message, name)) if message.HasField(name) else None


def candidate_from_proto(c: linker_pb2.Candidate) -> Candidate:
    return Candidate(
        entity_id=c.entity_id,
        name=c.name,
        description=c.description,
        score=c.score,
        text_coarse=_optional(c, "text_coarse"),
        text_fine=_optional(c, "text_fine"),
        visual=_optional(c, "visual"),
        cross_modal=_optional(c, "cross_modal"),
    )


def job_from_proto(status: linker_pb2.AlignJobStatus) -> AlignJob:
    return AlignJob(
        id=status.job_id,
        state=JOB_STATES.get(status.state, "UNSPECIFIED"),
        message=status.message,
        progress=status.progress,
        pairs=status.pairs,
        model=model_id(status.model) if status.HasField("model") else None,
    )


def pair_from_proto(pair: linker_pb2.AlignedPair) -> AlignedPair:
    return AlignedPair(pair.source_id, pair.target_id, pair.score)


# ----------------------------------------------------------------------------- client


class LinkerClient:
    """Blocking linker calls; failures raise the domain error the server raised.

    Args:
        channel: a channel to the linker service.
        metadata: call metadata (the bearer token).
        timeout: seconds per call (None: no deadline); alignment calls may need more.
    """

    def __init__(
        self, channel: grpc.Channel, metadata: Metadata = (), timeout: float | None = 60.0
    ) -> None:
        self._stub = linker_pb2_grpc.LinkerServiceStub(channel)
        self._metadata = metadata
        self._timeout = timeout

    def _call(self, rpc: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self._stub, rpc)(
                request, timeout=timeout or self._timeout, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None

    # -- knowledge bases -------------------------------------------------------------------

    def upsert_entities(self, knowledge_base: str, entities: Sequence[Entity]) -> int:
        """Add or replace entities (by id), creating the knowledge base on first use.

        Returns:
            How many were written.
        """
        request = linker_pb2.UpsertEntitiesRequest(
            knowledge_base=knowledge_base, entities=[entity_proto(e) for e in entities]
        )
        return int(self._call("UpsertEntities", request).upserted)

    def delete_entities(self, knowledge_base: str, ids: Sequence[str]) -> int:
        """Remove entities by id. Returns: how many of them existed."""
        request = linker_pb2.DeleteEntitiesRequest(knowledge_base=knowledge_base, ids=list(ids))
        return int(self._call("DeleteEntities", request).deleted)

    def list_knowledge_bases(self) -> tuple[KnowledgeBase, ...]:
        """Returns: every knowledge base with its entity count, by name."""
        reply = self._call("ListKnowledgeBases", linker_pb2.ListKnowledgeBasesRequest())
        return tuple(
            KnowledgeBase(kb.name, kb.entities, model_id(kb.model)) for kb in reply.knowledge_bases
        )

    def delete_knowledge_base(self, name: str) -> bool:
        """Drop a knowledge base and its entities. Raises: NotFound when it does not exist."""
        request = linker_pb2.DeleteKnowledgeBaseRequest(name=name)
        return bool(self._call("DeleteKnowledgeBase", request).deleted)

    # -- linking -----------------------------------------------------------------------------

    def link(
        self,
        knowledge_base: str,
        mentions: Sequence[Mention | tuple[str, tuple[int, int]]],
        *,
        top_k: int = 5,
    ) -> Links:
        """Link mentions to the entities of a knowledge base.

        Args:
            mentions: Mention(text, (start, end), image=None) or (text, (start, end)).
            top_k: candidates per mention.
        Returns:
            Per mention its candidates, best first, with each matcher's score.
        """
        typed = [m if isinstance(m, Mention) else Mention(m[0], m[1]) for m in mentions]
        request = linker_pb2.LinkMentionsRequest(
            knowledge_base=knowledge_base, mentions=[mention_proto(m) for m in typed], top_k=top_k
        )
        reply = self._call("LinkMentions", request)
        return Links(
            candidates=tuple(
                tuple(candidate_from_proto(c) for c in links.candidates) for links in reply.links
            ),
            model=model_id(reply.model),
        )

    # -- alignment -----------------------------------------------------------------------------

    def align(
        self,
        source: Graph,
        target: Graph,
        seeds: Sequence[tuple[str, str]],
        *,
        top_k: int = 1,
        timeout: float | None = 600.0,
    ) -> Iterator[AlignedPair]:
        """Align two graphs from seed pairs (UMAEA); yields pairs as the service streams them:
        `top_k` target candidates per non-seed source entity, best sources first."""
        request = align_request(source, target, seeds, top_k)
        try:
            for pair in self._stub.AlignGraphs(request, timeout=timeout, metadata=self._metadata):
                yield pair_from_proto(pair)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None

    def submit_align_job(
        self,
        source: Graph,
        target: Graph,
        seeds: Sequence[tuple[str, str]],
        *,
        top_k: int = 1,
        job_id: str = "",
    ) -> AlignJob:
        """Queue an alignment too large for one call (a job on Kafka).

        Args:
            job_id: optional; submitting an existing id returns that job.
        Returns:
            The job; follow it with `get_align_job` / `wait_align_job`, then `align_result`.
        """
        request = linker_pb2.SubmitAlignJobRequest(
            graphs=align_request(source, target, seeds, top_k), job_id=job_id
        )
        return job_from_proto(self._call("SubmitAlignJob", request))

    def get_align_job(self, job_id: str) -> AlignJob:
        return job_from_proto(
            self._call("GetAlignJob", linker_pb2.GetAlignJobRequest(job_id=job_id))
        )

    def wait_align_job(
        self,
        job_id: str,
        *,
        timeout: float = 3600.0,
        poll: float = 0.5,
        on_update: Callable[[AlignJob], None] | None = None,
    ) -> AlignJob:
        """Poll a job until it ends. Returns: the final job. Raises: TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_align_job(job_id)
            if on_update is not None:
                on_update(job)
            if job.done:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"align job {job_id} still {job.state} after {timeout}s")
            time.sleep(poll)

    def align_result(self, job_id: str, page_size: int = 1000) -> list[AlignedPair]:
        """Returns: every pair of a SUCCEEDED job (all pages). Raises: FailedPrecondition
        while it is not done, NotFound for an unknown job."""
        pairs: list[AlignedPair] = []
        token = ""
        while True:
            request = linker_pb2.GetAlignResultRequest(
                job_id=job_id, page=common_pb2.PageRequest(page_size=page_size, page_token=token)
            )
            reply = self._call("GetAlignResult", request)
            pairs += [pair_from_proto(p) for p in reply.pairs]
            token = reply.page.next_page_token
            if not token:
                return pairs

    def models(self) -> tuple[ModelId, ...]:
        """Returns: the linker package and its encoder, or () when none is loaded."""
        info = self._call("GetInfo", common_pb2.GetInfoRequest())
        return tuple(model_id(m) for m in info.models) if info.ready else ()
