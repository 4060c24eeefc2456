"""`Concord`, the SDK's one entry point: a connection and a typed client per service
(`.encoder`, `.retrieval`, `.scorer`, `.generator`, `.bias`, `.linker`) and their calls as its
own methods."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from concord.clients.bias import BiasClient
from concord.clients.connection import Connection, connect
from concord.clients.encoder import EncoderClient
from concord.clients.generator import GeneratorClient
from concord.clients.linker import LinkerClient
from concord.clients.retrieval import RetrievalClient
from concord.clients.scorer import ScorerClient
from concord.config import Settings

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C")


class forward(Generic[C, P, R]):
    """A `Concord` method that is the same-named method of one per-service client: reading it
    gives that client's bound method, so signature, defaults and docstring are the client's."""

    def __init__(self, client: str, method: Callable[Concatenate[C, P], R]) -> None:
        self.client = client
        self.method = method
        functools.update_wrapper(self, method)

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> forward[C, P, R]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> Callable[P, R]: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(getattr(obj, self.client), self.method.__name__)

    def __call__(self, concord: Any, *args: Any, **kwargs: Any) -> R:
        # `Concord.encode_texts(sdk, ...)`, as any unbound method can be called.
        return self.__get__(concord)(*args, **kwargs)


class Concord:
    """The typed SDK: encode, index, search, score, explain, generate and customize over gRPC;
    results are frozen dataclasses.

    Args:
        settings: where the services listen (`serving.addresses`, ports) and the bearer token.
        host: overrides the services' host (each on its own port).
        timeout: seconds per call.

    Raises (from every call): the domain error the service raised, e.g. InvalidArgument
    (with `.violations` naming fields), NotFound, FailedPrecondition, Unavailable.
    """

    encoder: EncoderClient
    retrieval: RetrievalClient
    scorer: ScorerClient
    generator: GeneratorClient
    bias: BiasClient
    linker: LinkerClient

    def __init__(
        self, settings: Settings, host: str | None = None, timeout: float | None = 60.0
    ) -> None:
        self._connections: list[Connection] = []

        def open_client(service: str, cls: Callable[..., R]) -> R:
            conn = connect(service, settings, host)
            self._connections.append(conn)
            return cls(conn.channel, conn.metadata, timeout)

        self.encoder = open_client("encoder", EncoderClient)
        self.retrieval = open_client("retrieval", RetrievalClient)
        self.scorer = open_client("scorer", ScorerClient)
        self.generator = open_client("generator", GeneratorClient)
        self.bias = open_client("bias", BiasClient)
        self.linker = open_client("linker", LinkerClient)

    encode_texts = forward("encoder", EncoderClient.encode_texts)
    encode_images = forward("encoder", EncoderClient.encode_images)
    index = forward("retrieval", RetrievalClient.index)
    search_text = forward("retrieval", RetrievalClient.search_text)
    search_image = forward("retrieval", RetrievalClient.search_image)
    score = forward("scorer", ScorerClient.score)
    explain = forward("scorer", ScorerClient.explain)
    generate = forward("generator", GeneratorClient.generate)
    customize = forward("generator", GeneratorClient.customize)
    get_job = forward("generator", GeneratorClient.get_job)
    list_concepts = forward("generator", GeneratorClient.list_concepts)
    detect_bias = forward("bias", BiasClient.detect)
    probe_text_reliance = forward("bias", BiasClient.probe)
    upsert_entities = forward("linker", LinkerClient.upsert_entities)
    delete_entities = forward("linker", LinkerClient.delete_entities)
    list_knowledge_bases = forward("linker", LinkerClient.list_knowledge_bases)
    delete_knowledge_base = forward("linker", LinkerClient.delete_knowledge_base)
    link = forward("linker", LinkerClient.link)
    align = forward("linker", LinkerClient.align)
    submit_align_job = forward("linker", LinkerClient.submit_align_job)
    get_align_job = forward("linker", LinkerClient.get_align_job)
    wait_align_job = forward("linker", LinkerClient.wait_align_job)
    align_result = forward("linker", LinkerClient.align_result)

    def close(self) -> None:
        for conn in self._connections:
            conn.close()

    def __enter__(self) -> Concord:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
