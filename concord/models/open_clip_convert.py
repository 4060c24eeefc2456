"""open_clip ViT checkpoints as transformers CLIP: the config and state-dict conversion.

open_clip's ViT-with-transformer-text-tower CLIP (`open_clip.model.CLIP`) is the same network as
transformers' `CLIPModel`; only names and layouts differ (fused q/k/v projections, projections
stored as (in, out) matrices, positional embeddings as raw parameters). Converting lets Concord
serve an open_clip checkpoint through `ClipAdapter` without the open_clip package (which pulls
torchvision and timm). Architectures that are not that network (ResNet or timm image towers,
Hugging Face text towers, attentional or mean pooling, SigLIP's logit bias) are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

# Options of open_clip's CLIPVisionCfg / CLIPTextCfg whose non-default values change the
# network away from transformers' CLIP: (key, the value that keeps it the same network).
_VISION_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("ls_init_value", None),
    ("attentional_pool", False),
    ("no_ln_pre", False),
    ("final_ln_after_pool", False),
    ("pool_type", "tok"),
    ("global_average_pool", False),
    ("output_tokens", False),
    ("act_kwargs", None),
    ("norm_kwargs", None),
)
_TEXT_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("ls_init_value", None),
    ("embed_cls", False),
    ("no_causal_mask", False),
    ("final_ln_after_pool", False),
    ("pool_type", "argmax"),
    ("proj_bias", False),
    ("proj_type", "linear"),
    ("output_tokens", False),
    ("act_kwargs", None),
    ("norm_kwargs", None),
)
_LAYER_KEYS = {  # open_clip residual block -> transformers CLIPEncoderLayer (weight and bias)
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}


class UnsupportedOpenClip(ValueError):
    """The checkpoint is not a ViT + transformer-text CLIP that transformers' CLIPModel can hold."""


def model_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The model config of an `open_clip_config.json` (`{"model_cfg": ...}`) or of a bare one
    (open_clip's `model_configs/<name>.json`)."""
    return config.get("model_cfg", config)


def clip_config_kwargs(
    config: Mapping[str, Any], *, bos_token_id: int, eos_token_id: int, pad_token_id: int
) -> dict[str, Any]:
    """transformers `CLIPConfig(**kwargs)` for an open_clip model config.

    Args:
        config: the model config (see `model_config`).
        bos_token_id, eos_token_id, pad_token_id: the tokenizer's. open_clip pools the text at
            the highest token id (argmax), transformers at the first `eos_token_id`: the same
            position with a CLIP vocabulary, where <|endoftext|> is the last id.
    Raises:
        UnsupportedOpenClip: an architecture transformers' CLIPModel cannot express.
    """
    cfg = model_config(config)
    vision, text = dict(cfg.get("vision_cfg", {})), dict(cfg.get("text_cfg", {}))
    if "embed_dim" not in cfg or not vision or not text:
        raise UnsupportedOpenClip("the open_clip config needs embed_dim, vision_cfg and text_cfg")
    if not isinstance(vision.get("layers"), int) or vision.get("timm_model_name"):
        raise UnsupportedOpenClip("only ViT image towers are supported (not ResNet or timm)")
    if text.get("hf_model_name"):
        raise UnsupportedOpenClip("only open_clip's own text transformer is supported")
    if cfg.get("init_logit_bias") is not None:
        raise UnsupportedOpenClip("SigLIP models (logit bias) are not supported")
    for tower, options, defaults in (
        ("vision_cfg", vision, _VISION_DEFAULTS),
        ("text_cfg", text, _TEXT_DEFAULTS),
    ):
        for key, default in defaults:
            if options.get(key, default) not in (default, {}):
                raise UnsupportedOpenClip(f"{tower}.{key}={options[key]!r} is not supported")
    act = "quick_gelu" if cfg.get("quick_gelu") else "gelu"  # OpenAI's weights want quick_gelu
    v_width, t_width = int(vision.get("width", 768)), int(text.get("width", 512))
    return {
        "projection_dim": int(cfg["embed_dim"]),
        "vision_config": {
            "hidden_size": v_width,
            "intermediate_size": int(v_width * float(vision.get("mlp_ratio", 4.0))),
            "num_hidden_layers": int(vision["layers"]),
            "num_attention_heads": v_width // int(vision.get("head_width", 64)),
            "image_size": _side(vision.get("image_size", 224), "image_size"),
            "patch_size": _side(vision.get("patch_size", 16), "patch_size"),
            "hidden_act": act,
            "layer_norm_eps": 1e-5,
        },
        "text_config": {
            "vocab_size": int(text.get("vocab_size", 49408)),
            "hidden_size": t_width,
            "intermediate_size": int(t_width * float(text.get("mlp_ratio", 4.0))),
            "num_hidden_layers": int(text.get("layers", 12)),
            "num_attention_heads": int(text.get("heads", 8)),
            "max_position_embeddings": int(text.get("context_length", 77)),
            "hidden_act": act,
            "layer_norm_eps": 1e-5,
            "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id,
            "pad_token_id": pad_token_id,
        },
    }


def _side(value: Any, name: str) -> int:
    """open_clip allows (h, w) pairs; transformers' CLIP is square."""
    if isinstance(value, list | tuple):
        if len(set(value)) != 1:
            raise UnsupportedOpenClip(f"vision_cfg.{name}={value!r}: only square is supported")
        value = value[0]
    return int(value)


def strip_training_wrapping(state: Mapping[str, Any]) -> dict[str, Tensor]:
    """The model state of an open_clip file: a bare state dict, or a training checkpoint
    (`{"epoch", "state_dict", ...}`) whose keys carry DDP's `module.` prefix."""
    inner = state.get("state_dict", state)
    return {
        (k[len("module.") :] if k.startswith("module.") else k): v
        for k, v in inner.items()
        if isinstance(v, Tensor)
    }


def to_transformers_state_dict(
    state: Mapping[str, Tensor], num_layers: tuple[int, int]
) -> dict[str, Tensor]:
    """Rename and reshape an open_clip CLIP state dict into transformers CLIPModel's.

    Args:
        state: open_clip `CLIP.state_dict()` (see `strip_training_wrapping`).
        num_layers: (vision, text) transformer depths, from the config.
    Returns:
        Every CLIPModel parameter (its `position_ids` buffers excepted).
    Raises:
        UnsupportedOpenClip: an expected key is missing.
    """

    def take(key: str) -> Tensor:
        if key not in state:
            raise UnsupportedOpenClip(f"the open_clip state dict has no {key!r}")
        return state[key]

    out: dict[str, Tensor] = {
        "logit_scale": take("logit_scale").reshape(()),
        "text_model.embeddings.token_embedding.weight": take("token_embedding.weight"),
        "text_model.embeddings.position_embedding.weight": take("positional_embedding"),
        "text_model.final_layer_norm.weight": take("ln_final.weight"),
        "text_model.final_layer_norm.bias": take("ln_final.bias"),
        # open_clip multiplies x @ proj; a Linear holds (out, in)
        "text_projection.weight": take("text_projection").t().contiguous(),
        "vision_model.embeddings.class_embedding": take("visual.class_embedding"),
        "vision_model.embeddings.patch_embedding.weight": take("visual.conv1.weight"),
        "vision_model.embeddings.position_embedding.weight": take("visual.positional_embedding"),
        "vision_model.pre_layrnorm.weight": take("visual.ln_pre.weight"),  # sic: transformers'
        "vision_model.pre_layrnorm.bias": take("visual.ln_pre.bias"),
        "vision_model.post_layernorm.weight": take("visual.ln_post.weight"),
        "vision_model.post_layernorm.bias": take("visual.ln_post.bias"),
        "visual_projection.weight": take("visual.proj").t().contiguous(),
    }
    towers = (
        ("visual.transformer.resblocks", "vision_model.encoder.layers", num_layers[0]),
        ("transformer.resblocks", "text_model.encoder.layers", num_layers[1]),
    )
    for src, dst, depth in towers:
        for i in range(depth):
            s, d = f"{src}.{i}", f"{dst}.{i}"
            for name in ("weight", "bias"):
                # nn.MultiheadAttention fuses q, k, v into one (3W, W) projection
                q, k, v = take(f"{s}.attn.in_proj_{name}").chunk(3, dim=0)
                out[f"{d}.self_attn.q_proj.{name}"] = q.contiguous()
                out[f"{d}.self_attn.k_proj.{name}"] = k.contiguous()
                out[f"{d}.self_attn.v_proj.{name}"] = v.contiguous()
                for open_clip_key, hf_key in _LAYER_KEYS.items():
                    out[f"{d}.{hf_key}.{name}"] = take(f"{s}.{open_clip_key}.{name}")
    return out


def from_transformers_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of `to_transformers_state_dict`: a transformers CLIPModel state dict in
    open_clip's names (hands the same weights to open_clip; tests write checkpoints with it)."""
    out: dict[str, Tensor] = {}
    hf_to_open_clip = {
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
        "vision_model.embeddings.class_embedding": "visual.class_embedding",
        "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
        "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
        "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
        "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
        "vision_model.post_layernorm.weight": "visual.ln_post.weight",
        "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    }
    for hf_key, open_clip_key in hf_to_open_clip.items():
        out[open_clip_key] = state[hf_key].clone()
    out["logit_scale"] = state["logit_scale"].clone()
    out["text_projection"] = state["text_projection.weight"].t().contiguous()
    out["visual.proj"] = state["visual_projection.weight"].t().contiguous()
    for hf_tower, open_clip_tower in (
        ("vision_model.encoder.layers", "visual.transformer.resblocks"),
        ("text_model.encoder.layers", "transformer.resblocks"),
    ):
        depth = 1 + max(
            int(k[len(hf_tower) + 1 :].split(".")[0]) for k in state if k.startswith(hf_tower)
        )
        for i in range(depth):
            d, s = f"{hf_tower}.{i}", f"{open_clip_tower}.{i}"
            for name in ("weight", "bias"):
                out[f"{s}.attn.in_proj_{name}"] = torch.cat(
                    [state[f"{d}.self_attn.{p}_proj.{name}"] for p in "qkv"]
                ).contiguous()
                for open_clip_key, hf_key in _LAYER_KEYS.items():
                    out[f"{s}.{open_clip_key}.{name}"] = state[f"{d}.{hf_key}.{name}"].clone()
    return out
