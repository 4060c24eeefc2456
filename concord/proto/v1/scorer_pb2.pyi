from concord.proto.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScorePair(_message.Message):
    __slots__ = ("image", "text", "references")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.Image
    text: str
    references: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., text: _Optional[str] = ..., references: _Optional[_Iterable[str]] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("pairs", "model")
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedCompositeFieldContainer[ScorePair]
    model: _common_pb2.ModelRef
    def __init__(self, pairs: _Optional[_Iterable[_Union[ScorePair, _Mapping]]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class PairScore(_message.Message):
    __slots__ = ("clip_score", "ref_clip_score", "fine_grained_score", "f_clip_score", "aligned_probability")
    CLIP_SCORE_FIELD_NUMBER: _ClassVar[int]
    REF_CLIP_SCORE_FIELD_NUMBER: _ClassVar[int]
    FINE_GRAINED_SCORE_FIELD_NUMBER: _ClassVar[int]
    F_CLIP_SCORE_FIELD_NUMBER: _ClassVar[int]
    ALIGNED_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    clip_score: float
    ref_clip_score: float
    fine_grained_score: float
    f_clip_score: float
    aligned_probability: float
    def __init__(self, clip_score: _Optional[float] = ..., ref_clip_score: _Optional[float] = ..., fine_grained_score: _Optional[float] = ..., f_clip_score: _Optional[float] = ..., aligned_probability: _Optional[float] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("scores", "model")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[PairScore]
    model: _common_pb2.ModelRef
    def __init__(self, scores: _Optional[_Iterable[_Union[PairScore, _Mapping]]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("image", "text", "include_heatmap", "threshold")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HEATMAP_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.Image
    text: str
    include_heatmap: bool
    threshold: float
    def __init__(self, image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., text: _Optional[str] = ..., include_heatmap: _Optional[bool] = ..., threshold: _Optional[float] = ...) -> None: ...

class WordAlignment(_message.Message):
    __slots__ = ("word", "span", "attribution", "similarity", "misaligned", "best_patch")
    WORD_FIELD_NUMBER: _ClassVar[int]
    SPAN_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    MISALIGNED_FIELD_NUMBER: _ClassVar[int]
    BEST_PATCH_FIELD_NUMBER: _ClassVar[int]
    word: str
    span: _common_pb2.Span
    attribution: float
    similarity: float
    misaligned: bool
    best_patch: int
    def __init__(self, word: _Optional[str] = ..., span: _Optional[_Union[_common_pb2.Span, _Mapping]] = ..., attribution: _Optional[float] = ..., similarity: _Optional[float] = ..., misaligned: _Optional[bool] = ..., best_patch: _Optional[int] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("words", "score", "heatmap", "model")
    WORDS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    HEATMAP_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    words: _containers.RepeatedCompositeFieldContainer[WordAlignment]
    score: PairScore
    heatmap: _common_pb2.Tensor
    model: _common_pb2.ModelRef
    def __init__(self, words: _Optional[_Iterable[_Union[WordAlignment, _Mapping]]] = ..., score: _Optional[_Union[PairScore, _Mapping]] = ..., heatmap: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...
