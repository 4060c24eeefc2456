from concord.proto.v1 import common_pb2 as _common_pb2
from concord.proto.v1 import scorer_pb2 as _scorer_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WordVerdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORD_VERDICT_UNSPECIFIED: _ClassVar[WordVerdict]
    WORD_VERDICT_SUPPORTS: _ClassVar[WordVerdict]
    WORD_VERDICT_CONTRADICTS: _ClassVar[WordVerdict]
    WORD_VERDICT_NEUTRAL: _ClassVar[WordVerdict]
WORD_VERDICT_UNSPECIFIED: WordVerdict
WORD_VERDICT_SUPPORTS: WordVerdict
WORD_VERDICT_CONTRADICTS: WordVerdict
WORD_VERDICT_NEUTRAL: WordVerdict

class IndexItem(_message.Message):
    __slots__ = ("item", "payload", "id")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    item: _common_pb2.Item
    payload: _common_pb2.Payload
    id: str
    def __init__(self, item: _Optional[_Union[_common_pb2.Item, _Mapping]] = ..., payload: _Optional[_Union[_common_pb2.Payload, _Mapping]] = ..., id: _Optional[str] = ...) -> None: ...

class IndexRequest(_message.Message):
    __slots__ = ("collection", "items", "store_tokens", "store_thumbnails")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    STORE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STORE_THUMBNAILS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    items: _containers.RepeatedCompositeFieldContainer[IndexItem]
    store_tokens: bool
    store_thumbnails: bool
    def __init__(self, collection: _Optional[str] = ..., items: _Optional[_Iterable[_Union[IndexItem, _Mapping]]] = ..., store_tokens: _Optional[bool] = ..., store_thumbnails: _Optional[bool] = ...) -> None: ...

class IndexResponse(_message.Message):
    __slots__ = ("ids", "collection", "model")
    IDS_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    collection: str
    model: _common_pb2.ModelRef
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., collection: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("must", "should", "must_not")
    MUST_FIELD_NUMBER: _ClassVar[int]
    SHOULD_FIELD_NUMBER: _ClassVar[int]
    MUST_NOT_FIELD_NUMBER: _ClassVar[int]
    must: _containers.RepeatedCompositeFieldContainer[Condition]
    should: _containers.RepeatedCompositeFieldContainer[Condition]
    must_not: _containers.RepeatedCompositeFieldContainer[Condition]
    def __init__(self, must: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., should: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., must_not: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("field", "keyword", "integer", "flag", "any", "range")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    ANY_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    field: str
    keyword: str
    integer: int
    flag: bool
    any: AnyOf
    range: Range
    def __init__(self, field: _Optional[str] = ..., keyword: _Optional[str] = ..., integer: _Optional[int] = ..., flag: _Optional[bool] = ..., any: _Optional[_Union[AnyOf, _Mapping]] = ..., range: _Optional[_Union[Range, _Mapping]] = ...) -> None: ...

class AnyOf(_message.Message):
    __slots__ = ("keywords",)
    KEYWORDS_FIELD_NUMBER: _ClassVar[int]
    keywords: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keywords: _Optional[_Iterable[str]] = ...) -> None: ...

class Range(_message.Message):
    __slots__ = ("gt", "gte", "lt", "lte")
    GT_FIELD_NUMBER: _ClassVar[int]
    GTE_FIELD_NUMBER: _ClassVar[int]
    LT_FIELD_NUMBER: _ClassVar[int]
    LTE_FIELD_NUMBER: _ClassVar[int]
    gt: float
    gte: float
    lt: float
    lte: float
    def __init__(self, gt: _Optional[float] = ..., gte: _Optional[float] = ..., lt: _Optional[float] = ..., lte: _Optional[float] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "text", "image", "vector", "target", "top_k", "filter", "rerank_late_interaction", "with_payload", "exact", "explain")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    RERANK_LATE_INTERACTION_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    collection: str
    text: str
    image: _common_pb2.Image
    vector: _common_pb2.Embedding
    target: _common_pb2.Modality
    top_k: int
    filter: Filter
    rerank_late_interaction: bool
    with_payload: bool
    exact: bool
    explain: bool
    def __init__(self, collection: _Optional[str] = ..., text: _Optional[str] = ..., image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., vector: _Optional[_Union[_common_pb2.Embedding, _Mapping]] = ..., target: _Optional[_Union[_common_pb2.Modality, str]] = ..., top_k: _Optional[int] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., rerank_late_interaction: _Optional[bool] = ..., with_payload: _Optional[bool] = ..., exact: _Optional[bool] = ..., explain: _Optional[bool] = ...) -> None: ...

class ExplainedWord(_message.Message):
    __slots__ = ("word", "span", "attribution", "verdict")
    WORD_FIELD_NUMBER: _ClassVar[int]
    SPAN_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    word: str
    span: _common_pb2.Span
    attribution: float
    verdict: WordVerdict
    def __init__(self, word: _Optional[str] = ..., span: _Optional[_Union[_common_pb2.Span, _Mapping]] = ..., attribution: _Optional[float] = ..., verdict: _Optional[_Union[WordVerdict, str]] = ...) -> None: ...

class HitExplanation(_message.Message):
    __slots__ = ("words", "score", "unavailable")
    WORDS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    words: _containers.RepeatedCompositeFieldContainer[ExplainedWord]
    score: _scorer_pb2.PairScore
    unavailable: str
    def __init__(self, words: _Optional[_Iterable[_Union[ExplainedWord, _Mapping]]] = ..., score: _Optional[_Union[_scorer_pb2.PairScore, _Mapping]] = ..., unavailable: _Optional[str] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("id", "score", "modality", "payload", "explanation")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    modality: _common_pb2.Modality
    payload: _common_pb2.Payload
    explanation: HitExplanation
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., modality: _Optional[_Union[_common_pb2.Modality, str]] = ..., payload: _Optional[_Union[_common_pb2.Payload, _Mapping]] = ..., explanation: _Optional[_Union[HitExplanation, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "model", "collection", "scorer_model")
    HITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SCORER_MODEL_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    model: _common_pb2.ModelRef
    collection: str
    scorer_model: _common_pb2.ModelRef
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., collection: _Optional[str] = ..., scorer_model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class SearchBatchRequest(_message.Message):
    __slots__ = ("searches",)
    SEARCHES_FIELD_NUMBER: _ClassVar[int]
    searches: _containers.RepeatedCompositeFieldContainer[SearchRequest]
    def __init__(self, searches: _Optional[_Iterable[_Union[SearchRequest, _Mapping]]] = ...) -> None: ...

class SearchBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResponse, _Mapping]]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("collection", "ids", "filter")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    filter: Filter
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class GetCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("name", "model", "dim", "points", "has_tokens")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    HAS_TOKENS_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: _common_pb2.ModelRef
    dim: int
    points: int
    has_tokens: bool
    def __init__(self, name: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., dim: _Optional[int] = ..., points: _Optional[int] = ..., has_tokens: _Optional[bool] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ("page",)
    PAGE_FIELD_NUMBER: _ClassVar[int]
    page: _common_pb2.PageRequest
    def __init__(self, page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections", "page")
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    page: _common_pb2.PageResponse
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...
