"""Model registry for Concord: MLflow runs, registered versions and aliases behind `Registry`.

`Registry.from_settings(settings)` gives the embedded sqlite store or the configured server.
"""

from __future__ import annotations

from concord.registry.client import Registry
from concord.registry.errors import InvalidModelUri, ModelNotFound, RegistryError
from concord.registry.refs import (
    MODEL_ARTIFACT_PATH,
    ModelRef,
    ModelVersionInfo,
    RegisteredModelInfo,
    parse_model_uri,
)
from concord.registry.resolve import REGISTRY_PREFIX, is_registry_uri, resolve_model
from concord.registry.tracking import DEFAULT_EXPERIMENT, Run

__all__ = [
    "DEFAULT_EXPERIMENT",
    "MODEL_ARTIFACT_PATH",
    "REGISTRY_PREFIX",
    "InvalidModelUri",
    "ModelNotFound",
    "ModelRef",
    "ModelVersionInfo",
    "RegisteredModelInfo",
    "Registry",
    "RegistryError",
    "Run",
    "is_registry_uri",
    "parse_model_uri",
    "resolve_model",
]
