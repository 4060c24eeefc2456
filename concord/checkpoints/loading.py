"""Resolves an encoder model URI (settings `encoder_model`): a registry URI through
`concord.registry`, or a local model directory: one written by
`concord.checkpoints.save_encoder`, a transformers CLIP `save_pretrained` directory, or an
open_clip checkpoint directory. Shared by every service that runs the encoder (encoder, scorer,
the KServe / BentoML runtimes) and by the Triton export."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from concord.checkpoints.kinds import Checkpoint, EncoderModel, load_weights, open_checkpoint
from concord.errors import FailedPrecondition
from concord.models.config import EncoderConfig
from concord.models.preprocess import TextTokenizer
from concord.registry import Registry, resolve_model
from concord.wire import ModelId


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference (eval mode) and what to call it in responses."""

    model: EncoderModel | None  # None when inference runs elsewhere (weights=False)
    tokenizer: TextTokenizer
    id: ModelId
    uri: str  # what the settings asked for
    config: EncoderConfig | None  # Concord's own architecture; None for a public CLIP
    image_size: int  # side in pixels that encode_image expects (see images_to_tensor)
    embed_dim: int  # size of the pooled and token embeddings
    kind: str = "concord"  # "concord", "clip" or "open_clip" (concord.checkpoints.Checkpoint)

    def torch_model(self) -> EncoderModel:
        """Returns: the in-process model. Raises: FailedPrecondition if loaded without weights."""
        if self.model is None:
            raise FailedPrecondition(f"encoder model {self.uri!r} was loaded without weights")
        return self.model


def load_model(uri: str, registry: Callable[[], Registry], *, weights: bool = True) -> LoadedModel:
    """Load the encoder named by `uri`: Concord's own (`save_encoder`), a transformers CLIP
    (`save_pretrained` directory) or an open_clip checkpoint; the kind is detected from the
    directory's files (`concord.checkpoints.open_checkpoint`).

    Args:
        uri: `models:/NAME@ALIAS`, `models:/NAME/VERSION`, or a local model directory.
        registry: returns the platform registry (only called for registry URIs).
        weights: False loads only the config and tokenizer (inference runs in a remote
            runtime, e.g. Triton); the model id is the same either way.
    Returns:
        The loaded model. A registry model is called by its registered name and version; a
        local directory by its directory name and `local-<8 hex of the weights' sha256>`, so
        different weights never share a retrieval collection.
    Raises:
        FailedPrecondition: the model does not exist or its files are incomplete (the message
            names what is missing for each kind of directory).
    """

    @cache  # a local directory is opened once: for its weight files (the id), then to load
    def opened(directory: Path) -> Checkpoint:
        try:
            return open_checkpoint(directory)
        except FailedPrecondition as err:
            raise FailedPrecondition(f"encoder model {uri!r}: {err.message}") from err

    model_id, directory = resolve_model(
        uri, registry, kind="encoder", files=lambda d: opened(d).weights
    )
    checkpoint = opened(directory)
    model = load_weights(checkpoint) if weights else None
    return LoadedModel(
        model,
        checkpoint.tokenizer,
        model_id,
        uri,
        checkpoint.config,
        checkpoint.image_size,
        checkpoint.embed_dim,
        checkpoint.kind,
    )
