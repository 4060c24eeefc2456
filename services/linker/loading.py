"""Resolves the linker package the service serves (settings `linker.model`): a registered
package (`models:/NAME@ALIAS|/VERSION`) or a local directory holding `linker.json` + `m3el.pt`
(concord.checkpoints.linker), whose linker.json names the encoder it featurizes with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from concord.checkpoints import LoadedModel, load_model
from concord.checkpoints.linker import META_FILE, WEIGHTS_FILE, encoder_uri, load_linker
from concord.errors import FailedPrecondition
from concord.models.linking.m3el import M3EL
from concord.models.linking.umaea import UMAEAConfig
from concord.registry import Registry, resolve_model
from concord.wire import ModelId


@dataclass(frozen=True, eq=False)
class LoadedLinker:
    """M3EL and its encoder, ready to serve, and what to call them in responses."""

    m3el: M3EL
    encoder: LoadedModel
    id: ModelId  # the linker package (concord-linker / 3, or <dir> / local-<hash>)
    uri: str  # what the settings asked for
    umaea: UMAEAConfig  # how AlignGraphs trains (the package's "umaea" block, else defaults)
    meta: dict[str, Any]

    @property
    def dims(self) -> tuple[int, int, int]:
        """Sizes of the knowledge base's text, image and fused vectors."""
        return self.m3el.text_dim, self.m3el.image_dim, self.m3el.embed_dim

    @property
    def image_size(self) -> int:
        return self.encoder.image_size


def load(
    uri: str, registry: Callable[[], Registry], device: torch.device | None = None
) -> LoadedLinker:
    """Load the linker package named by `uri`, its M3EL and the encoder it names.

    Args:
        uri: `models:/NAME@ALIAS`, `models:/NAME/VERSION`, or a local package directory.
        registry: returns the platform registry (called only for registry URIs).
        device: where M3EL and the encoder run (None: the CPU).
    Raises:
        FailedPrecondition: the package, a file of it or its encoder is missing or malformed.
    """

    def package_files(directory: Path) -> tuple[Path, Path]:
        if not directory.is_dir():
            raise FailedPrecondition(f"linker model {uri!r} is not a directory")
        files = (directory / META_FILE, directory / WEIGHTS_FILE)
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise FailedPrecondition(
                f"linker model {uri!r} is not a linker package (needs {', '.join(missing)})"
            )
        return files

    model_id, directory = resolve_model(uri, registry, kind="linker", files=package_files)
    try:
        m3el, meta = load_linker(directory)
    except FailedPrecondition as err:
        raise FailedPrecondition(f"linker model {uri!r}: {err.message}") from err
    encoder = load_model(encoder_uri(directory, meta), registry)
    if encoder.embed_dim not in (m3el.text_dim, m3el.image_dim):
        raise FailedPrecondition(
            f"linker model {uri!r} was trained on {m3el.text_dim}/{m3el.image_dim}-d features; "
            f"its encoder {encoder.id} gives {encoder.embed_dim}-d"
        )
    try:
        umaea = UMAEAConfig.from_dict(dict(meta.get("umaea") or {}))
    except (TypeError, ValueError) as err:
        raise FailedPrecondition(f"linker model {uri!r}: bad umaea config ({err})") from err
    if device is not None:
        encoder.torch_model().to(device)
        m3el.to(device)
    return LoadedLinker(m3el, encoder, model_id, uri, umaea, meta)
