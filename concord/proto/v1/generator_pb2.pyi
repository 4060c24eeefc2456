from concord.proto.v1 import common_pb2 as _common_pb2
from concord.proto.v1 import scorer_pb2 as _scorer_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Sampler(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAMPLER_UNSPECIFIED: _ClassVar[Sampler]
    SAMPLER_DDPM: _ClassVar[Sampler]
    SAMPLER_DDIM: _ClassVar[Sampler]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
SAMPLER_UNSPECIFIED: Sampler
SAMPLER_DDPM: Sampler
SAMPLER_DDIM: Sampler
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState

class ConceptGuidance(_message.Message):
    __slots__ = ("concept", "unwanted", "alpha", "directions")
    CONCEPT_FIELD_NUMBER: _ClassVar[int]
    UNWANTED_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    DIRECTIONS_FIELD_NUMBER: _ClassVar[int]
    concept: str
    unwanted: _containers.RepeatedScalarFieldContainer[str]
    alpha: float
    directions: int
    def __init__(self, concept: _Optional[str] = ..., unwanted: _Optional[_Iterable[str]] = ..., alpha: _Optional[float] = ..., directions: _Optional[int] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("prompts", "seed", "steps", "guidance_scale", "sampler", "width", "height", "with_layout", "preview_every", "concept", "model")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WITH_LAYOUT_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_EVERY_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    prompts: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    steps: int
    guidance_scale: float
    sampler: Sampler
    width: int
    height: int
    with_layout: bool
    preview_every: int
    concept: ConceptGuidance
    model: _common_pb2.ModelRef
    def __init__(self, prompts: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., sampler: _Optional[_Union[Sampler, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., with_layout: _Optional[bool] = ..., preview_every: _Optional[int] = ..., concept: _Optional[_Union[ConceptGuidance, _Mapping]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("prompt_index", "step", "total_steps", "preview")
    PROMPT_INDEX_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    prompt_index: int
    step: int
    total_steps: int
    preview: _common_pb2.Image
    def __init__(self, prompt_index: _Optional[int] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., preview: _Optional[_Union[_common_pb2.Image, _Mapping]] = ...) -> None: ...

class Layout(_message.Message):
    __slots__ = ("class_map", "legend")
    class LegendEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: str
        def __init__(self, key: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...
    CLASS_MAP_FIELD_NUMBER: _ClassVar[int]
    LEGEND_FIELD_NUMBER: _ClassVar[int]
    class_map: _common_pb2.Tensor
    legend: _containers.ScalarMap[int, str]
    def __init__(self, class_map: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., legend: _Optional[_Mapping[int, str]] = ...) -> None: ...

class GeneratedImage(_message.Message):
    __slots__ = ("prompt_index", "image", "layout", "seed", "model")
    PROMPT_INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    prompt_index: int
    image: _common_pb2.Image
    layout: Layout
    seed: int
    model: _common_pb2.ModelRef
    def __init__(self, prompt_index: _Optional[int] = ..., image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., layout: _Optional[_Union[Layout, _Mapping]] = ..., seed: _Optional[int] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class GenerateEvent(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    result: GeneratedImage
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[GeneratedImage, _Mapping]] = ...) -> None: ...

class CustomizeRequest(_message.Message):
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

class Job(_message.Message):
    __slots__ = ("id", "state", "message", "progress", "concept")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CONCEPT_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: JobState
    message: str
    progress: float
    concept: str
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., message: _Optional[str] = ..., progress: _Optional[float] = ..., concept: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListConceptsRequest(_message.Message):
    __slots__ = ("page",)
    PAGE_FIELD_NUMBER: _ClassVar[int]
    page: _common_pb2.PageRequest
    def __init__(self, page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class Concept(_message.Message):
    __slots__ = ("name", "class_word", "model", "reference_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CLASS_WORD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    class_word: str
    model: _common_pb2.ModelRef
    reference_count: int
    def __init__(self, name: _Optional[str] = ..., class_word: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., reference_count: _Optional[int] = ...) -> None: ...

class ListConceptsResponse(_message.Message):
    __slots__ = ("concepts", "page")
    CONCEPTS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    concepts: _containers.RepeatedCompositeFieldContainer[Concept]
    page: _common_pb2.PageResponse
    def __init__(self, concepts: _Optional[_Iterable[_Union[Concept, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class AlignmentPolicy(_message.Message):
    __slots__ = ("max_tries", "min_score", "word_threshold", "guidance_step", "no_emphasis")
    MAX_TRIES_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    WORD_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_STEP_FIELD_NUMBER: _ClassVar[int]
    NO_EMPHASIS_FIELD_NUMBER: _ClassVar[int]
    max_tries: int
    min_score: float
    word_threshold: float
    guidance_step: float
    no_emphasis: bool
    def __init__(self, max_tries: _Optional[int] = ..., min_score: _Optional[float] = ..., word_threshold: _Optional[float] = ..., guidance_step: _Optional[float] = ..., no_emphasis: _Optional[bool] = ...) -> None: ...

class GenerateAlignedRequest(_message.Message):
    __slots__ = ("prompt", "seed", "steps", "guidance_scale", "sampler", "with_layout", "policy", "model")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_FIELD_NUMBER: _ClassVar[int]
    WITH_LAYOUT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    seed: int
    steps: int
    guidance_scale: float
    sampler: Sampler
    with_layout: bool
    policy: AlignmentPolicy
    model: _common_pb2.ModelRef
    def __init__(self, prompt: _Optional[str] = ..., seed: _Optional[int] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., sampler: _Optional[_Union[Sampler, str]] = ..., with_layout: _Optional[bool] = ..., policy: _Optional[_Union[AlignmentPolicy, _Mapping]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class AlignmentTry(_message.Message):
    __slots__ = ("index", "seed", "guidance_scale", "prompt", "score", "flagged", "passed")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    index: int
    seed: int
    guidance_scale: float
    prompt: str
    score: _scorer_pb2.PairScore
    flagged: _containers.RepeatedCompositeFieldContainer[_scorer_pb2.WordAlignment]
    passed: bool
    def __init__(self, index: _Optional[int] = ..., seed: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., prompt: _Optional[str] = ..., score: _Optional[_Union[_scorer_pb2.PairScore, _Mapping]] = ..., flagged: _Optional[_Iterable[_Union[_scorer_pb2.WordAlignment, _Mapping]]] = ..., passed: _Optional[bool] = ...) -> None: ...

class GenerateAlignedResponse(_message.Message):
    __slots__ = ("best", "best_try", "passed", "tries", "min_score", "scorer_model")
    BEST_FIELD_NUMBER: _ClassVar[int]
    BEST_TRY_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    TRIES_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    SCORER_MODEL_FIELD_NUMBER: _ClassVar[int]
    best: GeneratedImage
    best_try: int
    passed: bool
    tries: _containers.RepeatedCompositeFieldContainer[AlignmentTry]
    min_score: float
    scorer_model: _common_pb2.ModelRef
    def __init__(self, best: _Optional[_Union[GeneratedImage, _Mapping]] = ..., best_try: _Optional[int] = ..., passed: _Optional[bool] = ..., tries: _Optional[_Iterable[_Union[AlignmentTry, _Mapping]]] = ..., min_score: _Optional[float] = ..., scorer_model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...
