"""The training pipeline end to end on a tiny generated dataset: 2 steps train, the loss falls on a
fixed batch, the model registers in a tmp sqlite MLflow and loads back with identical embeddings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from concord.checkpoints import build_encoder, load_encoder
from concord.models.config import load_config
from concord.registry import Registry
from pipelines.encoder.data import ensure_dataset, load_retrieval
from pipelines.encoder.embed import TextStateCache, encode_texts
from pipelines.train_encoder import MODEL_NAME, TrainConfig, app, loss_fn, train

# A smaller image tower than `tiny` keeps the overfit check fast; the text tower is the real MiniLM.
SMALL = {"width": 64, "depth": 1, "heads": 2}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_dataset(
        "retrieval", tmp_path_factory.mktemp("data") / "retrieval", "tiny", seed=0
    )


def test_two_step_training_registers_and_loads_back(scenes: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = TrainConfig(
        preset="tiny",
        data=scenes,
        epochs=1,
        batch_size=4,
        train_limit=8,
        out=tmp_path / "model",
        tracking_uri=uri,
        register=True,
        alias="production",
        progress=False,
    )
    res = train(cfg)

    assert len(res.history) == 1 and math.isfinite(res.history[0].loss)
    assert res.version == 1
    registry = Registry(uri, artifacts_dir=tmp_path / "artifacts")
    info = registry.get_alias(MODEL_NAME, "production")
    assert info.version == 1 and info.run_id == res.run_id
    _, local = registry.download(info, tmp_path / "download")
    loaded, tokenizer = load_encoder(local)

    data = load_retrieval(scenes, "test", loaded.image_size)
    texts = [c[0] for c in data.captions]
    tok = tokenizer(texts)
    with torch.no_grad():
        res.model.eval()
        a_img, b_img = res.model.encode_image(data.pixels), loaded.encode_image(data.pixels)
        a_txt = res.model.encode_text(tok.input_ids, tok.attention_mask)
        b_txt = loaded.encode_text(tok.input_ids, tok.attention_mask)
    torch.testing.assert_close(a_img.pooled, b_img.pooled, rtol=0, atol=1e-6)
    torch.testing.assert_close(a_txt.tokens, b_txt.tokens, rtol=0, atol=1e-6)


@pytest.mark.parametrize("loss", ["clip", "filip"])
def test_loss_decreases_on_a_fixed_batch(scenes: Path, loss: str) -> None:
    model, tokenizer = build_encoder(load_config("tiny").replace(image=SMALL), seed=0)
    data = load_retrieval(scenes, "train", model.image_size)
    texts = [c[0] for c in data.captions]
    cache = TextStateCache()
    cache.add(model, tokenizer, texts)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(8):
        value = loss_fn(
            loss,
            model.encode_image(data.pixels),
            encode_texts(model, tokenizer, texts, cache),  # type: ignore[arg-type]
            model.logit_scale,
        )
        opt.zero_grad()
        value.backward()
        opt.step()
        losses.append(float(value.detach()))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("unfrozen", [0, 2])
def test_cached_text_path_equals_encode_text(scenes: Path, unfrozen: int) -> None:
    arch = load_config("tiny").replace(image=SMALL, text={"unfrozen_layers": unfrozen})
    model, tokenizer = build_encoder(arch, seed=0)
    model.eval()
    texts = ["a red circle", "two small blue squares to the left of a green star"]
    cache = TextStateCache()
    cache.add(model, tokenizer, texts)
    tok = tokenizer(texts)
    with torch.no_grad():
        want = model.encode_text(tok.input_ids, tok.attention_mask)
        got = encode_texts(model, tokenizer, texts, cache)
    torch.testing.assert_close(got.pooled, want.pooled)
    torch.testing.assert_close(got.tokens, want.tokens)
    assert torch.equal(got.mask, want.mask)


def test_a_cache_serves_only_models_that_freeze_as_many_layers() -> None:
    frozen, tokenizer = build_encoder(load_config("tiny").replace(image=SMALL), seed=0)
    top2, _ = build_encoder(
        load_config("tiny").replace(image=SMALL, text={"unfrozen_layers": 2}), seed=0
    )
    cache = TextStateCache()
    cache.add(frozen, tokenizer, ["a red circle"])
    with pytest.raises(ValueError, match="frozen layers"):
        encode_texts(top2, tokenizer, ["a red circle"], cache)


def test_a_cache_directory_serves_the_next_run_what_this_one_computed(tmp_path: Path) -> None:
    arch = load_config("tiny").replace(image=SMALL, text={"unfrozen_layers": 1})
    model, tokenizer = build_encoder(arch, seed=0)
    model.eval()
    first = TextStateCache(directory=tmp_path)
    first.add(model, tokenizer, ["a red circle", "a blue square above a green star"])
    first.add(model, tokenizer, ["a red circle", "three stars"])  # one new text: a second shard
    (store,) = tmp_path.iterdir()
    assert store.name.startswith("depth5-") and len(list(store.glob("*.pt"))) == 2
    assert not list(store.glob("*.tmp"))

    again = TextStateCache(directory=tmp_path)  # another run: everything loads, nothing is written
    again.add(model, tokenizer, ["three stars", "a red circle", "a blue square above a green star"])
    assert again.loaded == 3 and len(list(store.glob("*.pt"))) == 2
    for text, state in first.states.items():
        assert torch.equal(again.states[text], state)

    # Another frozen part (other weights under the trainable layer) gets a store of its own.
    other, _ = build_encoder(arch, seed=0)
    with torch.no_grad():
        other.text_tower.backbone.embeddings.word_embeddings.weight.mul_(1.5)
    fresh = TextStateCache(directory=tmp_path)
    fresh.add(other, tokenizer, ["a red circle"])
    assert fresh.loaded == 0 and len(list(tmp_path.iterdir())) == 2
    assert not torch.equal(fresh.states["a red circle"], first.states["a red circle"])


def test_cli_rejects_bad_target_and_loss() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["--on", "kubernetes"]).exit_code != 0
    assert runner.invoke(app, ["--loss", "hinge"]).exit_code != 0
    bad_share = runner.invoke(app, ["--reword", "1.5"])  # a share of captions: 0 to 1
    assert bad_share.exit_code == 2 and "--reword" in bad_share.output
    # settings that cannot act together: a usage error naming the setting, before any work
    alone = runner.invoke(
        app, ["--recipe", "concord", "--caption-relations", "2", "--text-cache", "none"]
    )
    assert alone.exit_code == 2 and "caption_relations" in alone.output  # rich may wrap the rest
