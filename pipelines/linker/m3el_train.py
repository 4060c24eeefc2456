"""Train M3EL on cached features against the whole KB (every KB entity is a negative in every
step, so the ~7 same-name entities always compete) and evaluate by a full-KB ranking."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from concord.models.linking import M3EL, EntityFeatures, M3ELConfig, MentionFeatures
from pipelines.linker.m3el_data import MentionSet

KS = (1, 3, 10)


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 300  # optimisation steps, whatever the training-set size (fair at 20%)
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    eval_every: int = 100  # steps between validation checks (the best val MRR is kept)
    seed: int = 0
    # Entities scored per step: the batch's gold entities, each mention's `hard` nearest by the
    # model's own coarse (global) scores, then random ones up to `candidates` (0: the whole KB).
    # A 400-entity KB at batch 64 costs ~6x more per step than 128 candidates at batch 32.
    candidates: int = 128
    hard: int = 4


@dataclass
class TrainOutcome:
    model: M3EL
    best_step: int
    val_mrr: float
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank of each gold entity in its row; ties count against it (a tie with k others
    ranks k + 1), so a constant or -inf row ranks last."""
    gold = scores.gather(1, targets.unsqueeze(1))
    return (scores >= gold).sum(1)


def metrics(r: torch.Tensor) -> dict[str, float]:
    """Hits@K and MRR from ranks."""
    if r.numel() == 0:
        return {f"Hits@{k}": float("nan") for k in KS} | {"MRR": float("nan")}
    out = {f"Hits@{k}": float((r <= k).float().mean()) for k in KS}
    out["MRR"] = float((1.0 / r.float()).mean())
    return out


@torch.no_grad()
def rank_all(
    model: M3EL, mentions: MentionSet, kb: EntityFeatures, chunk: int = 128
) -> torch.Tensor:
    """Ranks of every mention's gold entity over the whole KB."""
    model.eval()
    out = []
    for i in range(0, len(mentions), chunk):
        part = mentions.features[i : i + chunk]
        scores = model.match(part, kb).final
        out.append(ranks(scores, mentions.targets[i : i + chunk]))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def evaluate(model: M3EL, mentions: MentionSet, kb: EntityFeatures) -> dict[str, float]:
    """Hits@1/3/10 and MRR overall, plus Hits@1 / MRR on mentions with and without an image
    and on occluded ones (the report's breakdown)."""
    r = rank_all(model, mentions, kb)
    out = metrics(r)
    has_image = mentions.features.has_image
    for name, mask in (
        ("with image", has_image),
        ("no image", ~has_image),
        ("occluded", mentions.occluded),
    ):
        sub = metrics(r[mask])
        out[f"Hits@1 ({name})"] = sub["Hits@1"]
        out[f"MRR ({name})"] = sub["MRR"]
    return out


@torch.no_grad()
def candidate_set(
    model: M3EL,
    batch: MentionFeatures,
    targets: torch.Tensor,
    kb: EntityFeatures,
    settings: TrainSettings,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The KB rows to score this step and the targets re-indexed into them."""
    n = len(kb)
    if settings.candidates <= 0 or settings.candidates >= n:
        return torch.arange(n), targets
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[targets] = True
    if settings.hard > 0:
        cfg = model.config
        coarse = torch.zeros(len(batch), n)
        if cfg.uses_text:
            coarse += model.coarse_text(batch.text_global) @ model.coarse_text(kb.text_global).T
        if cfg.uses_image:
            both = batch.has_image[:, None] & kb.has_image[None, :]
            image = model.coarse_image(batch.image_global) @ model.coarse_image(kb.image_global).T
            coarse += torch.where(both, image, torch.zeros_like(image))
        coarse[torch.arange(len(batch)), targets] = float("-inf")
        chosen[coarse.topk(min(settings.hard, n - 1), dim=1).indices.flatten()] = True
    missing = settings.candidates - int(chosen.sum())
    if missing > 0:
        rest = (~chosen).nonzero().squeeze(1)
        chosen[rest[torch.randperm(len(rest), generator=gen)[:missing]]] = True
    cand = chosen.nonzero().squeeze(1)
    remap = torch.full((n,), -1, dtype=torch.long)
    remap[cand] = torch.arange(len(cand))
    return cand, remap[targets]


def train(
    config: M3ELConfig,
    train_set: MentionSet,
    kb: EntityFeatures,
    settings: TrainSettings,
    val_set: MentionSet | None = None,
    on_eval: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainOutcome:
    """Train one M3EL (seeded) for `settings.steps` steps of full-KB cross-entropy; keep the
    weights with the best validation MRR (the last ones without a val set)."""
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(settings.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = M3EL(config, int(kb.text_global.shape[1]), int(kb.image_global.shape[1]))
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    rest = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": settings.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=settings.lr,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + np.cos(np.pi * s / settings.steps))
    )
    n = len(train_set)
    order = torch.randperm(n, generator=gen)
    cursor = 0
    best = (-1.0, 0, {k: v.detach().clone() for k, v in model.state_dict().items()})
    history: list[dict[str, float]] = []
    for step in range(1, settings.steps + 1):
        model.train()
        if cursor + settings.batch_size > n:
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor : cursor + settings.batch_size]
        cursor += settings.batch_size
        batch = train_set.features[idx]
        cand, targets = candidate_set(model, batch, train_set.targets[idx], kb, settings, gen)
        out = model.loss(batch, kb[cand], targets)
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        if val_set is not None and (step % settings.eval_every == 0 or step == settings.steps):
            val = metrics(rank_all(model, val_set, kb))
            record = {"step": float(step), "loss": float(out.total.detach())}
            record |= {f"val {k}": v for k, v in val.items()}
            history.append(record)
            if on_eval:
                on_eval(step, record)
            if val["MRR"] > best[0]:
                best = (
                    val["MRR"],
                    step,
                    {k: v.detach().clone() for k, v in model.state_dict().items()},
                )
    if val_set is not None:
        model.load_state_dict(best[2])
    model.eval()
    return TrainOutcome(
        model, best[1] or settings.steps, best[0], time.perf_counter() - start, history
    )
