"""Typed errors of the model registry, built on `concord.errors` so the serving core maps
them in one place: `ModelNotFound` -> FAILED_PRECONDITION, a bad URI -> INVALID_ARGUMENT."""

from __future__ import annotations

from concord import errors


class RegistryError(errors.ConcordError):
    """Base of every error raised by `concord.registry`."""


class ModelNotFound(RegistryError, errors.FailedPrecondition, LookupError):
    """The registered model, version or alias does not exist."""


class InvalidModelUri(RegistryError, ValueError):
    """A model reference is not `models:/NAME/VERSION` or `models:/NAME@ALIAS`."""

    status = "INVALID_ARGUMENT"
