"""Model registry for Concord: MLflow runs, registered versions and aliases behind `Registry`.

`Registry.from_settings(settings)` gives the embedded sqlite store or the configured server.
"""

from __future__ import annotations

from concord.registry.client import (
    DEFAULT_EXPERIMENT,
    MODEL_ARTIFACT_PATH,
    ModelRef,
    ModelVersionInfo,
    RegisteredModelInfo,
    Registry,
    Run,
    parse_model_uri,
)
from concord.registry.errors import InvalidModelUri, ModelNotFound, RegistryError

__all__ = [
    "DEFAULT_EXPERIMENT",
    "MODEL_ARTIFACT_PATH",
    "InvalidModelUri",
    "ModelNotFound",
    "ModelRef",
    "ModelVersionInfo",
    "RegisteredModelInfo",
    "Registry",
    "RegistryError",
    "Run",
    "parse_model_uri",
]
