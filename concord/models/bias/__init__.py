"""The bias detector's models (ViLBias, method card 5; pure torch + peft, no I/O).

- `classifier`: `BiasConfig`, `BiasClassifier` (MiniLM frozen / LoRA / full, the encoder's image
  tower, concat or align fusion, text-only and image-only baselines).
- `calibration`: temperature-scaled P(biased), `fit_temperature`, ECE, and the encoder-cosine
  -> P(inconsistent) map.
- `cues`: occlusion attributions (words, image regions), cues and the rationale.
- `detector`: `BiasDetector.detect` / `.probe`, what the service calls; `text_reliance`.
Package files (bias.json + bias.pt) are read and written by `concord.checkpoints.bias`.
"""

from concord.models.bias.calibration import (
    InconsistencyCalibration,
    biased_probability,
    expected_calibration_error,
    fit_temperature,
)
from concord.models.bias.classifier import BiasClassifier, BiasConfig
from concord.models.bias.cues import (
    Cue,
    RegionAttribution,
    WordAttribution,
    linguistic_cues,
    occlusion_boxes,
    rationale,
    region_attributions,
    visual_cue,
    word_attributions,
)
from concord.models.bias.detector import BiasDetector, Probe, Verdict, text_reliance

__all__ = [
    "BiasClassifier",
    "BiasConfig",
    "BiasDetector",
    "Cue",
    "InconsistencyCalibration",
    "Probe",
    "RegionAttribution",
    "Verdict",
    "WordAttribution",
    "biased_probability",
    "expected_calibration_error",
    "fit_temperature",
    "linguistic_cues",
    "occlusion_boxes",
    "rationale",
    "region_attributions",
    "text_reliance",
    "visual_cue",
    "word_attributions",
]
