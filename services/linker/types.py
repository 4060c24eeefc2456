"""The linker's domain values between the wire (convert.py) and the model (servable.py):
decoded entities and mentions, ranked candidates, and decoded graph pairs to align."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image


@dataclass(frozen=True, eq=False)
class EntityIn:
    """One decoded entity (for a knowledge base or a graph to align)."""

    id: str
    name: str = ""
    description: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    images: tuple[Image.Image, ...] = ()


@dataclass(frozen=True, eq=False)
class MentionIn:
    """One decoded mention: a sentence, the [start, end) span inside it, an optional image."""

    text: str
    span: tuple[int, int]
    image: Image.Image | None = None


@dataclass(frozen=True, eq=False)
class LinkIn:
    """One mention to link against knowledge base `kb`."""

    kb: str
    mention: MentionIn
    top_k: int


@dataclass(frozen=True)
class Ranked:
    """One candidate entity with M3EL's scores; a matcher that does not apply is None."""

    entity_id: str
    name: str
    description: str
    score: float
    text_coarse: float | None
    text_fine: float | None
    visual: float | None
    cross_modal: float | None


@dataclass(frozen=True, eq=False)
class GraphIn:
    """One decoded knowledge graph: entities in request order and (head, relation, tail)
    triples as entity indices."""

    entities: tuple[EntityIn, ...]
    triples: tuple[tuple[int, str, int], ...]

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.entities]


@dataclass(frozen=True, eq=False)
class AlignIn:
    """Two graphs and the seed pairs (source index, target index) to align them from."""

    source: GraphIn
    target: GraphIn
    seeds: tuple[tuple[int, int], ...]
    top_k: int


@dataclass(frozen=True)
class Pair:
    """One aligned pair: a source entity, a target entity and the CSLS score."""

    source_id: str
    target_id: str
    score: float
