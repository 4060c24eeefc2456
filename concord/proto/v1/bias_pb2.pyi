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

class BiasLabel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BIAS_LABEL_UNSPECIFIED: _ClassVar[BiasLabel]
    BIAS_LABEL_NEUTRAL: _ClassVar[BiasLabel]
    BIAS_LABEL_BIASED: _ClassVar[BiasLabel]
BIAS_LABEL_UNSPECIFIED: BiasLabel
BIAS_LABEL_NEUTRAL: BiasLabel
BIAS_LABEL_BIASED: BiasLabel

class BiasPair(_message.Message):
    __slots__ = ("image", "text")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.Image
    text: str
    def __init__(self, image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., text: _Optional[str] = ...) -> None: ...

class DetectRequest(_message.Message):
    __slots__ = ("pairs", "model", "labels_only")
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LABELS_ONLY_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedCompositeFieldContainer[BiasPair]
    model: _common_pb2.ModelRef
    labels_only: bool
    def __init__(self, pairs: _Optional[_Iterable[_Union[BiasPair, _Mapping]]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., labels_only: _Optional[bool] = ...) -> None: ...

class Region(_message.Message):
    __slots__ = ("x0", "y0", "x1", "y1")
    X0_FIELD_NUMBER: _ClassVar[int]
    Y0_FIELD_NUMBER: _ClassVar[int]
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    x0: float
    y0: float
    x1: float
    y1: float
    def __init__(self, x0: _Optional[float] = ..., y0: _Optional[float] = ..., x1: _Optional[float] = ..., y1: _Optional[float] = ...) -> None: ...

class Cue(_message.Message):
    __slots__ = ("kind", "span", "description", "weight", "region", "text")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Cue.Kind]
        KIND_LINGUISTIC: _ClassVar[Cue.Kind]
        KIND_VISUAL: _ClassVar[Cue.Kind]
        KIND_INCONSISTENCY: _ClassVar[Cue.Kind]
    KIND_UNSPECIFIED: Cue.Kind
    KIND_LINGUISTIC: Cue.Kind
    KIND_VISUAL: Cue.Kind
    KIND_INCONSISTENCY: Cue.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    SPAN_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    kind: Cue.Kind
    span: _common_pb2.Span
    description: str
    weight: float
    region: Region
    text: str
    def __init__(self, kind: _Optional[_Union[Cue.Kind, str]] = ..., span: _Optional[_Union[_common_pb2.Span, _Mapping]] = ..., description: _Optional[str] = ..., weight: _Optional[float] = ..., region: _Optional[_Union[Region, _Mapping]] = ..., text: _Optional[str] = ...) -> None: ...

class BiasVerdict(_message.Message):
    __slots__ = ("label", "probability", "cues", "rationale", "inconsistency", "threshold")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    CUES_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    INCONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    label: BiasLabel
    probability: float
    cues: _containers.RepeatedCompositeFieldContainer[Cue]
    rationale: str
    inconsistency: float
    threshold: float
    def __init__(self, label: _Optional[_Union[BiasLabel, str]] = ..., probability: _Optional[float] = ..., cues: _Optional[_Iterable[_Union[Cue, _Mapping]]] = ..., rationale: _Optional[str] = ..., inconsistency: _Optional[float] = ..., threshold: _Optional[float] = ...) -> None: ...

class DetectResponse(_message.Message):
    __slots__ = ("verdicts", "model")
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    verdicts: _containers.RepeatedCompositeFieldContainer[BiasVerdict]
    model: _common_pb2.ModelRef
    def __init__(self, verdicts: _Optional[_Iterable[_Union[BiasVerdict, _Mapping]]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("pair", "counterfactual_texts", "model")
    PAIR_FIELD_NUMBER: _ClassVar[int]
    COUNTERFACTUAL_TEXTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    pair: BiasPair
    counterfactual_texts: _containers.RepeatedScalarFieldContainer[str]
    model: _common_pb2.ModelRef
    def __init__(self, pair: _Optional[_Union[BiasPair, _Mapping]] = ..., counterfactual_texts: _Optional[_Iterable[str]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class ProbeResponse(_message.Message):
    __slots__ = ("original", "counterfactuals", "text_reliance", "model", "text_effect", "image_effect", "flip_rate")
    ORIGINAL_FIELD_NUMBER: _ClassVar[int]
    COUNTERFACTUALS_FIELD_NUMBER: _ClassVar[int]
    TEXT_RELIANCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_EFFECT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_EFFECT_FIELD_NUMBER: _ClassVar[int]
    FLIP_RATE_FIELD_NUMBER: _ClassVar[int]
    original: BiasVerdict
    counterfactuals: _containers.RepeatedCompositeFieldContainer[BiasVerdict]
    text_reliance: float
    model: _common_pb2.ModelRef
    text_effect: float
    image_effect: float
    flip_rate: float
    def __init__(self, original: _Optional[_Union[BiasVerdict, _Mapping]] = ..., counterfactuals: _Optional[_Iterable[_Union[BiasVerdict, _Mapping]]] = ..., text_reliance: _Optional[float] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., text_effect: _Optional[float] = ..., image_effect: _Optional[float] = ..., flip_rate: _Optional[float] = ...) -> None: ...

class BiasRequestEvent(_message.Message):
    __slots__ = ("id", "pair", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    pair: BiasPair
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., pair: _Optional[_Union[BiasPair, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BiasVerdictEvent(_message.Message):
    __slots__ = ("subject_id", "verdict", "model", "checked_at", "text", "source", "content_hash")
    class Source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SOURCE_UNSPECIFIED: _ClassVar[BiasVerdictEvent.Source]
        SOURCE_GENERATED: _ClassVar[BiasVerdictEvent.Source]
        SOURCE_REQUEST: _ClassVar[BiasVerdictEvent.Source]
    SOURCE_UNSPECIFIED: BiasVerdictEvent.Source
    SOURCE_GENERATED: BiasVerdictEvent.Source
    SOURCE_REQUEST: BiasVerdictEvent.Source
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHECKED_AT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    verdict: BiasVerdict
    model: _common_pb2.ModelRef
    checked_at: _timestamp_pb2.Timestamp
    text: str
    source: BiasVerdictEvent.Source
    content_hash: str
    def __init__(self, subject_id: _Optional[str] = ..., verdict: _Optional[_Union[BiasVerdict, _Mapping]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., checked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., text: _Optional[str] = ..., source: _Optional[_Union[BiasVerdictEvent.Source, str]] = ..., content_hash: _Optional[str] = ...) -> None: ...
