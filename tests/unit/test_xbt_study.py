"""The XBT study on synthetic embeddings (the old space is a random linear map of the new one
plus noise, texts and images are two noisy views of one latent): Procrustes and psi bring new
queries back to the old index far above a shuffled control, σ=0 and σ>0 both run, the grid has
one row set per variant, and the CLI writes its report for two toy encoders."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import typer
from typer.testing import CliRunner

from pipelines.encoder.xbt import (
    Spaces,
    XbtConfig,
    evaluate_mapping,
    evaluate_upgrade,
    make_projection,
    procrustes,
    train_text_stage,
)
from pipelines.encoder.xbt_study import (
    BACKFILL,
    COMPAT,
    OLD_OLD,
    PROCRUSTES,
    R1,
    SHARE,
    Embedded,
    Grid,
    StudyInfo,
    choose_pairs,
    main,
    notes,
    pairs_only_method,
    run_grid,
    text_only_method,
    text_pairs_method,
    upgrade_methods,
)

torch.set_num_threads(1)

NEW_DIM, OLD_DIM, LATENT = 24, 16, 12
OLD_NOISE = 0.15  # the old model is the noisier view: the new one is worth upgrading to
FAST = XbtConfig(text_steps=80, pair_steps=40, batch_size=128, lr=5e-3, noise=0.05)


class World:
    """A latent per item; each modality of each model sees it through its own linear map + noise,
    and the old model is a random linear map of the new one plus (more) noise."""

    def __init__(self, seed: int = 0) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.lift = torch.randn(LATENT, NEW_DIM, generator=self.gen)
        self.gap = 0.3 * torch.randn(1, NEW_DIM, generator=self.gen)  # a modality offset for images
        self.to_old = torch.randn(NEW_DIM, OLD_DIM, generator=self.gen) / NEW_DIM**0.5

    def view(self, z: torch.Tensor, image: bool) -> Spaces:
        new = z @ self.lift + 0.3 * torch.randn(len(z), NEW_DIM, generator=self.gen)
        new = F.normalize(new + (self.gap if image else 0.0), dim=-1)
        old = new @ self.to_old + OLD_NOISE * torch.randn(len(z), OLD_DIM, generator=self.gen)
        return Spaces(F.normalize(old, dim=-1), new)

    def latent(self, n: int) -> torch.Tensor:
        return torch.randn(n, LATENT, generator=self.gen)


def _cat(*parts: Spaces) -> Spaces:
    return Spaces(torch.cat([p.old for p in parts]), torch.cat([p.new for p in parts]))


def synthetic(seed: int = 0, corpus: int = 800, train: int = 120, test: int = 60) -> Embedded:
    w = World(seed)
    z_train, z_test = w.latent(train), w.latent(test)
    train_caption = _cat(w.view(z_train, False), w.view(z_train, False))  # 2 captions per image
    test_text = _cat(w.view(z_test, False), w.view(z_test, False))
    return Embedded(
        corpus=_cat(w.view(w.latent(corpus - 2 * train), False), train_caption),
        train_image=w.view(z_train, True),
        train_caption=train_caption,
        train_owner=np.tile(np.arange(train), 2),
        test_image=w.view(z_test, True),
        test_text=test_text,
        test_owner=np.tile(np.arange(test), 2),
        drafted=corpus - 2 * train,
        seconds=0.0,
    )


def _shuffled(s: Spaces, seed: int = 1) -> Spaces:
    """The same texts with the new rows paired to the wrong old rows."""
    perm = torch.randperm(len(s.new), generator=torch.Generator().manual_seed(seed))
    return Spaces(s.old, s.new[perm])


def _r1(res: object) -> tuple[float, float]:
    new_old = res.new_old  # type: ignore[attr-defined]
    return new_old.text_to_image.r1, new_old.image_to_text.r1


def test_procrustes_is_orthogonal_and_maps_new_queries_to_the_old_index() -> None:
    emb = synthetic()
    w = procrustes(emb.corpus.new, emb.corpus.old)
    assert w.shape == (NEW_DIM, OLD_DIM)
    torch.testing.assert_close(
        w.T @ w, torch.eye(OLD_DIM), atol=1e-5, rtol=0
    )  # orthonormal columns
    fit = evaluate_mapping(emb.test_image, emb.test_text, emb.test_owner, lambda x: x @ w)
    ws = procrustes(_shuffled(emb.corpus).new, emb.corpus.old)
    control = evaluate_mapping(emb.test_image, emb.test_text, emb.test_owner, lambda x: x @ ws)
    t2i, i2t = _r1(fit)
    c_t2i, c_i2t = _r1(control)
    assert t2i > c_t2i + 0.3 and i2t > c_i2t + 0.3
    # the other way round (old_dim > new_dim) has orthonormal rows
    wt = procrustes(emb.corpus.old, emb.corpus.new)
    torch.testing.assert_close(wt @ wt.T, torch.eye(OLD_DIM), atol=1e-5, rtol=0)


@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_text_only_psi_beats_a_shuffled_control_with_and_without_noise(noise: float) -> None:
    emb = synthetic()
    cfg = replace(FAST, noise=noise)
    results = []
    for corpus in (emb.corpus, _shuffled(emb.corpus)):
        psi = make_projection(NEW_DIM, OLD_DIM, seed=0)
        losses = train_text_stage(psi, corpus, cfg)
        assert all(np.isfinite(losses))
        results.append(_r1(evaluate_upgrade(emb.test_image, emb.test_text, emb.test_owner, psi)))
    (t2i, i2t), (c_t2i, c_i2t) = results
    assert t2i > c_t2i + 0.3 and i2t > c_i2t + 0.3


def test_pairs_are_nested_and_row_aligned() -> None:
    emb = synthetic()
    small, _ = choose_pairs(emb, 10, seed=0)
    big_img, big_cap = choose_pairs(emb, 50, seed=0)
    torch.testing.assert_close(big_img.new[:10], small.new)
    # each pair's caption belongs to its image: same latent, so high cosine in the new space
    pos = (big_img.new * big_cap.new).sum(-1).mean()
    neg = (big_img.new * big_cap.new.roll(1, 0)).sum(-1).mean()
    assert pos > neg + 0.2


def test_the_grid_has_every_variant_over_seeds_and_recovers_compatibility() -> None:
    emb = synthetic()
    grid = Grid(seeds=(0, 1), noises=(0.0, 0.1), pairs=(10, 1000), hidden=(0, 16), xbt=FAST)
    rows = run_grid(emb, grid)
    methods = upgrade_methods(rows)
    want = [PROCRUSTES]
    for h in (0, 16):
        for s in (0.0, 0.1):
            want += [
                text_only_method(h, s),
                text_pairs_method(h, s, 10),
                text_pairs_method(h, s, 120),
            ]
        want += [pairs_only_method(h, 10), pairs_only_method(h, 120)]  # 1000 capped at train size
    assert methods == want
    at = {(r.metric, r.split, r.method): r for r in rows}
    for m in (OLD_OLD, BACKFILL, *want):
        for split in ("test t2i", "test i2t"):
            for metric in (R1, "R@5"):
                assert (metric, split, m) in at
    seeded = at[(R1, "test t2i", text_only_method(0, 0.1))]
    assert seeded.seeds == 2 and seeded.spread is not None
    assert at[(R1, "test t2i", OLD_OLD)].seeds is None  # seed-free rows are not averaged
    # old is a linear map of new: a linear psi on text reaches the old index from both modalities
    for split in ("test t2i", "test i2t"):
        assert at[(COMPAT, split, text_pairs_method(0, 0.1, 120))].value >= 0.5
        assert np.isfinite(at[(SHARE, split, text_pairs_method(0, 0.1, 120))].value)
    info = StudyInfo(
        Path("old"),
        Path("new"),
        "the old one",
        "the new one",
        Path("data"),
        800,
        560,
        120,
        60,
        120,
        {},
    )
    text = notes(rows, grid, info, ["xbt/pairs_curve.png"])
    assert text.startswith("**Goal: new->old above old->old, at least half of the backfill gain**")
    assert "LoRA" in text and "`old`: the old one" in text
    assert text.count("| XBT ") == 12  # one verdict row per XBT variant
    assert "**holds**" in text or "**fails**" in text


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two untrained toy encoders (different seeds) and a tiny retrieval dataset."""
    from concord.checkpoints import build_encoder, save_encoder
    from concord.models.config import load_config
    from pipelines.encoder.data import ensure_dataset

    root = tmp_path_factory.mktemp("xbt-study")
    cfg = load_config("tiny-conv").replace(
        image={"width": 32, "depth": 1, "heads": 2}, text={"unfrozen_layers": 1}
    )
    dirs = []
    for seed in (0, 1):
        model, tokenizer = build_encoder(cfg, seed=seed)
        save_encoder(model, tokenizer, root / f"enc{seed}")
        dirs.append(root / f"enc{seed}")
    return dirs[0], dirs[1], ensure_dataset("retrieval", root / "retrieval", "tiny", seed=0)


def test_the_cli_writes_markdown_and_json(toy: tuple[Path, Path, Path], tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(main)
    old, new, data = toy
    args = [
        "--old", str(old), "--new", str(new), "--data", str(data), "--seeds", "0",
        "--noises", "0,0.1", "--pairs", "4,100", "--hidden", "0", "--corpus", "60",
        "--text-steps", "5", "--pair-steps", "3", "--out-dir", str(tmp_path), "--name", "xbt",
        "--old-about", "toy old", "--new-about", "toy new",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    md = (tmp_path / "xbt.md").read_text()
    assert "toy old" in md and "toy new" in md and "LoRA" in md
    rows = json.loads((tmp_path / "xbt.json").read_text())["rows"]
    assert {r["method"] for r in rows} >= {OLD_OLD, BACKFILL, PROCRUSTES, pairs_only_method(0, 4)}
    assert (tmp_path / "xbt" / "pairs_curve.png").is_file()
