"""XBT on synthetic embeddings: the new space is a random rotation of the old one plus noise;
psi trained on text alone must recover new->old retrieval far above the unprojected baseline."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.encoder.evaluate import Scores, retrieval
from pipelines.encoder.xbt import (
    Spaces,
    XbtConfig,
    evaluate_upgrade,
    make_projection,
    train_pair_stage,
    train_text_stage,
)

DIM = 32


def _world(n: int, rotation: torch.Tensor, gen: torch.Generator) -> tuple[Spaces, Spaces]:
    """n items: (images, texts) in the old space and the rotated new space."""
    z = torch.randn(n, DIM, generator=gen)

    def view() -> torch.Tensor:
        return F.normalize(z + 0.4 * torch.randn(n, DIM, generator=gen), dim=-1)

    def new(old: torch.Tensor) -> torch.Tensor:
        return F.normalize(old @ rotation + 0.05 * torch.randn(n, DIM, generator=gen), dim=-1)

    old_img, old_txt = view(), view()
    return Spaces(old_img, new(old_img)), Spaces(old_txt, new(old_txt))


def test_text_only_projection_recovers_retrieval() -> None:
    gen = torch.Generator().manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=gen))
    _, corpus = _world(1500, rotation, gen)  # text only: these items' images are never used
    test_img, test_txt = _world(200, rotation, gen)
    owner = np.arange(200)

    raw = test_txt.new @ test_img.old.T  # new queries straight against the old index
    unprojected = retrieval(Scores(raw.numpy(), raw.numpy()), owner).text_to_image.r1

    psi = make_projection(DIM, DIM, seed=0)
    losses = train_text_stage(
        psi, corpus, XbtConfig(text_steps=100, batch_size=256, lr=5e-3, noise=0.05)
    )
    res = evaluate_upgrade(test_img, test_txt, owner, psi)

    assert losses[-1] < losses[0]
    assert unprojected < 0.1
    assert res.new_old.text_to_image.r1 > 0.5
    assert res.new_old.text_to_image.r1 > 5 * unprojected
    assert res.new_old.image_to_text.r1 > 0.5
    assert res.new_old.text_to_image.r1 > 0.8 * res.old_old.text_to_image.r1


def test_pair_stage_runs_on_few_pairs_and_keeps_compatibility() -> None:
    gen = torch.Generator().manual_seed(1)
    rotation, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=gen))
    _, corpus = _world(600, rotation, gen)
    pair_img, pair_txt = _world(50, rotation, gen)
    test_img, test_txt = _world(100, rotation, gen)
    cfg = XbtConfig(text_steps=60, pair_steps=20, batch_size=128, lr=5e-3, noise=0.05)
    psi = make_projection(DIM, DIM, seed=0)
    train_text_stage(psi, corpus, cfg)
    losses = train_pair_stage(psi, corpus, pair_img, pair_txt, cfg)
    res = evaluate_upgrade(test_img, test_txt, np.arange(100), psi)
    assert all(np.isfinite(losses))
    assert res.new_old.text_to_image.r1 > 0.5
