from concord.proto.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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
    __slots__ = ("upserted",)
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    def __init__(self, upserted: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("entity_id", "name", "score")
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    entity_id: str
    name: str
    score: float
    def __init__(self, entity_id: _Optional[str] = ..., name: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

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
