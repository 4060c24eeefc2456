"""Encoder directories of every kind, one entry point: `open_checkpoint` tells Concord's own
directory, a transformers CLIP `save_pretrained` directory and an open_clip checkpoint apart by
their files (see `Checkpoint`); `load_weights` builds the model; `load_clip_checkpoint` loads a
public CLIP."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from safetensors.torch import load_file

from concord.checkpoints.encoder import (
    BACKBONE_CONFIG_FILE,
    CONFIG_FILE,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
    build_concord,
    quiet_transformers,
    read_encoder_config,
)
from concord.errors import FailedPrecondition
from concord.models.clip import ClipAdapter
from concord.models.config import EncoderConfig
from concord.models.dual_encoder import DualEncoder
from concord.models.preprocess import TextTokenizer

if TYPE_CHECKING:
    from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # used when no preprocessor_config.json
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

CheckpointKind = Literal["concord", "clip", "open_clip"]
EncoderModel = DualEncoder | ClipAdapter  # both: encode_image / encode_text -> Encoded
OPEN_CLIP_CONFIG_FILE = "open_clip_config.json"  # open_clip's hub layout ({"model_cfg": ...})
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
CLIP_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
CLIP_SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
PREPROCESSOR_FILE = "preprocessor_config.json"  # transformers CLIP: image_mean / image_std
_CLIP_TOKENIZER = "tokenizer.json or vocab.json + merges.txt"
_LAYOUTS: dict[CheckpointKind, str] = {
    "concord": "Concord's save_encoder directory",
    "clip": "a transformers CLIP save_pretrained directory",
    "open_clip": "an open_clip checkpoint directory",
}


@dataclass(frozen=True)
class Checkpoint:
    """An encoder directory of any supported kind, read without its weights.

    Kinds (checked in this order):
        open_clip: `open_clip_config.json` (`{"model_cfg": ..., "preprocess_cfg": ...}` as
            open_clip's hub export writes it, or a bare `model_configs/<name>.json`), weights in
            `open_clip_model.safetensors`, `open_clip_pytorch_model.bin` or one `*.pt`
            (a training checkpoint is fine), and a CLIP tokenizer's files.
        clip: `config.json` with model_type "clip" (CLIPModel.save_pretrained), its weights,
            the tokenizer's files, optionally `preprocessor_config.json`.
        concord: `save_encoder`'s config.json, model.safetensors, tokenizer/,
            backbone_config.json.
    """

    kind: CheckpointKind
    directory: Path
    weights: tuple[Path, ...]  # the files whose bytes are the model (`weights_digest`)
    tokenizer: TextTokenizer
    image_size: int  # side in pixels that encode_image expects
    embed_dim: int  # size of pooled and token embeddings
    config: EncoderConfig | None  # Concord's architecture; None for public CLIPs
    details: dict[str, Any]  # kind-specific: the parsed CLIP / open_clip config and mean / std

    def digest(self) -> str:
        """Returns: 8 hex of the sha256 of the weights (names a local model's version)."""
        return weights_digest(self.weights)


def weights_digest(files: Sequence[Path]) -> str:
    """Returns: the first 8 hex digits of the sha256 over `files`' bytes, in the given order."""
    sha = hashlib.sha256()
    for path in files:
        with Path(path).open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                sha.update(chunk)
    return sha.hexdigest()[:8]


def open_checkpoint(directory: Path) -> Checkpoint:
    """Detect the directory's kind and read its config and tokenizer (no weights).

    Raises:
        FailedPrecondition: not a supported model directory; the message names, for the kind
            the directory claims to be (or for every kind when it claims none), what is missing.
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise FailedPrecondition(f"{directory} is not a directory")
    if (directory / OPEN_CLIP_CONFIG_FILE).is_file():
        return _open_clip_checkpoint(directory)
    model_type = _model_type(directory)
    if model_type == "clip":
        return _clip_checkpoint(directory)
    if model_type is not None:
        raise FailedPrecondition(
            f"{directory}: config.json is a transformers {model_type!r} model; "
            "Concord serves model_type 'clip' (and its own encoders)"
        )
    missing = _missing_concord(directory)
    if not missing:
        config = read_encoder_config(directory)
        tokenizer = _auto_tokenizer(directory / TOKENIZER_DIR, config.text.max_length)
        return Checkpoint(
            "concord",
            directory,
            (directory / WEIGHTS_FILE,),
            tokenizer,
            config.image.image_size,
            config.embed_dim,
            config,
            {},
        )
    if (directory / CONFIG_FILE).is_file():  # claims to be ours
        raise FailedPrecondition(_lacks(directory, {"concord": missing}))
    raise FailedPrecondition(
        _lacks(
            directory,
            {
                "concord": missing,
                "clip": _missing_clip(directory),
                "open_clip": _missing_open_clip(directory),
            },
        )
    )


def load_weights(checkpoint: Checkpoint) -> EncoderModel:
    """Build the model of an opened checkpoint and load its weights.

    Returns:
        A DualEncoder (concord) or ClipAdapter (clip, open_clip), eval mode, fp32 on CPU.
    Raises:
        FailedPrecondition: the weights do not fit the config (or the open_clip architecture
            is not one transformers' CLIP can hold).
    """
    from transformers import CLIPConfig, CLIPModel

    directory, details = checkpoint.directory, checkpoint.details
    if checkpoint.kind == "concord":
        assert checkpoint.config is not None
        model = build_concord(directory, checkpoint.config)
        model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)), strict=True)
        return model.eval()
    if checkpoint.kind == "clip":
        with quiet_transformers():
            clip = CLIPModel.from_pretrained(
                str(directory), dtype=torch.float32, local_files_only=True
            )
    else:
        from concord.models import open_clip_convert as oc

        state = oc.strip_training_wrapping(_read_state(checkpoint.weights[0]))
        clip_config = CLIPConfig(**details["clip_config"])
        vision_config, text_config = _sub_configs(clip_config)
        depths = (vision_config.num_hidden_layers, text_config.num_hidden_layers)
        try:
            converted = oc.to_transformers_state_dict(state, depths)
        except oc.UnsupportedOpenClip as err:
            raise FailedPrecondition(f"{directory}: {err}") from err
        with quiet_transformers():
            clip = CLIPModel(clip_config)
        missing, unexpected = clip.load_state_dict(converted, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]  # buffers
        if missing or unexpected:
            raise FailedPrecondition(
                f"{directory}: open_clip weights do not fit the config "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
    adapter = ClipAdapter(clip, checkpoint.tokenizer, mean=details["mean"], std=details["std"])
    return adapter.eval()


def _clip_checkpoint(directory: Path) -> Checkpoint:
    from transformers import CLIPConfig

    missing = _missing_clip(directory)
    if missing:
        raise FailedPrecondition(_lacks(directory, {"clip": missing}))
    config = CLIPConfig.from_pretrained(str(directory), local_files_only=True)
    mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    if (directory / PREPROCESSOR_FILE).is_file():
        processor = json.loads((directory / PREPROCESSOR_FILE).read_text())
        mean, std = tuple(processor.get("image_mean", mean)), tuple(processor.get("image_std", std))
    vision_config, text_config = _sub_configs(config)
    max_length = int(text_config.max_position_embeddings)
    image_size, embed_dim = vision_config.image_size, config.projection_dim
    if image_size is None or isinstance(image_size, (list, tuple)):
        raise FailedPrecondition(
            f"{directory}: vision_config.image_size is {image_size!r}, not a size"
        )
    if embed_dim is None:
        raise FailedPrecondition(f"{directory}: config.json has no projection_dim")
    return Checkpoint(
        "clip",
        directory,
        _clip_weight_files(directory),
        _auto_tokenizer(directory, max_length),
        int(image_size),
        int(embed_dim),
        None,
        {"mean": mean, "std": std},
    )


def _sub_configs(config: CLIPConfig) -> tuple[CLIPVisionConfig, CLIPTextConfig]:
    """CLIPConfig's vision and text configs (typed `dict | ... | None`, but its __post_init__
    always turns them into config objects)."""
    from transformers import CLIPTextConfig, CLIPVisionConfig

    vision_config, text_config = config.vision_config, config.text_config
    assert isinstance(vision_config, CLIPVisionConfig), type(vision_config)
    assert isinstance(text_config, CLIPTextConfig), type(text_config)
    return vision_config, text_config


def _open_clip_checkpoint(directory: Path) -> Checkpoint:
    from concord.models import open_clip_convert as oc

    missing = _missing_open_clip(directory)
    if missing:
        raise FailedPrecondition(_lacks(directory, {"open_clip": missing}))
    raw = json.loads((directory / OPEN_CLIP_CONFIG_FILE).read_text())
    cfg = oc.model_config(raw)
    context_length = int(cfg.get("text_cfg", {}).get("context_length", 77))
    tokenizer = _auto_tokenizer(directory, context_length)
    hf = tokenizer.hf_tokenizer
    if hf.eos_token_id is None or hf.bos_token_id is None:
        raise FailedPrecondition(
            f"{directory}: the tokenizer has no <|startoftext|> / <|endoftext|>"
        )
    try:
        clip_config = oc.clip_config_kwargs(
            raw,
            bos_token_id=int(hf.bos_token_id),
            eos_token_id=int(hf.eos_token_id),
            pad_token_id=int(hf.pad_token_id if hf.pad_token_id is not None else hf.eos_token_id),
        )
    except oc.UnsupportedOpenClip as err:
        raise FailedPrecondition(f"{directory}: {err}") from err
    preprocess = raw.get("preprocess_cfg", {})
    return Checkpoint(
        "open_clip",
        directory,
        _open_clip_weight_files(directory),
        tokenizer,
        int(clip_config["vision_config"]["image_size"]),
        int(clip_config["projection_dim"]),
        None,
        {
            "clip_config": clip_config,
            "mean": tuple(preprocess.get("mean", OPENAI_CLIP_MEAN)),
            "std": tuple(preprocess.get("std", OPENAI_CLIP_STD)),
        },
    )


def _model_type(directory: Path) -> str | None:
    """config.json's transformers model_type (None when absent: Concord's own config)."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except ValueError as err:
        raise FailedPrecondition(f"{path} is not JSON ({err})") from err
    return config.get("model_type") if isinstance(config, dict) else None


def _missing_concord(directory: Path) -> list[str]:
    names = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_DIR + "/", BACKBONE_CONFIG_FILE)
    return [n for n in names if not (directory / n.rstrip("/")).exists()]


def _missing_clip(directory: Path) -> list[str]:
    missing = []
    if _model_type(directory) != "clip":
        missing.append('config.json with model_type "clip"')
    if not _clip_weight_files(directory):
        missing.append(" or ".join((*CLIP_WEIGHTS, CLIP_SHARD_INDEXES[0])))
    if not _has_tokenizer(directory):
        missing.append(_CLIP_TOKENIZER)
    return missing


def _missing_open_clip(directory: Path) -> list[str]:
    missing = []
    if not (directory / OPEN_CLIP_CONFIG_FILE).is_file():
        missing.append(OPEN_CLIP_CONFIG_FILE)
    if not _open_clip_weight_files(directory):
        missing.append(" or ".join((*OPEN_CLIP_WEIGHTS, "one *.pt")))
    if not _has_tokenizer(directory):
        missing.append(_CLIP_TOKENIZER)
    return missing


def _lacks(directory: Path, missing: dict[CheckpointKind, list[str]]) -> str:
    kinds = "; ".join(f"as {_LAYOUTS[k]} it lacks {', '.join(m)}" for k, m in missing.items())
    return f"{directory} is not an encoder directory: {kinds}"


def _has_tokenizer(directory: Path) -> bool:
    return (directory / "tokenizer.json").is_file() or (
        (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file()
    )


def _clip_weight_files(directory: Path) -> tuple[Path, ...]:
    for name in CLIP_WEIGHTS:
        if (directory / name).is_file():
            return (directory / name,)
    for name in CLIP_SHARD_INDEXES:  # sharded: the index, then its shards in order
        index = directory / name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
            return (index, *(directory / s for s in shards))
    return ()


def _open_clip_weight_files(directory: Path) -> tuple[Path, ...]:
    for name in OPEN_CLIP_WEIGHTS:
        if (directory / name).is_file():
            return (directory / name,)
    pts = sorted(directory.glob("*.pt"))
    return (pts[0],) if len(pts) == 1 else ()  # several: which one is meant is unknowable


def _read_state(path: Path) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        return dict(load_file(str(path)))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise FailedPrecondition(f"{path} holds no state dict")
    return state


def _auto_tokenizer(path: Path, max_length: int) -> TextTokenizer:
    from transformers import AutoTokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return TextTokenizer(hf_tokenizer, max_length)


def load_clip_checkpoint(path: Path) -> ClipAdapter:
    """Load a transformers CLIP (CLIPModel + fast tokenizer) from a LOCAL directory; no download.

    Args:
        path: a `save_pretrained` directory with the model, tokenizer files and optionally
            `preprocessor_config.json` (its image_mean / image_std are used).
    Returns:
        A ClipAdapter in eval mode, fp32 on CPU.
    Raises:
        FailedPrecondition: `path` is not such a directory (the message names what is missing).
    """
    checkpoint = open_checkpoint(path)
    if checkpoint.kind != "clip":
        raise FailedPrecondition(f"{path} is a {checkpoint.kind} checkpoint, not a CLIP")
    model = load_weights(checkpoint)
    assert isinstance(model, ClipAdapter)
    return model
