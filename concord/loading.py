"""Resolves an encoder model URI (settings `encoder_model`): a registry URI through
`concord.registry`, or a local model directory written by `concord.checkpoints.save_encoder`.
Shared by every service that runs the encoder in process (encoder, scorer)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from concord.checkpoints import (
    CONFIG_FILE,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
    load_encoder,
    read_encoder_config,
)
from concord.clients.types import ModelId
from concord.errors import FailedPrecondition
from concord.models.config import EncoderConfig
from concord.models.dual_encoder import DualEncoder
from concord.models.preprocess import TextTokenizer
from concord.registry import Registry

REGISTRY_PREFIX = "models:/"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference (eval mode) and what to call it in responses."""

    model: DualEncoder | None  # None when inference runs elsewhere (weights=False)
    tokenizer: TextTokenizer
    id: ModelId
    uri: str  # what the settings asked for
    config: EncoderConfig

    def torch_model(self) -> DualEncoder:
        """Returns: the in-process model. Raises: FailedPrecondition if loaded without weights."""
        if self.model is None:
            raise FailedPrecondition(f"encoder model {self.uri!r} was loaded without weights")
        return self.model


def load_model(uri: str, registry: Callable[[], Registry], *, weights: bool = True) -> LoadedModel:
    """Load the encoder named by `uri`.

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
        FailedPrecondition: the model does not exist or its files are incomplete.
    """
    if uri.startswith(REGISTRY_PREFIX):
        info, directory = registry().download(uri)
        model_id = ModelId(info.name, str(info.version))
    else:
        directory = Path(uri).expanduser()
        if not (directory / CONFIG_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
            raise FailedPrecondition(
                f"encoder model {uri!r} is not a model directory "
                f"(needs {CONFIG_FILE} and {WEIGHTS_FILE})"
            )
        name = _UNSAFE.sub("-", directory.resolve().name).strip("-") or "encoder"
        model_id = ModelId(name, f"local-{_digest(directory / WEIGHTS_FILE)}")
    if not weights:
        config = read_encoder_config(directory)
        return LoadedModel(None, _tokenizer(directory, config), model_id, uri, config)
    model, tokenizer = load_encoder(directory)
    model.eval()
    return LoadedModel(model, tokenizer, model_id, uri, model.config)


def _tokenizer(directory: Path, config: EncoderConfig) -> TextTokenizer:
    from transformers import AutoTokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(str(directory / TOKENIZER_DIR))
    return TextTokenizer(hf_tokenizer, config.text.max_length)


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()[:8]
