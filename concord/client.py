"""Typed Python SDK for product teams: channels with auth, health, reflection, service info,
and `Concord`, the typed calls (encode, index, search) returning frozen dataclasses.

Every call goes over real gRPC; the per-service clients live in `concord.clients`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from concord.clients.convert import FilterSpec
from concord.clients.encoder import EncoderClient, ImageInput
from concord.clients.generator import (
    Concept,
    GeneratedImage,
    GeneratorClient,
    Job,
    Progress,
    Sampler,
)
from concord.clients.retrieval import RetrievalClient, Target
from concord.clients.scorer import Misalignment, ScorePair, ScorerClient, Scores
from concord.clients.types import (
    CollectionSummary,
    Embedding,
    Encoded,
    Hit,
    ImageData,
    IndexItem,
    IndexResult,
    ModelId,
    SearchResult,
    TokenVectors,
)
from concord.config import SERVICE_NAMES, Settings
from concord.proto.v1 import common_pb2

__all__ = [
    "CollectionSummary",
    "Concept",
    "Concord",
    "Connection",
    "Embedding",
    "Encoded",
    "EncoderClient",
    "GeneratedImage",
    "GeneratorClient",
    "Hit",
    "ImageData",
    "IndexItem",
    "IndexResult",
    "Job",
    "ModelId",
    "Progress",
    "RetrievalClient",
    "SearchResult",
    "ServiceStatus",
    "TokenVectors",
    "connect",
    "status_of",
]

STUBS = {name: f"{name.capitalize()}ServiceStub" for name in SERVICE_NAMES}


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    address: str
    health: str  # SERVING, NOT_SERVING, UNKNOWN or UNREACHABLE
    models: tuple[str, ...] = ()  # "name@version"
    reflected: tuple[str, ...] = ()  # services the port lists through reflection
    error: str = ""
    not_ready: str = ""  # why GetInfo says the service is not ready ("" when ready)


class Connection:
    """A channel to one Concord service, carrying the bearer token when one is configured.

    Args:
        address: host:port.
        token: bearer token (None: no auth metadata).
        max_message_bytes: the largest message either side may send.
    """

    def __init__(
        self, address: str, token: str | None = None, max_message_bytes: int = 64 * 1024 * 1024
    ) -> None:
        self.address = address
        self.channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )

    def stub(self, service: str) -> object:
        """The generated stub of a service ("encoder", ...) on this channel."""
        from importlib import import_module

        module = import_module(f"concord.proto.v1.{service}_pb2_grpc")
        return getattr(module, STUBS[service])(self.channel)

    def health(self, service: str = "", timeout: float = 2.0) -> str:
        response = health_pb2_grpc.HealthStub(self.channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def reflected_services(self, timeout: float = 2.0) -> list[str]:
        stub = reflection_pb2_grpc.ServerReflectionStub(self.channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = stub.ServerReflectionInfo(iter([request]), timeout=timeout)
        return sorted(s.name for r in responses for s in r.list_services_response.service)

    def info(self, service: str, timeout: float = 5.0) -> common_pb2.ServiceInfo:
        stub = self.stub(service)
        return stub.GetInfo(common_pb2.GetInfoRequest(), timeout=timeout, metadata=self.metadata)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(service: str, settings: Settings, host: str | None = None) -> Connection:
    """Open a connection to a service at the address the settings give it
    (`serving.addresses`), or on `host` at the service's port."""
    token = settings.serving.auth_token
    serving = settings.serving
    address = f"{host}:{serving.port_for(service)}" if host else serving.address_for(service)
    return Connection(
        address, token.get_secret_value() if token else None, settings.serving.max_message_bytes
    )


def status_of(service: str, settings: Settings, host: str | None = None) -> ServiceStatus:
    """Health, served models and reflected services of one service; never raises."""
    with connect(service, settings, host) as conn:
        try:
            health = conn.health()
            info = conn.info(service)
            reflected = conn.reflected_services()
        except grpc.RpcError as err:
            health = "UNREACHABLE" if err.code() == grpc.StatusCode.UNAVAILABLE else "UNKNOWN"
            return ServiceStatus(service, conn.address, health, error=err.details() or "")
        models = tuple(f"{m.name}@{m.version}" for m in info.models)
        not_ready = "" if info.ready else (info.not_ready_reason or "not ready")
        return ServiceStatus(service, conn.address, health, models, tuple(reflected), "", not_ready)


class Concord:
    """The typed SDK: encode, index and search over gRPC; results are frozen dataclasses.

    Args:
        settings: where the services listen (`serving.host`, ports) and the bearer token.
        host: overrides `settings.serving.host`.
        timeout: seconds per call.

    Raises (from every call): the domain error the service raised, e.g. InvalidArgument
    (with `.violations` naming fields), NotFound, FailedPrecondition, Unavailable.
    """

    def __init__(
        self, settings: Settings, host: str | None = None, timeout: float | None = 60.0
    ) -> None:
        self._encoder_conn = connect("encoder", settings, host)
        self._retrieval_conn = connect("retrieval", settings, host)
        self.encoder = EncoderClient(
            self._encoder_conn.channel, self._encoder_conn.metadata, timeout
        )
        self.retrieval = RetrievalClient(
            self._retrieval_conn.channel, self._retrieval_conn.metadata, timeout
        )
        self._generator_conn = connect("generator", settings, host)
        self.generator = GeneratorClient(
            self._generator_conn.channel, self._generator_conn.metadata, timeout
        )
        self._scorer_conn = connect("scorer", settings, host)
        self.scorer = ScorerClient(self._scorer_conn.channel, self._scorer_conn.metadata, timeout)

    def encode_texts(
        self, texts: Sequence[str], *, include_tokens: bool = False, normalize: bool = True
    ) -> Encoded:
        """Embed texts; see `EncoderClient.encode_texts`."""
        return self.encoder.encode_texts(texts, include_tokens=include_tokens, normalize=normalize)

    def encode_images(
        self, images: Sequence[ImageInput], *, include_tokens: bool = False, normalize: bool = True
    ) -> Encoded:
        """Embed images (bytes, ImageData, PIL images or paths); see `EncoderClient`."""
        return self.encoder.encode_images(
            images, include_tokens=include_tokens, normalize=normalize
        )

    def index(
        self, items: Sequence[IndexItem], *, collection: str = "", store_tokens: bool = False
    ) -> IndexResult:
        """Index images/texts with payloads; see `RetrievalClient.index`."""
        return self.retrieval.index(items, collection=collection, store_tokens=store_tokens)

    def search_text(
        self,
        text: str,
        *,
        collection: str = "",
        top_k: int = 10,
        target: Target = "any",
        filter: FilterSpec | None = None,
        rerank: bool = False,
        exact: bool = False,
    ) -> SearchResult:
        """Search by text (text->image with target="image"); see `RetrievalClient.search`."""
        return self.retrieval.search_text(
            text,
            collection=collection,
            top_k=top_k,
            target=target,
            filter=filter,
            rerank=rerank,
            exact=exact,
        )

    def search_image(
        self,
        image: ImageInput,
        *,
        collection: str = "",
        top_k: int = 10,
        target: Target = "any",
        filter: FilterSpec | None = None,
        rerank: bool = False,
        exact: bool = False,
    ) -> SearchResult:
        """Search by image (image->image or image->text); see `RetrievalClient.search`."""
        return self.retrieval.search_image(
            image,
            collection=collection,
            top_k=top_k,
            target=target,
            filter=filter,
            rerank=rerank,
            exact=exact,
        )

    def score(self, pairs: Sequence[ScorePair | tuple[ImageInput, str]]) -> Scores:
        """Calibrated image-text alignment of pairs; see `ScorerClient.score`."""
        return self.scorer.score(pairs)

    def explain(
        self, image: ImageInput, text: str, *, include_heatmap: bool = False, threshold: float = 0.0
    ) -> Misalignment:
        """Which words of `text` the image contradicts; see `ScorerClient.explain`."""
        return self.scorer.explain(
            image, text, include_heatmap=include_heatmap, threshold=threshold
        )

    def generate(
        self,
        prompts: Sequence[str],
        *,
        seed: int = 0,
        steps: int = 0,
        guidance_scale: float = 0.0,
        sampler: Sampler | None = None,
        with_layout: bool = True,
        concept: str = "",
        unwanted: Sequence[str] = (),
        alpha: float = 0.0,
        directions: int = 0,
        preview_every: int = 0,
        on_progress: Callable[[Progress], bool | None] | None = None,
    ) -> list[GeneratedImage]:
        """Generate an image + layout per prompt; see `GeneratorClient.generate`."""
        return self.generator.generate(
            prompts,
            seed=seed,
            steps=steps,
            guidance_scale=guidance_scale,
            sampler=sampler,
            with_layout=with_layout,
            concept=concept,
            unwanted=unwanted,
            alpha=alpha,
            directions=directions,
            preview_every=preview_every,
            on_progress=on_progress,
        )

    def customize(
        self,
        concept: str,
        references: Sequence[ImageInput],
        *,
        class_word: str = "",
        steps: int = 0,
    ) -> Job:
        """Start a concept customization job; see `GeneratorClient.customize`."""
        return self.generator.customize(concept, references, class_word=class_word, steps=steps)

    def get_job(self, job_id: str) -> Job:
        """A generator job's state; `self.generator.wait_job` polls until it ends."""
        return self.generator.get_job(job_id)

    def list_concepts(self) -> list[Concept]:
        """Every registered concept; see `GeneratorClient.list_concepts`."""
        return self.generator.list_concepts()

    def close(self) -> None:
        self._encoder_conn.close()
        self._generator_conn.close()
        self._retrieval_conn.close()
        self._scorer_conn.close()

    def __enter__(self) -> Concord:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
