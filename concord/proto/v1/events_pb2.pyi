import datetime

from concord.proto.v1 import common_pb2 as _common_pb2
from concord.proto.v1 import generator_pb2 as _generator_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IngestRequest(_message.Message):
    __slots__ = ("id", "collection", "item", "payload", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    collection: str
    item: _common_pb2.Item
    payload: _common_pb2.Payload
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., collection: _Optional[str] = ..., item: _Optional[_Union[_common_pb2.Item, _Mapping]] = ..., payload: _Optional[_Union[_common_pb2.Payload, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Indexed(_message.Message):
    __slots__ = ("id", "collection", "modality", "model", "indexed_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INDEXED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    collection: str
    modality: _common_pb2.Modality
    model: _common_pb2.ModelRef
    indexed_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., collection: _Optional[str] = ..., modality: _Optional[_Union[_common_pb2.Modality, str]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., indexed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GenerationJob(_message.Message):
    __slots__ = ("job_id", "generate", "customize", "created_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATE_FIELD_NUMBER: _ClassVar[int]
    CUSTOMIZE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    generate: GenerationSpec
    customize: CustomizationSpec
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., generate: _Optional[_Union[GenerationSpec, _Mapping]] = ..., customize: _Optional[_Union[CustomizationSpec, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GenerationSpec(_message.Message):
    __slots__ = ("prompts", "seed", "steps", "guidance_scale", "with_layout", "concept", "aligned")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    WITH_LAYOUT_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_FIELD_NUMBER: _ClassVar[int]
    ALIGNED_FIELD_NUMBER: _ClassVar[int]
    prompts: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    steps: int
    guidance_scale: float
    with_layout: bool
    concept: str
    aligned: _generator_pb2.AlignmentPolicy
    def __init__(self, prompts: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., with_layout: _Optional[bool] = ..., concept: _Optional[str] = ..., aligned: _Optional[_Union[_generator_pb2.AlignmentPolicy, _Mapping]] = ...) -> None: ...

class CustomizationSpec(_message.Message):
    __slots__ = ("concept", "references", "class_word", "steps")
    CONCEPT_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    CLASS_WORD_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    concept: str
    references: _containers.RepeatedCompositeFieldContainer[_common_pb2.Image]
    class_word: str
    steps: int
    def __init__(self, concept: _Optional[str] = ..., references: _Optional[_Iterable[_Union[_common_pb2.Image, _Mapping]]] = ..., class_word: _Optional[str] = ..., steps: _Optional[int] = ...) -> None: ...

class Generated(_message.Message):
    __slots__ = ("job_id", "prompt_index", "prompt", "image", "layout", "seed", "model", "generated_at", "tries", "aligned_passed")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_INDEX_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GENERATED_AT_FIELD_NUMBER: _ClassVar[int]
    TRIES_FIELD_NUMBER: _ClassVar[int]
    ALIGNED_PASSED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    prompt_index: int
    prompt: str
    image: _common_pb2.Image
    layout: _common_pb2.Tensor
    seed: int
    model: _common_pb2.ModelRef
    generated_at: _timestamp_pb2.Timestamp
    tries: _containers.RepeatedCompositeFieldContainer[_generator_pb2.AlignmentTry]
    aligned_passed: bool
    def __init__(self, job_id: _Optional[str] = ..., prompt_index: _Optional[int] = ..., prompt: _Optional[str] = ..., image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., layout: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., seed: _Optional[int] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., generated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tries: _Optional[_Iterable[_Union[_generator_pb2.AlignmentTry, _Mapping]]] = ..., aligned_passed: _Optional[bool] = ...) -> None: ...

class AuditResult(_message.Message):
    __slots__ = ("subject_id", "text", "alignment_score", "aligned_probability", "flagged_words", "bias_label", "model", "audited_at")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ALIGNMENT_SCORE_FIELD_NUMBER: _ClassVar[int]
    ALIGNED_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_WORDS_FIELD_NUMBER: _ClassVar[int]
    BIAS_LABEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    AUDITED_AT_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    text: str
    alignment_score: float
    aligned_probability: float
    flagged_words: _containers.RepeatedCompositeFieldContainer[FlaggedWord]
    bias_label: str
    model: _common_pb2.ModelRef
    audited_at: _timestamp_pb2.Timestamp
    def __init__(self, subject_id: _Optional[str] = ..., text: _Optional[str] = ..., alignment_score: _Optional[float] = ..., aligned_probability: _Optional[float] = ..., flagged_words: _Optional[_Iterable[_Union[FlaggedWord, _Mapping]]] = ..., bias_label: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., audited_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FlaggedWord(_message.Message):
    __slots__ = ("word", "span", "attribution")
    WORD_FIELD_NUMBER: _ClassVar[int]
    SPAN_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    word: str
    span: _common_pb2.Span
    attribution: float
    def __init__(self, word: _Optional[str] = ..., span: _Optional[_Union[_common_pb2.Span, _Mapping]] = ..., attribution: _Optional[float] = ...) -> None: ...
