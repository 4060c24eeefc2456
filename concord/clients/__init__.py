"""Concord's Python SDK: `Concord` (one entry point, `concord.clients.facade`), connections and
status (`connection`), one typed client per service (sync for product teams, async for
services calling services), the result dataclasses (`types`) and their proto converters."""

from concord.clients.connection import Connection, ServiceStatus, connect, status_of
from concord.clients.encoder import EncoderClient
from concord.clients.facade import Concord
from concord.clients.generator import (
    Concept,
    GeneratedImage,
    GenerationCancelled,
    GeneratorClient,
    Job,
    Progress,
)
from concord.clients.retrieval import RetrievalClient
from concord.clients.scorer import (
    Misalignment,
    PairScore,
    ScorePair,
    ScorerClient,
    Scores,
    WordAlignment,
)
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

__all__ = [
    "CollectionSummary",
    "Concept",
    "Concord",
    "Connection",
    "Embedding",
    "Encoded",
    "EncoderClient",
    "GeneratedImage",
    "GenerationCancelled",
    "GeneratorClient",
    "Hit",
    "ImageData",
    "IndexItem",
    "IndexResult",
    "Job",
    "Misalignment",
    "ModelId",
    "PairScore",
    "Progress",
    "RetrievalClient",
    "ScorePair",
    "ScorerClient",
    "Scores",
    "SearchResult",
    "ServiceStatus",
    "TokenVectors",
    "WordAlignment",
    "connect",
    "status_of",
]
