"""UMAEA (concord.models.linking.umaea): alignment on tiny planted graphs, robustness to
missing images / empty graphs / size mismatch, determinism and CSLS."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from concord.models.linking.umaea import VARIANTS, GraphTensors, UMAEAConfig, align
from concord.models.linking.umaea_losses import csls_matrix, csls_topk


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny graphs: threads only add contention on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


FAST = {"dim": 32, "stage1_epochs": 60, "stage2_epochs": 10, "stage3_epochs": 20}


def _planted(n: int = 60, missing: float = 0.5,
             seed: int = 0) -> tuple[GraphTensors, GraphTensors, torch.Tensor]:
    """Two copies of one random graph, the second with permuted ids, renamed relations and
    noisy images; returns (g1, g2, gold (n, 2))."""
    g = torch.Generator().manual_seed(seed)
    edges = torch.randint(0, n, (3 * n, 2), generator=g)
    rels = torch.randint(0, 4, (3 * n,), generator=g)
    attrs = (torch.rand(n, 6, generator=g) < 0.4).float()
    img = torch.randn(n, 8, generator=g)
    perm = torch.randperm(n, generator=g)  # g2 entity j is g1 entity perm[j]
    new = torch.argsort(perm)  # g1 entity i is g2 entity new[i]
    has1, has2 = torch.rand(n, generator=g) > missing, torch.rand(n, generator=g) > missing
    g1 = GraphTensors(n, edges, rels, 4, attrs, img * has1[:, None], has1)
    img2 = img[perm] + 0.1 * torch.randn(n, 8, generator=g)
    g2 = GraphTensors(n, new[edges], (rels + 1) % 4, 4, attrs[perm], img2 * has2[:, None], has2)
    return g1, g2, torch.stack([torch.arange(n), new], 1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_alignment_beats_chance_on_a_planted_pair(variant: str) -> None:
    g1, g2, gold = _planted()
    seeds, test = gold[:20], gold[20:]
    out = align(g1, g2, seeds, UMAEAConfig(variant=variant, **FAST))  # type: ignore[arg-type]
    assert out.best.shape == (60,) and out.score.shape == (60,)
    hits = (out.best[test[:, 0]] == test[:, 1]).float().mean().item()
    assert hits > 0.3  # chance is 1/60
    idx, val = out.top_k(5)
    assert idx.shape == (60, 5) and torch.all(val[:, :-1] >= val[:, 1:])
    assert torch.equal(idx[:, 0], out.best)
    w = out.modality_weights
    assert w.shape[0] == 120 and torch.allclose(w.sum(1), torch.ones(120), atol=1e-5)


def test_deterministic_given_seed_and_leaves_global_rng_alone() -> None:
    g1, g2, gold = _planted(40)
    cfg = UMAEAConfig(**FAST)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = align(g1, g2, gold[:10], cfg)
    after = torch.rand(1)
    b = align(g1, g2, gold[:10], cfg)
    assert torch.equal(a.best, b.best) and torch.allclose(a.score, b.score)
    assert torch.equal(before, after)


def test_robust_to_missing_images_empty_parts_and_size_mismatch() -> None:
    g = torch.Generator().manual_seed(1)
    no_edges = GraphTensors(7, torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, dtype=torch.long), 0,
                            torch.zeros(7, 0), torch.zeros(7, 0), torch.zeros(7, dtype=torch.bool))
    edges, rels = torch.randint(0, 12, (20, 2), generator=g), torch.randint(0, 3, (20,), generator=g)
    other = GraphTensors(12, edges, rels, 3, torch.rand(12, 5, generator=g), torch.zeros(12, 4),
                         torch.zeros(12, dtype=torch.bool))
    seeds = torch.tensor([[0, 3], [1, 4], [2, 5]])
    for variant in VARIANTS:
        out = align(no_edges, other, seeds, UMAEAConfig(variant=variant, **FAST))  # type: ignore[arg-type]
        assert out.best.shape == (7,) and bool(((out.best >= 0) & (out.best < 12)).all())
        assert torch.isfinite(out.score).all()
        assert out.modalities == ("graph", "relation", "attribute")  # no image anywhere
    out = align(other, no_edges, torch.zeros(0, 2, dtype=torch.long), UMAEAConfig(**FAST))
    assert out.best.shape == (12,) and out.top_k(20)[0].shape == (12, 7)


def test_all_images_missing_on_one_side_and_bad_seeds() -> None:
    g1, g2, gold = _planted(30, missing=0.0)
    blind = GraphTensors(g2.num_entities, g2.edges, g2.edge_relations, g2.num_relations, g2.attributes,
                         torch.zeros_like(g2.images), torch.zeros(30, dtype=torch.bool))
    out = align(g1, blind, gold[:10], UMAEAConfig(**FAST))
    assert torch.isfinite(out.source).all() and torch.isfinite(out.target).all()
    with pytest.raises(ValueError, match="seeds"):
        align(g1, g2, torch.tensor([[0, 30]]), UMAEAConfig(**FAST))
    with pytest.raises(ValueError, match="variant"):
        UMAEAConfig(variant="nope")  # type: ignore[arg-type]
    assert UMAEAConfig.from_dict(UMAEAConfig(seed=4).to_dict()) == UMAEAConfig(seed=4)


def test_csls_top1_matches_the_full_matrix() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(9, 5, generator=g), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(13, 5, generator=g), dim=-1)
    idx, val = csls_topk(a, b, 3, 4, chunk=4)
    full = csls_matrix(a, b, 3)
    assert torch.equal(idx[:, 0], full.argmax(1))
    assert torch.allclose(val, full.topk(4, dim=1).values, atol=1e-6)
