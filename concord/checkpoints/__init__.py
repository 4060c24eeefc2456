"""Model checkpoints on disk, one package: Concord's encoder directory (`encoder`), every kind
of encoder directory behind one entry point, public CLIPs included (`kinds`), the encoder model
URI resolver every encoder-running service shares (`loading`), and the generator's model and
concept directories (`generator`)."""

from concord.checkpoints.encoder import (
    build_encoder,
    load_encoder,
    minilm_path,
    read_encoder_config,
    save_encoder,
)
from concord.checkpoints.generator import (
    build_generator,
    is_generator_dir,
    load_concept,
    load_generator,
    load_text_encoder,
    save_concept,
    save_generator,
    to_device,
)
from concord.checkpoints.kinds import (
    Checkpoint,
    CheckpointKind,
    EncoderModel,
    load_clip_checkpoint,
    load_weights,
    open_checkpoint,
    weights_digest,
)
from concord.checkpoints.loading import LoadedModel, load_model

__all__ = [
    "Checkpoint",
    "CheckpointKind",
    "EncoderModel",
    "LoadedModel",
    "build_encoder",
    "build_generator",
    "is_generator_dir",
    "load_clip_checkpoint",
    "load_concept",
    "load_encoder",
    "load_generator",
    "load_model",
    "load_text_encoder",
    "load_weights",
    "minilm_path",
    "open_checkpoint",
    "read_encoder_config",
    "save_concept",
    "save_encoder",
    "save_generator",
    "to_device",
    "weights_digest",
]
