"""Entity linking (M3EL) and multimodal entity alignment (UMAEA) models: pure torch, no I/O.

M3EL: `features` (frozen encoder features of mentions and entities) and `m3el` (the matcher).
"""

from concord.models.linking.features import (
    EntityFeatures,
    MentionFeatures,
    entity_text,
    featurize_entities,
    featurize_mentions,
    mention_text,
)
from concord.models.linking.m3el import M3EL, MATCHERS, VARIANTS, LossParts, M3ELConfig, MatchScores

__all__ = [
    "M3EL",
    "MATCHERS",
    "VARIANTS",
    "EntityFeatures",
    "LossParts",
    "M3ELConfig",
    "MatchScores",
    "MentionFeatures",
    "entity_text",
    "featurize_entities",
    "featurize_mentions",
    "mention_text",
]
