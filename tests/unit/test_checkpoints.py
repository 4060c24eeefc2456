"""Tests of concord.checkpoints: the encoder directory round trip and the CLIP loader on a tiny
random CLIP saved to tmp (no download)."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import torch.nn.functional as F

from concord.checkpoints import build_encoder, load_clip_checkpoint, load_encoder, save_encoder
from concord.models import load_config
from tests.fixtures.models import write_tiny_clip


def test_save_load_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    config = load_config("tiny").replace(text={"unfrozen_layers": 1})
    model, tokenizer = build_encoder(config, seed=7)
    with torch.no_grad():  # make sure trained-looking values, not the init, are what is saved
        model.log_logit_scale.add_(0.5)
        model.text_tower.backbone.encoder.layer[5].output.dense.bias.add_(0.01)
    model.eval()
    save_encoder(model, tokenizer, tmp_path / "enc")
    names = {p.name for p in (tmp_path / "enc").iterdir()}
    assert names == {"config.json", "model.safetensors", "tokenizer", "backbone_config.json"}
    assert json.loads((tmp_path / "enc" / "config.json").read_text()) == config.to_dict()

    loaded, loaded_tokenizer = load_encoder(tmp_path / "enc")
    assert loaded.config == config and not loaded.training
    texts = ["a red circle left of a blue square", "green"]
    batch, again = tokenizer(texts), loaded_tokenizer(texts)
    assert torch.equal(batch.input_ids, again.input_ids) and batch.offsets == again.offsets
    pixels = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        for a, b in [
            (model.encode_image(pixels), loaded.encode_image(pixels)),
            (
                model.encode_text(batch.input_ids, batch.attention_mask),
                loaded.encode_text(again.input_ids, again.attention_mask),
            ),
        ]:
            assert torch.equal(a.pooled, b.pooled) and torch.equal(a.tokens, b.tokens)
        assert torch.equal(model.logit_scale, loaded.logit_scale)


def test_load_encoder_names_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        load_encoder(tmp_path)


def test_clip_loader_matches_clip_features(tmp_path: Path) -> None:
    reference = write_tiny_clip(tmp_path)
    adapter = load_clip_checkpoint(tmp_path / "clip")
    assert adapter.image_size == 32
    pixels = torch.rand(3, 3, 32, 32)
    batch = adapter.tokenizer(["a red circle", "red", "circle red a red"])
    assert batch.tokens[0] == [
        "<|startoftext|>",
        "a</w>",
        "red</w>",
        "cir",
        "c",
        "l",
        "e</w>",
        "<|endoftext|>",
    ]
    with torch.inference_mode():
        image = adapter.encode_image(pixels)
        text = adapter.encode_text(batch.input_ids, batch.attention_mask)
        mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
        std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
        want_image = reference.get_image_features(pixel_values=(pixels - mean) / std).pooler_output
        want_text = reference.get_text_features(batch.input_ids, batch.attention_mask).pooler_output
    assert image.pooled.shape == (3, 24) and image.tokens.shape == (3, 16, 24) and image.mask.all()
    assert text.pooled.shape == (3, 24) and text.tokens.shape == (3, batch.input_ids.shape[1], 24)
    assert torch.equal(text.mask, batch.attention_mask.bool())
    assert torch.allclose(image.pooled, F.normalize(want_image, dim=-1), atol=1e-6)
    assert torch.allclose(text.pooled, F.normalize(want_text, dim=-1), atol=1e-6)
    assert torch.allclose(text.tokens.norm(dim=-1), batch.attention_mask.float(), atol=1e-5)
