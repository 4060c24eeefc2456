"""Typed gRPC clients of Concord services: result dataclasses, proto converters, and one
client class per service (sync for product teams, async for services calling services)."""

from concord.clients.generator import (
    Concept,
    GeneratedImage,
    GenerationCancelled,
    GeneratorClient,
    Job,
    Progress,
)
from concord.clients.scorer import (
    Misalignment,
    PairScore,
    ScorePair,
    ScorerClient,
    Scores,
    WordAlignment,
)

__all__ = [
    "Concept",
    "GeneratedImage",
    "GenerationCancelled",
    "GeneratorClient",
    "Job",
    "Misalignment",
    "PairScore",
    "Progress",
    "ScorePair",
    "ScorerClient",
    "Scores",
    "WordAlignment",
]
