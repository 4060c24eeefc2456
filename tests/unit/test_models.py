"""Unit tests of concord.models on tiny dimensions: configs, the ViT, the dual encoder on a tiny
random BERT, losses against hand-computed references, FILIP masks, XBT projection."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import BertConfig, BertModel

from concord.models import (
    CompatibleProjection,
    DualEncoder,
    Encoded,
    EncoderConfig,
    ImageTowerConfig,
    TextTowerConfig,
    contrastive_loss,
    filip_loss,
    filip_similarity,
    images_to_tensor,
    load_config,
)
from concord.models.config import preset_names
from concord.models.xbt import add_modality_noise

TINY = EncoderConfig(
    name="test",
    image=ImageTowerConfig(image_size=16, patch_size=4, width=32, depth=2, heads=2, mlp_ratio=2.0),
    text=TextTowerConfig(max_length=12, unfrozen_layers=0),
    embed_dim=24,
)


def tiny_bert(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
    )
    return BertModel(cfg, add_pooling_layer=False)


def tiny_model(config: EncoderConfig = TINY) -> DualEncoder:
    model = DualEncoder(config, tiny_bert())
    return model.eval()


def random_encoded(b: int, n: int, e: int, mask: torch.Tensor | None = None) -> Encoded:
    tokens = F.normalize(torch.randn(b, n, e), dim=-1)
    mask = torch.ones(b, n, dtype=torch.bool) if mask is None else mask
    return Encoded(F.normalize(torch.randn(b, e), dim=-1), tokens * mask[..., None], mask)


def test_presets_load_and_round_trip() -> None:
    assert {"tiny", "small", "base"} <= set(preset_names())
    for name in preset_names():
        cfg = load_config(name)
        assert cfg.name == name
        assert EncoderConfig.from_dict(cfg.to_dict()) == cfg
    assert load_config("tiny").image.num_patches == 64


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ImageTowerConfig(image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="unknown encoder config"):
        load_config("nope")
    with pytest.raises(TypeError):
        EncoderConfig.from_dict({**TINY.to_dict(), "surprise": 1})
    assert TINY.replace(image={"depth": 1}).image.depth == 1
    with pytest.raises(ValueError, match="stem"):
        ImageTowerConfig(stem="resnet")
    with pytest.raises(ValueError, match="power-of-2 patch_size"):
        ImageTowerConfig(image_size=60, patch_size=6, stem="conv")
    with pytest.raises(ValueError, match="pool"):
        ImageTowerConfig(pool="sum")
    with pytest.raises(ValueError, match=r"depth 0 .* needs stem 'cnn'"):
        ImageTowerConfig(depth=0, stem="conv")
    with pytest.raises(ValueError, match="power-of-2 patch_size"):
        ImageTowerConfig(image_size=60, patch_size=6, stem="cnn")


def test_conv_stem_keeps_the_patch_grid_and_sees_local_shape() -> None:
    """The conv stem yields the same tokens per image as the patch embedding, and (unlike a
    per-patch linear map) a token depends on pixels across its patch border."""
    from concord.models.vit import ImageTower

    torch.manual_seed(0)
    conv = ImageTower(TINY.image.__class__(**{**TINY.to_dict()["image"], "stem": "conv"})).eval()
    plain = ImageTower(TINY.image).eval()
    x = torch.rand(2, 3, 16, 16)
    pooled, tokens = conv(x)
    assert tokens.shape == plain(x)[1].shape == (2, 16, 32)
    assert pooled.shape == (2, 32)
    y = x.clone()
    y[:, :, 4, :] = 1 - y[:, :, 4, :]  # first row of the second patch row
    with torch.no_grad():
        changed_conv = (conv.patch_embed(y) - conv.patch_embed(x)).abs().sum(1)[0]
        changed_plain = (plain.patch_embed(y) - plain.patch_embed(x)).abs().sum(1)[0]
    assert changed_plain[0].max() == 0  # patch row 0 ignores pixels of patch row 1
    assert changed_conv[0].max() > 0  # 3x3 receptive fields cross the border


def test_cnn_tower_keeps_the_patch_grid_and_max_pool_keeps_a_small_object() -> None:
    """The "cnn" stem with depth 0 is a plain CNN on the same token grid; its convolutions run at
    full resolution, so one changed pixel reaches the token above it; max pooling takes each
    channel's largest token value (an object's, however few tokens it covers)."""
    from concord.models.vit import ImageTower

    torch.manual_seed(0)
    image = {**TINY.to_dict()["image"], "stem": "cnn", "depth": 0, "pool": "max"}
    cfg = TINY.replace(image=image)
    assert EncoderConfig.from_dict(cfg.to_dict()) == cfg
    tower = ImageTower(cfg.image).eval()
    assert not any(k.startswith("blocks.") for k in tower.state_dict())
    assert load_config("tiny-cnn").image.stem == "cnn"
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        pooled, tokens = tower(x)
        assert tokens.shape == (2, 16, 32) and pooled.shape == (2, 32)
        assert torch.equal(pooled, tokens.amax(dim=1))
        y = x.clone()
        y[:, :, 1, 1] = 1 - y[:, :, 1, 1]  # one pixel inside token 0
        changed = (tower.patch_embed(y) - tower.patch_embed(x)).abs().sum(1)[0]
    assert changed[0, 0] > 0


def test_coordinate_channels_let_the_stem_say_where_a_feature_is() -> None:
    """Convolutions are translation-equivariant: on a flat image, two tokens whose receptive
    fields stay clear of the zero padding get the same features. CoordConv's x and y channels
    (`coords`) make them differ, so a pooled feature can carry where its object is."""
    from concord.models.vit import ImageTower, _coordinates

    grid = _coordinates(torch.zeros(1, 3, 4, 5))
    assert grid.shape == (1, 2, 4, 5)
    assert grid[0, 0, 0].tolist() == pytest.approx([-1.0, -0.5, 0.0, 0.5, 1.0])  # x, left->right
    assert grid[0, 1, :, 0].tolist() == pytest.approx([-1.0, -1 / 3, 1 / 3, 1.0])  # y, top->down
    image = {"image_size": 64, "patch_size": 8, "width": 32, "depth": 0, "heads": 2,
             "stem": "cnn", "pool": "max"}  # fmt: skip
    flat = torch.full((1, 3, 64, 64), 0.5)
    features = {}
    for coords in (False, True):
        cfg = TINY.replace(image={**image, "coords": coords})
        assert EncoderConfig.from_dict(cfg.to_dict()).image.coords is coords
        torch.manual_seed(0)
        tower = ImageTower(cfg.image).eval()
        with torch.no_grad():
            tower.pos_embed.zero_()  # only what the stem sees
            tokens = tower(flat)[1][0]  # (64, width), row-major over the 8x8 grid
        features[coords] = (tokens[3 * 8 + 3] - tokens[4 * 8 + 4]).abs().max().item()
    assert features[False] < 1e-5 < 1e-3 < features[True]
    assert load_config("tiny-cnn-coord").image.coords and not load_config("tiny-cnn").image.coords


def test_attention_pool_can_weigh_one_patch_and_round_trips() -> None:
    """With `pool="attn"` the pooled embedding is not the tokens' mean: a learned query can put
    its weight on a few patches (an object) instead of averaging in the background. The config
    round-trips, and a mean-pooled config (every checkpoint before the option) is unchanged."""
    from concord.models.vit import ImageTower

    torch.manual_seed(0)
    cfg = TINY.replace(image={"pool": "attn"})
    assert EncoderConfig.from_dict(cfg.to_dict()) == cfg
    assert not any(k.startswith("pool.") for k in ImageTower(TINY.image).state_dict())
    tower = ImageTower(cfg.image).eval()
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        pooled, tokens = tower(x)
        assert pooled.shape == (3, 32) and tokens.shape == (3, 16, 32)
        assert not torch.allclose(pooled, tokens.mean(dim=1), atol=1e-3)
        # Orthonormal tokens, identity query/key maps, the probe along token 5: the weight
        # goes to token 5 (in the head that sees it) instead of 1/16 each.
        attn = tower.pool.attn
        attn.in_proj_weight[:64].copy_(torch.eye(32).repeat(2, 1))
        attn.in_proj_bias[:64].zero_()
        units = torch.eye(16, 32)[None]
        tower.pool.probe.copy_(20.0 * units[:, 5:6])
        weights = attn(tower.pool.probe, units, units, need_weights=True)[1][0, 0]
    assert int(weights.argmax()) == 5 and float(weights[5]) > 0.4


def test_encode_shapes_and_normalisation() -> None:
    model = tiny_model()
    enc = model.encode_image(torch.rand(3, 3, 16, 16))
    assert enc.pooled.shape == (3, 24) and enc.tokens.shape == (3, 16, 24) and enc.mask.all()
    ids = torch.randint(1, 50, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    txt = model.encode_text(ids, mask)
    assert txt.pooled.shape == (2, 24) and txt.tokens.shape == (2, 7, 24)
    assert torch.equal(txt.mask, mask.bool())
    assert torch.allclose(enc.pooled.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(enc.tokens.norm(dim=-1), torch.ones(3, 16), atol=1e-5)
    assert torch.allclose(txt.tokens.norm(dim=-1), mask.float(), atol=1e-5)  # padding is zero


def test_text_padding_does_not_change_pooled() -> None:
    model = tiny_model()
    ids = torch.randint(1, 50, (1, 5))
    short = model.encode_text(ids, torch.ones(1, 5, dtype=torch.long))
    padded_ids = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    padded = model.encode_text(padded_ids, torch.tensor([[1] * 5 + [0] * 3]))
    assert torch.allclose(short.pooled, padded.pooled, atol=1e-5)


def test_image_tower_rejects_wrong_size() -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\)"):
        tiny_model().encode_image(torch.rand(1, 3, 32, 32))


def test_init_is_deterministic_given_seed() -> None:
    torch.manual_seed(5)
    a = DualEncoder(TINY, tiny_bert())
    torch.manual_seed(5)
    b = DualEncoder(TINY, tiny_bert())
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_logit_scale_starts_at_inverse_temperature_and_is_clamped() -> None:
    model = tiny_model()
    assert model.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.log_logit_scale.fill_(10.0)
    assert model.logit_scale.item() == pytest.approx(100.0)


def test_contrastive_loss_matches_hand_computation_3x3() -> None:
    img = torch.eye(3)
    txt = F.normalize(torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), dim=-1)
    scale = 2.0
    s = scale * img @ txt.T
    i2t = -sum(s[i, i] - math.log(sum(math.exp(s[i, j]) for j in range(3))) for i in range(3)) / 3
    t2i = -sum(s[j, j] - math.log(sum(math.exp(s[i, j]) for i in range(3))) for j in range(3)) / 3
    expected = (i2t + t2i) / 2
    assert contrastive_loss(img, txt, scale).item() == pytest.approx(float(expected), rel=1e-6)


def naive_filip(image: Encoded, text: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
    i2t, t2i = torch.zeros(len(image), len(text)), torch.zeros(len(image), len(text))
    for i in range(len(image)):
        for j in range(len(text)):
            x = image.tokens[i][image.mask[i]]
            y = text.tokens[j][text.mask[j]]
            sim = x @ y.T
            i2t[i, j] = sim.max(dim=1).values.mean()
            t2i[i, j] = sim.max(dim=0).values.mean()
    return i2t, t2i


def test_filip_similarity_matches_naive_loop() -> None:
    torch.manual_seed(0)
    image = random_encoded(3, 5, 8)
    text_mask = torch.tensor(
        [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool
    )
    text = random_encoded(4, 4, 8, text_mask)
    sim = filip_similarity(image, text)
    i2t, t2i = naive_filip(image, text)
    assert sim.image_to_text.shape == (3, 4)
    assert torch.allclose(sim.image_to_text, i2t, atol=1e-6)
    assert torch.allclose(sim.text_to_image, t2i, atol=1e-6)


def test_filip_similarity_chunks_like_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(1)
    image, text = random_encoded(5, 6, 8), random_encoded(4, 3, 8)
    whole = filip_similarity(image, text)
    monkeypatch.setattr("concord.models.losses.CHUNK_ELEMENTS", 1)
    chunked = filip_similarity(image, text)
    assert torch.allclose(whole.image_to_text, chunked.image_to_text)
    assert torch.allclose(whole.text_to_image, chunked.text_to_image)


def test_filip_padding_tokens_cannot_change_the_score() -> None:
    torch.manual_seed(2)
    image = random_encoded(2, 5, 8)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    text = random_encoded(2, 4, 8, mask)
    # padding positions filled with vectors identical to image tokens: would dominate the max
    junk = text.tokens.clone()
    junk[0, 2:] = image.tokens[0, :2]
    junk[1, 3] = image.tokens[1, 0]
    junked = Encoded(text.pooled, junk, mask)
    for a, b in zip(filip_similarity(image, text), filip_similarity(image, junked), strict=True):
        assert torch.allclose(a, b)
    assert filip_loss(image, text, 10.0).item() == pytest.approx(
        filip_loss(image, junked, 10.0).item()
    )


def test_filip_loss_matches_hand_computation() -> None:
    torch.manual_seed(3)
    image, text = random_encoded(3, 4, 6), random_encoded(3, 5, 6)
    i2t, t2i = naive_filip(image, text)
    scale = 5.0
    labels = torch.arange(3)
    expected = (F.cross_entropy(scale * i2t, labels) + F.cross_entropy(scale * t2i.T, labels)) / 2
    assert filip_loss(image, text, scale).item() == pytest.approx(expected.item(), rel=1e-5)


def test_losses_reward_matching_pairs() -> None:
    torch.manual_seed(4)
    image = random_encoded(4, 3, 8)
    matched = Encoded(image.pooled, image.tokens, image.mask)
    shuffled = matched[torch.tensor([1, 2, 3, 0])]
    assert contrastive_loss(image.pooled, matched.pooled, 10.0) < contrastive_loss(
        image.pooled, shuffled.pooled, 10.0
    )
    assert filip_loss(image, matched, 10.0) < filip_loss(image, shuffled, 10.0)


def test_gradients_reach_image_tower_projections_and_scale_but_not_frozen_text() -> None:
    model = tiny_model().train()
    img = model.encode_image(torch.rand(2, 3, 16, 16))
    txt = model.encode_text(torch.randint(1, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long))
    (
        contrastive_loss(img.pooled, txt.pooled, model.logit_scale)
        + filip_loss(img, txt, model.logit_scale)
    ).backward()
    for name, p in model.named_parameters():
        if name.startswith("text_tower."):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_unfrozen_layers_train_only_the_top_layers() -> None:
    model = DualEncoder(TINY.replace(text={"unfrozen_layers": 1}), tiny_bert()).train()
    txt = model.encode_text(torch.randint(1, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long))
    txt.pooled.sum().backward()
    backbone = dict(model.text_tower.backbone.named_parameters())
    assert all(
        (p.grad is not None) == name.startswith("encoder.layer.1.") for name, p in backbone.items()
    )
    assert model.text_tower.backbone.encoder.layer[1].training
    assert not model.text_tower.backbone.encoder.layer[0].training  # frozen: no dropout
    with pytest.raises(ValueError, match="unfrozen_layers=3"):
        DualEncoder(TINY.replace(text={"unfrozen_layers": 3}), tiny_bert())


def test_images_to_tensor_resizes_crops_and_scales() -> None:
    red = Image.new("RGB", (40, 20), (255, 0, 0))
    grey = Image.new("L", (16, 16), 128)
    out = images_to_tensor([red, grey], 16)
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.float32
    assert torch.allclose(out[0, 0], torch.ones(16, 16)) and out[0, 1:].abs().max() == 0
    assert torch.allclose(out[1], torch.full((3, 16, 16), 128 / 255))
    with pytest.raises(ValueError):
        images_to_tensor([], 16)


def test_compatible_projection_is_normalised_and_identity_at_init() -> None:
    x = F.normalize(torch.randn(4, 8), dim=-1)
    assert torch.allclose(CompatibleProjection(8, 8)(x), x, atol=1e-6)
    y = CompatibleProjection(8, 5, hidden_dim=16)(x)
    assert y.shape == (4, 5) and torch.allclose(y.norm(dim=-1), torch.ones(4), atol=1e-5)
    with pytest.raises(ValueError):
        CompatibleProjection(6, 5)(x)
    noisy = add_modality_noise(x, 0.1, torch.Generator().manual_seed(0))
    assert torch.allclose(noisy.norm(dim=-1), torch.ones(4), atol=1e-5) and not torch.allclose(
        noisy, x
    )
