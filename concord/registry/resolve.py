"""Resolves the model URI a setting names to a model id and a local directory: a registry URI
to its registered name and version and the downloaded copy, a local directory to its sanitized
name and `local-<8 hex>` of the files that make the model. Every service and job resolves here."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from concord.errors import FailedPrecondition
from concord.wire import ModelId

if TYPE_CHECKING:
    from concord.registry.client import Registry

REGISTRY_PREFIX = "models:/"
LOCAL_PREFIX = "local-"  # the version of a model read from a local directory
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")  # characters a local model name may not carry


def is_registry_uri(uri: str) -> bool:
    """Returns: whether `uri` names a registered model (`models:/...`) rather than a path."""
    return uri.startswith(REGISTRY_PREFIX)


def resolve_model(
    uri: str,
    registry: Callable[[], Registry],
    *,
    kind: str = "model",
    files: Callable[[Path], Sequence[Path]] | None = None,
) -> tuple[ModelId, Path]:
    """Find the model `uri` names and what to call it in responses and collection names.

    Args:
        uri: `models:/NAME@ALIAS`, `models:/NAME/VERSION`, or a local model directory.
        registry: returns the platform registry (called only for a registry URI).
        kind: what the model is ("encoder"): starts error messages and names a local
            directory whose name has no safe character.
        files: for a local directory, the files whose bytes are the model, in a fixed order;
            it may raise FailedPrecondition when the directory is not this kind of model.
            None: every file below the directory, ordered by path.
    Returns:
        The id and the directory holding the model's files. A registry model is called by its
        registered name and version (the copy is downloaded once, into the registry's cache); a
        local directory by its name and `local-<8 hex of the files' sha256>`, so different
        weights never share an id.
    Raises:
        FailedPrecondition: a local path that is not a directory (or that `files` refuses).
        InvalidModelUri, ModelNotFound: from the registry.
    """
    if is_registry_uri(uri):
        info, directory = registry().download(uri)
        return ModelId(info.name, str(info.version)), Path(directory)
    directory = Path(uri).expanduser()
    if files is None:
        if not directory.is_dir():
            raise FailedPrecondition(f"{kind} model {uri!r} is not a directory")
        identity: Sequence[Path] = sorted(p for p in directory.rglob("*") if p.is_file())
    else:
        identity = files(directory)
    name = _UNSAFE.sub("-", directory.resolve().name).strip("-") or kind
    return ModelId(name, f"{LOCAL_PREFIX}{_digest(identity)}"), directory


def _digest(files: Sequence[Path]) -> str:
    # The one digest of model files (the encoder's ids, and so its collection names, use it
    # too); concord.checkpoints imports torch, which a registry URI never needs.
    from concord.checkpoints import weights_digest

    return weights_digest(files)
