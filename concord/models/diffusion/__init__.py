"""Concord's text-to-image generator (issue 7): a U-Net diffusion model with cross-attention on
MiniLM token states, GCDP joint image + layout generation and DECOR/LoRA customization.
Pure torch: no I/O here (checkpoints live in concord/checkpoints/generator.py)."""

from concord.models.diffusion.config import GeneratorConfig, load_preset
from concord.models.diffusion.pipeline import (
    ConceptWeights,
    GenerationCancelled,
    Sample,
    TextToImage,
    finetune_concept,
)

__all__ = [
    "ConceptWeights",
    "GenerationCancelled",
    "GeneratorConfig",
    "Sample",
    "TextToImage",
    "finetune_concept",
    "load_preset",
]
