import datetime

from concord.proto.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AlignJobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALIGN_JOB_STATE_UNSPECIFIED: _ClassVar[AlignJobState]
    ALIGN_JOB_STATE_QUEUED: _ClassVar[AlignJobState]
    ALIGN_JOB_STATE_RUNNING: _ClassVar[AlignJobState]
    ALIGN_JOB_STATE_SUCCEEDED: _ClassVar[AlignJobState]
    ALIGN_JOB_STATE_FAILED: _ClassVar[AlignJobState]
ALIGN_JOB_STATE_UNSPECIFIED: AlignJobState
ALIGN_JOB_STATE_QUEUED: AlignJobState
ALIGN_JOB_STATE_RUNNING: AlignJobState
ALIGN_JOB_STATE_SUCCEEDED: AlignJobState
ALIGN_JOB_STATE_FAILED: AlignJobState

class Entity(_message.Message):
    __slots__ = ("id", "name", "description", "images", "attributes")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.Image]
    attributes: _common_pb2.Payload
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., images: _Optional[_Iterable[_Union[_common_pb2.Image, _Mapping]]] = ..., attributes: _Optional[_Union[_common_pb2.Payload, _Mapping]] = ...) -> None: ...

class UpsertEntitiesRequest(_message.Message):
    __slots__ = ("knowledge_base", "entities")
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: str
    entities: _containers.RepeatedCompositeFieldContainer[Entity]
    def __init__(self, knowledge_base: _Optional[str] = ..., entities: _Optional[_Iterable[_Union[Entity, _Mapping]]] = ...) -> None: ...

class UpsertEntitiesResponse(_message.Message):
    __slots__ = ("upserted", "model")
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    model: _common_pb2.ModelRef
    def __init__(self, upserted: _Optional[int] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class DeleteEntitiesRequest(_message.Message):
    __slots__ = ("knowledge_base", "ids")
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, knowledge_base: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteEntitiesResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class ListKnowledgeBasesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KnowledgeBase(_message.Message):
    __slots__ = ("name", "entities", "model")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    entities: int
    model: _common_pb2.ModelRef
    def __init__(self, name: _Optional[str] = ..., entities: _Optional[int] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class ListKnowledgeBasesResponse(_message.Message):
    __slots__ = ("knowledge_bases",)
    KNOWLEDGE_BASES_FIELD_NUMBER: _ClassVar[int]
    knowledge_bases: _containers.RepeatedCompositeFieldContainer[KnowledgeBase]
    def __init__(self, knowledge_bases: _Optional[_Iterable[_Union[KnowledgeBase, _Mapping]]] = ...) -> None: ...

class DeleteKnowledgeBaseRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteKnowledgeBaseResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class Mention(_message.Message):
    __slots__ = ("text", "span", "image")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SPAN_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    text: str
    span: _common_pb2.Span
    image: _common_pb2.Image
    def __init__(self, text: _Optional[str] = ..., span: _Optional[_Union[_common_pb2.Span, _Mapping]] = ..., image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ...) -> None: ...

class LinkMentionsRequest(_message.Message):
    __slots__ = ("knowledge_base", "mentions", "top_k")
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    MENTIONS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: str
    mentions: _containers.RepeatedCompositeFieldContainer[Mention]
    top_k: int
    def __init__(self, knowledge_base: _Optional[str] = ..., mentions: _Optional[_Iterable[_Union[Mention, _Mapping]]] = ..., top_k: _Optional[int] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("entity_id", "name", "score", "text_coarse", "text_fine", "visual", "cross_modal", "description")
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TEXT_COARSE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FINE_FIELD_NUMBER: _ClassVar[int]
    VISUAL_FIELD_NUMBER: _ClassVar[int]
    CROSS_MODAL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    entity_id: str
    name: str
    score: float
    text_coarse: float
    text_fine: float
    visual: float
    cross_modal: float
    description: str
    def __init__(self, entity_id: _Optional[str] = ..., name: _Optional[str] = ..., score: _Optional[float] = ..., text_coarse: _Optional[float] = ..., text_fine: _Optional[float] = ..., visual: _Optional[float] = ..., cross_modal: _Optional[float] = ..., description: _Optional[str] = ...) -> None: ...

class MentionLinks(_message.Message):
    __slots__ = ("candidates",)
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    def __init__(self, candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ...) -> None: ...

class LinkMentionsResponse(_message.Message):
    __slots__ = ("links", "model")
    LINKS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    links: _containers.RepeatedCompositeFieldContainer[MentionLinks]
    model: _common_pb2.ModelRef
    def __init__(self, links: _Optional[_Iterable[_Union[MentionLinks, _Mapping]]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class Triple(_message.Message):
    __slots__ = ("head", "relation", "tail")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    RELATION_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    head: str
    relation: str
    tail: str
    def __init__(self, head: _Optional[str] = ..., relation: _Optional[str] = ..., tail: _Optional[str] = ...) -> None: ...

class Graph(_message.Message):
    __slots__ = ("entities", "triples")
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    TRIPLES_FIELD_NUMBER: _ClassVar[int]
    entities: _containers.RepeatedCompositeFieldContainer[Entity]
    triples: _containers.RepeatedCompositeFieldContainer[Triple]
    def __init__(self, entities: _Optional[_Iterable[_Union[Entity, _Mapping]]] = ..., triples: _Optional[_Iterable[_Union[Triple, _Mapping]]] = ...) -> None: ...

class AlignGraphsRequest(_message.Message):
    __slots__ = ("source", "target", "seeds", "top_k")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    source: Graph
    target: Graph
    seeds: _containers.RepeatedCompositeFieldContainer[AlignedPair]
    top_k: int
    def __init__(self, source: _Optional[_Union[Graph, _Mapping]] = ..., target: _Optional[_Union[Graph, _Mapping]] = ..., seeds: _Optional[_Iterable[_Union[AlignedPair, _Mapping]]] = ..., top_k: _Optional[int] = ...) -> None: ...

class AlignedPair(_message.Message):
    __slots__ = ("source_id", "target_id", "score")
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    source_id: str
    target_id: str
    score: float
    def __init__(self, source_id: _Optional[str] = ..., target_id: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class SubmitAlignJobRequest(_message.Message):
    __slots__ = ("graphs", "job_id")
    GRAPHS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    graphs: AlignGraphsRequest
    job_id: str
    def __init__(self, graphs: _Optional[_Union[AlignGraphsRequest, _Mapping]] = ..., job_id: _Optional[str] = ...) -> None: ...

class GetAlignJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetAlignResultRequest(_message.Message):
    __slots__ = ("job_id", "page")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    page: _common_pb2.PageRequest
    def __init__(self, job_id: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class AlignResult(_message.Message):
    __slots__ = ("pairs", "page", "status")
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedCompositeFieldContainer[AlignedPair]
    page: _common_pb2.PageResponse
    status: AlignJobStatus
    def __init__(self, pairs: _Optional[_Iterable[_Union[AlignedPair, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ..., status: _Optional[_Union[AlignJobStatus, _Mapping]] = ...) -> None: ...

class EntityEvent(_message.Message):
    __slots__ = ("knowledge_base", "upserted", "deleted_id")
    KNOWLEDGE_BASE_FIELD_NUMBER: _ClassVar[int]
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    DELETED_ID_FIELD_NUMBER: _ClassVar[int]
    knowledge_base: str
    upserted: Entity
    deleted_id: str
    def __init__(self, knowledge_base: _Optional[str] = ..., upserted: _Optional[_Union[Entity, _Mapping]] = ..., deleted_id: _Optional[str] = ...) -> None: ...

class AlignJob(_message.Message):
    __slots__ = ("job_id", "request", "request_path", "submitted_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_PATH_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    request: AlignGraphsRequest
    request_path: str
    submitted_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., request: _Optional[_Union[AlignGraphsRequest, _Mapping]] = ..., request_path: _Optional[str] = ..., submitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AlignJobStatus(_message.Message):
    __slots__ = ("job_id", "state", "message", "progress", "pairs", "model", "updated_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: AlignJobState
    message: str
    progress: float
    pairs: int
    model: _common_pb2.ModelRef
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[AlignJobState, str]] = ..., message: _Optional[str] = ..., progress: _Optional[float] = ..., pairs: _Optional[int] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
