"""Tests of the text tower and tokenizer on the real bundled all-MiniLM-L6-v2 (offline)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import torch.nn.functional as F

from concord.checkpoints import build_encoder, minilm_path
from concord.models import DualEncoder, TextTokenizer, load_config

SENTENCES = [
    "a red circle left of a blue square",
    "Two striped triangles, one large and one small.",
    "hello",
]


@pytest.fixture(scope="module")
def encoder() -> tuple[DualEncoder, TextTokenizer]:
    model, tokenizer = build_encoder(load_config("tiny"), seed=0)
    return model.eval(), tokenizer


def test_pooled_text_matches_sentence_transformers(
    encoder: tuple[DualEncoder, TextTokenizer],
) -> None:
    from sentence_transformers import SentenceTransformer

    model, tokenizer = encoder
    reference = SentenceTransformer(str(minilm_path()), device="cpu")
    # the model's pipeline ends in a Normalize module, so encode() is unit-norm even when
    # normalize_embeddings=False; its Pooling output is the mean of the token embeddings
    sentence = reference.encode(SENTENCES, normalize_embeddings=False, convert_to_tensor=True).cpu()
    token_lists = reference.encode(SENTENCES, output_value="token_embeddings")
    expected = torch.stack([tokens.cpu().mean(dim=0) for tokens in token_lists])
    batch = tokenizer(SENTENCES)
    with torch.inference_mode():
        pooled, states = model.text_tower(batch.input_ids, batch.attention_mask)
    assert pooled.shape == (3, 384) and states.shape == (3, batch.input_ids.shape[1], 384)
    assert torch.allclose(pooled, expected, atol=1e-4)
    assert torch.allclose(F.normalize(pooled, dim=-1), sentence, atol=1e-4)
    for row, tokens in zip(states, token_lists, strict=True):
        assert torch.allclose(row[: len(tokens)], tokens.cpu(), atol=1e-4)


def test_tokenizer_offsets_map_back_to_words(encoder: tuple[DualEncoder, TextTokenizer]) -> None:
    _, tokenizer = encoder
    batch = tokenizer(SENTENCES)
    assert batch.input_ids.shape == batch.attention_mask.shape and len(batch) == 3
    for text, tokens, offsets, n in zip(
        SENTENCES, batch.tokens, batch.offsets, batch.attention_mask.sum(1).tolist(), strict=True
    ):
        assert len(tokens) == len(offsets) == n
        assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
        assert offsets[0] == offsets[-1] == (0, 0)
        for token, (start, end) in zip(tokens[1:-1], offsets[1:-1], strict=True):
            assert text[start:end].lower() == token.removeprefix("##")
    assert batch.tokens[0][1:-1] == ["a", "red", "circle", "left", "of", "a", "blue", "square"]
    assert batch.offsets[0][3] == (6, 12)  # "circle"


def test_tokenizer_truncates_and_rejects_bad_input(
    encoder: tuple[DualEncoder, TextTokenizer],
) -> None:
    _, tokenizer = encoder
    short = TextTokenizer(tokenizer.hf_tokenizer, max_length=5)
    batch = short(["one two three four five six seven"])
    assert batch.input_ids.shape == (1, 5) and batch.tokens[0][-1] == "[SEP]"
    with pytest.raises(ValueError, match="empty"):
        tokenizer(["fine", "  "])
    with pytest.raises(TypeError):
        tokenizer("a bare string")  # type: ignore[arg-type]


def test_build_encoder_is_seeded_and_leaves_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a, _ = build_encoder(load_config("tiny"), seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    b, _ = build_encoder(load_config("tiny"), seed=3)
    c, _ = build_encoder(load_config("tiny"), seed=4)
    assert torch.equal(a.image_proj.weight, b.image_proj.weight)
    assert not torch.equal(a.image_proj.weight, c.image_proj.weight)


def test_frozen_minilm_gets_no_grad_and_top_layer_does_when_unfrozen() -> None:
    for unfrozen in (0, 1):
        model, tokenizer = build_encoder(
            load_config("tiny").replace(text={"unfrozen_layers": unfrozen})
        )
        batch = tokenizer(SENTENCES[:2])
        model.encode_text(batch.input_ids, batch.attention_mask).pooled.sum().backward()
        assert model.text_proj.weight.grad is not None
        for name, p in model.text_tower.backbone.named_parameters():
            trainable = unfrozen == 1 and name.startswith("encoder.layer.5.")
            assert p.requires_grad == trainable, name
            assert (p.grad is not None) == trainable, name
