from concord.proto.v1 import common_pb2 as _common_pb2
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
    __slots__ = ("pairs",)
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedCompositeFieldContainer[BiasPair]
    def __init__(self, pairs: _Optional[_Iterable[_Union[BiasPair, _Mapping]]] = ...) -> None: ...

class Cue(_message.Message):
    __slots__ = ("kind", "span", "description", "weight")
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
    kind: Cue.Kind
    span: _common_pb2.Span
    description: str
    weight: float
    def __init__(self, kind: _Optional[_Union[Cue.Kind, str]] = ..., span: _Optional[_Union[_common_pb2.Span, _Mapping]] = ..., description: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class BiasVerdict(_message.Message):
    __slots__ = ("label", "probability", "cues", "rationale", "inconsistency")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    CUES_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    INCONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    label: BiasLabel
    probability: float
    cues: _containers.RepeatedCompositeFieldContainer[Cue]
    rationale: str
    inconsistency: float
    def __init__(self, label: _Optional[_Union[BiasLabel, str]] = ..., probability: _Optional[float] = ..., cues: _Optional[_Iterable[_Union[Cue, _Mapping]]] = ..., rationale: _Optional[str] = ..., inconsistency: _Optional[float] = ...) -> None: ...

class DetectResponse(_message.Message):
    __slots__ = ("verdicts", "model")
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    verdicts: _containers.RepeatedCompositeFieldContainer[BiasVerdict]
    model: _common_pb2.ModelRef
    def __init__(self, verdicts: _Optional[_Iterable[_Union[BiasVerdict, _Mapping]]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("pair", "counterfactual_texts")
    PAIR_FIELD_NUMBER: _ClassVar[int]
    COUNTERFACTUAL_TEXTS_FIELD_NUMBER: _ClassVar[int]
    pair: BiasPair
    counterfactual_texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pair: _Optional[_Union[BiasPair, _Mapping]] = ..., counterfactual_texts: _Optional[_Iterable[str]] = ...) -> None: ...

class ProbeResponse(_message.Message):
    __slots__ = ("original", "counterfactuals", "text_reliance")
    ORIGINAL_FIELD_NUMBER: _ClassVar[int]
    COUNTERFACTUALS_FIELD_NUMBER: _ClassVar[int]
    TEXT_RELIANCE_FIELD_NUMBER: _ClassVar[int]
    original: BiasVerdict
    counterfactuals: _containers.RepeatedCompositeFieldContainer[BiasVerdict]
    text_reliance: float
    def __init__(self, original: _Optional[_Union[BiasVerdict, _Mapping]] = ..., counterfactuals: _Optional[_Iterable[_Union[BiasVerdict, _Mapping]]] = ..., text_reliance: _Optional[float] = ...) -> None: ...
