"""Generator checkpoints on disk: the model directory MLflow registers as `concord-generator`
(config.json + weights.safetensors of the EMA U-Net; MiniLM comes from the installed package, not
copied) and concept directories (concept.json + lora.safetensors) for DECOR/LoRA customizations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from concord.checkpoints.encoder import minilm_path, quiet_transformers
from concord.models.diffusion.config import GeneratorConfig
from concord.models.diffusion.pipeline import ConceptWeights, TextToImage
from concord.models.diffusion.unet import UNet

CONFIG_FILE = "config.json"  # GeneratorConfig.to_dict()
WEIGHTS_FILE = "weights.safetensors"  # the U-Net's (EMA) weights
CONCEPT_FILE = "concept.json"  # name, class_word, rank, reference_count
LORA_FILE = "lora.safetensors"  # ConceptWeights.state


def load_text_encoder() -> tuple[torch.nn.Module, Any]:
    """The frozen MiniLM BertModel (eval, fp32, CPU) and its tokenizer, from the bundled package."""
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    with quiet_transformers():
        backbone = AutoModel.from_pretrained(path, dtype=torch.float32, add_pooling_layer=False)
    return backbone.eval().requires_grad_(False), AutoTokenizer.from_pretrained(path)


def build_generator(config: GeneratorConfig, seed: int = 0) -> TextToImage:
    """A new, untrained generator (U-Net initialised from `seed`) around the bundled MiniLM."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet(config)
    backbone, tokenizer = load_text_encoder()
    return TextToImage(unet, backbone, tokenizer, config)


def save_generator(model: TextToImage | tuple[UNet, GeneratorConfig], directory: Path) -> Path:
    """Write config.json and weights.safetensors.

    Args:
        model: a pipeline, or (U-Net, config) (e.g. the EMA module during training).
        directory: created if missing; files of the same names are overwritten.
    Returns:
        The directory.
    """
    unet, config = (model.unet, model.config) if isinstance(model, TextToImage) else model
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in unet.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    return directory


def to_device(pipe: TextToImage, device: torch.device | str) -> TextToImage:
    """Move the U-Net and the text backbone to `device` (in place; fp32). Returns: `pipe`."""
    pipe.unet.to(device)
    pipe.text_backbone.to(device)
    return pipe


def load_generator(directory: Path, device: torch.device | str = "cpu") -> TextToImage:
    """Load a directory written by `save_generator` (eval mode, fp32, on `device`).

    Raises:
        FileNotFoundError: when the directory lacks config.json or weights.safetensors.
    """
    directory = Path(directory)
    missing = [n for n in (CONFIG_FILE, WEIGHTS_FILE) if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not a generator directory: missing {', '.join(missing)}"
        )
    config = GeneratorConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    unet = UNet(config)
    unet.load_state_dict(load_file(str(directory / WEIGHTS_FILE)), strict=True)
    backbone, tokenizer = load_text_encoder()
    return to_device(TextToImage(unet, backbone, tokenizer, config), device)


def is_generator_dir(directory: Path) -> bool:
    """True when `directory` holds a generator (config.json + weights.safetensors)."""
    d = Path(directory)
    return (d / CONFIG_FILE).is_file() and (d / WEIGHTS_FILE).is_file()


def save_concept(concept: ConceptWeights, directory: Path) -> Path:
    """Write concept.json and lora.safetensors; returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "name": concept.name,
        "class_word": concept.class_word,
        "rank": concept.rank,
        "reference_count": concept.reference_count,
    }
    (directory / CONCEPT_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in concept.state.items()}
    save_file(state, str(directory / LORA_FILE), metadata={"format": "pt"})
    return directory


def load_concept(directory: Path) -> ConceptWeights:
    """Load a directory written by `save_concept`."""
    directory = Path(directory)
    missing = [n for n in (CONCEPT_FILE, LORA_FILE) if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory} is not a concept directory: missing {', '.join(missing)}"
        )
    meta = json.loads((directory / CONCEPT_FILE).read_text())
    return ConceptWeights(
        name=str(meta["name"]),
        class_word=str(meta["class_word"]),
        rank=int(meta["rank"]),
        state=load_file(str(directory / LORA_FILE)),
        reference_count=int(meta["reference_count"]),
    )
