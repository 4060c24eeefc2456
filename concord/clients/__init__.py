"""Concord's Python SDK: `Concord` (one entry point, `concord.clients.facade`), connections and
status (`connection`), one typed client per service (sync for product teams, async for
services calling services), the result dataclasses (`types`) and their proto converters."""

from concord.clients.bias import BiasClient, BiasVerdict, Detection, TextReliance
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
from concord.clients.linker import (
    AlignedPair,
    AlignJob,
    Candidate,
    Entity,
    Graph,
    KnowledgeBase,
    LinkerClient,
    Links,
    Mention,
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
    ExplainedWord,
    Hit,
    HitExplanation,
    ImageData,
    IndexItem,
    IndexResult,
    ModelId,
    SearchResult,
    TokenVectors,
)

__all__ = [
    "AlignJob",
    "AlignedPair",
    "BiasClient",
    "BiasVerdict",
    "Candidate",
    "CollectionSummary",
    "Concept",
    "Concord",
    "Connection",
    "Detection",
    "Embedding",
    "Encoded",
    "EncoderClient",
    "Entity",
    "ExplainedWord",
    "GeneratedImage",
    "GenerationCancelled",
    "GeneratorClient",
    "Graph",
    "Hit",
    "HitExplanation",
    "ImageData",
    "IndexItem",
    "IndexResult",
    "Job",
    "KnowledgeBase",
    "LinkerClient",
    "Links",
    "Mention",
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
    "TextReliance",
    "TokenVectors",
    "WordAlignment",
    "connect",
    "status_of",
]
