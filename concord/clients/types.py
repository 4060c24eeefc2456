"""The typed results the SDK returns (frozen dataclasses, never protos) and its inputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

# Re-exported: the SDK's users import them from here.
from concord.wire import ImageData as ImageData
from concord.wire import Modality as Modality
from concord.wire import ModelId as ModelId

if TYPE_CHECKING:
    from concord.clients.scorer import PairScore


@dataclass(frozen=True, eq=False)
class TokenVectors:
    """Token embeddings of one input: (n_tokens, dim) float32 rows; text tokens carry their
    strings and [start, end) character spans, image patch tokens carry neither."""

    vectors: np.ndarray
    tokens: tuple[str, ...] = ()
    spans: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, eq=False)
class Embedding:
    """One input's pooled embedding (dim,) and, when asked for, its token embeddings."""

    vector: np.ndarray
    tokens: TokenVectors | None = None


@dataclass(frozen=True, eq=False)
class Encoded:
    """The answer to one encode call, in request order."""

    embeddings: tuple[Embedding, ...]
    model: ModelId
    dim: int

    @property
    def matrix(self) -> np.ndarray:
        """Returns: the pooled embeddings stacked as a (n, dim) float32 array."""
        if not self.embeddings:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([e.vector for e in self.embeddings])


@dataclass(frozen=True)
class IndexItem:
    """One item to index: exactly one of `image` or `text`, plus a JSON payload.

    `id` is optional: by default the point id is a hash of the content in the collection,
    so indexing the same content twice changes nothing.
    """

    image: bytes | ImageData | None = None
    text: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    id: str = ""

    def __post_init__(self) -> None:
        if (self.image is None) == (self.text is None):
            raise ValueError("an IndexItem needs exactly one of image or text")


@dataclass(frozen=True)
class IndexResult:
    ids: tuple[str, ...]  # point ids, same order as the items
    collection: str
    model: ModelId


@dataclass(frozen=True)
class ExplainedWord:
    """One query word against a hit image: its [start, end) span in the query, the scorer's
    CLIP4DM attribution and the verdict (contradicts: flagged by the scorer; supports:
    positive attribution; neutral: neither)."""

    word: str
    span: tuple[int, int]
    attribution: float
    verdict: Literal["supports", "contradicts", "neutral"]


@dataclass(frozen=True)
class HitExplanation:
    """Why an image hit matches its text query, word by word (search with explain=True)."""

    words: tuple[ExplainedWord, ...]
    score: PairScore | None  # the scorer's alignment of (hit image, query text)
    unavailable: str = ""  # why there are no words (e.g. indexed without thumbnails)

    @property
    def supported(self) -> tuple[ExplainedWord, ...]:
        return tuple(w for w in self.words if w.verdict == "supports")

    @property
    def contradicted(self) -> tuple[ExplainedWord, ...]:
        return tuple(w for w in self.words if w.verdict == "contradicts")


@dataclass(frozen=True)
class Hit:
    id: str
    score: float  # higher is closer (cosine, or MAX_SIM after a late-interaction rerank)
    modality: Modality
    payload: Mapping[str, Any] = field(default_factory=dict)
    explanation: HitExplanation | None = None  # image hits of a search with explain=True


@dataclass(frozen=True)
class SearchResult:
    hits: tuple[Hit, ...]
    model: ModelId
    collection: str
    scorer_model: ModelId | None = None  # the scorer that explained the hits


@dataclass(frozen=True)
class CollectionSummary:
    name: str
    model: ModelId
    dim: int
    points: int
    has_tokens: bool
