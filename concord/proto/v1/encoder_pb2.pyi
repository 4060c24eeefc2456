from concord.proto.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EncodeOptions(_message.Message):
    __slots__ = ("include_tokens", "normalize", "model")
    INCLUDE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    include_tokens: bool
    normalize: bool
    model: _common_pb2.ModelRef
    def __init__(self, include_tokens: _Optional[bool] = ..., normalize: _Optional[bool] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...

class EncodeImagesRequest(_message.Message):
    __slots__ = ("images", "options")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.Image]
    options: EncodeOptions
    def __init__(self, images: _Optional[_Iterable[_Union[_common_pb2.Image, _Mapping]]] = ..., options: _Optional[_Union[EncodeOptions, _Mapping]] = ...) -> None: ...

class EncodeTextsRequest(_message.Message):
    __slots__ = ("texts", "options")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    options: EncodeOptions
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., options: _Optional[_Union[EncodeOptions, _Mapping]] = ...) -> None: ...

class Encoding(_message.Message):
    __slots__ = ("embedding", "tokens")
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    embedding: _common_pb2.Embedding
    tokens: _common_pb2.TokenEmbeddings
    def __init__(self, embedding: _Optional[_Union[_common_pb2.Embedding, _Mapping]] = ..., tokens: _Optional[_Union[_common_pb2.TokenEmbeddings, _Mapping]] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("encodings", "model", "dim")
    ENCODINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    encodings: _containers.RepeatedCompositeFieldContainer[Encoding]
    model: _common_pb2.ModelRef
    dim: int
    def __init__(self, encodings: _Optional[_Iterable[_Union[Encoding, _Mapping]]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ..., dim: _Optional[int] = ...) -> None: ...

class EncodeStreamRequest(_message.Message):
    __slots__ = ("id", "item", "options")
    ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    item: _common_pb2.Item
    options: EncodeOptions
    def __init__(self, id: _Optional[str] = ..., item: _Optional[_Union[_common_pb2.Item, _Mapping]] = ..., options: _Optional[_Union[EncodeOptions, _Mapping]] = ...) -> None: ...

class EncodeStreamResponse(_message.Message):
    __slots__ = ("id", "encoding", "model")
    ID_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    id: str
    encoding: Encoding
    model: _common_pb2.ModelRef
    def __init__(self, id: _Optional[str] = ..., encoding: _Optional[_Union[Encoding, _Mapping]] = ..., model: _Optional[_Union[_common_pb2.ModelRef, _Mapping]] = ...) -> None: ...
