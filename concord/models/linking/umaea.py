"""UMAEA: multimodal entity alignment robust to missing and ambiguous images (pure torch).

`align(g1, g2, seeds, config)` trains on the seed pairs and returns, for every entity of
`g1`, its best `g2` entity under CSLS (k = 3). Entity names are never used (the paper's
"w/o surface" setting): structure, relation and attribute keys and image features only.

Variants (`UMAEAConfig.variant`), so the report's baselines share every line of code:
- "structure": graph + relations + attributes, uniform weights, no image;
- "naive": + images, missing ones filled with noise drawn from the known images'
  per-dimension mean/std (what the baselines' loaders do), uniform weights;
- "weights": the same noise-filled images, MEAformer-style learned entity-level weights,
  confidence-weighted per-modality losses (ECIA), GMI + IIR with learned uncertainty
  weights, no imputation;
- "umaea": "weights" that knows which images are missing (masked, not noise), then
  stage 2-1 trains the VAE imputer and stage 2-2 (CMMI) fills missing images with its
  virtual embeddings and keeps training; the virtual images also score at inference.

Two measured deviations from MEAformer/UMAEA (reports/linker_umaea.md says why):
- the pair score adds each side's weights, sum_m (w_im + w_jm) / 2 * cos_m, instead of
  multiplying them (weighted concatenation);
- the entity-level weights are a learned per-modality prior renormalised over the
  modalities an entity has (plus a prior for virtual images); the content-dependent part
  (`weight_spread`) is off by default because it memorised the seed pairs.
Without imputation a pair in which only one side has an image scores lower than one where
both do, which is why "umaea" fills missing images before scoring rather than masking them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from concord.models.linking.umaea_losses import (
    UncertaintyWeights,
    csls_topk,
    info_nce,
    kl_softmax,
)
from concord.models.linking.umaea_modules import (
    BagEncoder,
    ModalityFusion,
    StructureEncoder,
    VisualImputer,
)

Variant = Literal["structure", "naive", "weights", "umaea"]
VARIANTS: tuple[str, ...] = ("structure", "naive", "weights", "umaea")
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class GraphTensors:
    """One knowledge graph as tensors, in its own id space and vocabularies."""

    num_entities: int
    edges: Tensor  # (E, 2) long (head, tail)
    edge_relations: Tensor  # (E,) long, ids in [0, num_relations)
    num_relations: int
    attributes: Tensor  # (N, A) float bag of attribute keys
    images: Tensor  # (N, Di) float image features, zeros where missing
    has_image: Tensor  # (N,) bool

    def validate(self) -> None:
        """Raise ValueError naming the field that does not fit `num_entities`."""
        n = self.num_entities
        if self.edges.ndim != 2 or self.edges.shape[1] != 2:
            raise ValueError(f"edges must be (E, 2), got {tuple(self.edges.shape)}")
        if self.edge_relations.shape != (self.edges.shape[0],):
            raise ValueError("edge_relations must have one id per edge")
        if self.edges.numel() and (int(self.edges.min()) < 0 or int(self.edges.max()) >= n):
            raise ValueError("edges name an entity outside [0, num_entities)")
        if self.edge_relations.numel() and (int(self.edge_relations.min()) < 0
                                            or int(self.edge_relations.max()) >= self.num_relations):
            raise ValueError("edge_relations outside [0, num_relations)")
        if self.attributes.ndim != 2 or self.attributes.shape[0] != n:
            raise ValueError(f"attributes must be (N={n}, A), got {tuple(self.attributes.shape)}")
        if self.images.ndim != 2 or self.images.shape[0] != n:
            raise ValueError(f"images must be (N={n}, Di), got {tuple(self.images.shape)}")
        if self.has_image.shape != (n,):
            raise ValueError(f"has_image must be (N={n},), got {tuple(self.has_image.shape)}")


@dataclass(frozen=True)
class UMAEAConfig:
    """Hyperparameters; defaults are sized for a CPU run of a few thousand entities."""

    variant: Variant = "umaea"
    dim: int = 64
    gat_layers: int = 1  # the card: 1 layer, 1 head
    stage1_epochs: int = 250  # alignment
    stage2_epochs: int = 50  # 2-1: train the imputer (umaea only)
    stage3_epochs: int = 100  # 2-2: CMMI for umaea; more alignment for the others
    lr: float = 4e-3
    weight_decay: float = 1e-4
    tau: float = 0.1
    latent: int = 32
    csls_k: int = 3
    keep_top: int = 10
    impute_at_inference: bool = True  # False: virtual images train (CMMI) but never score
    weight_spread: float = 0.0  # entity-level (content) share of the modality weights; see README
    seed: int = 0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.dim < 1 or self.csls_k < 1 or self.keep_top < 1:
            raise ValueError("dim, csls_k and keep_top must be >= 1")
        if min(self.stage1_epochs, self.stage2_epochs, self.stage3_epochs) < 0:
            raise ValueError("epochs must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UMAEAConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, eq=False)
class Alignment:
    """The result: for every g1 entity its best g2 entity under CSLS, plus the embeddings.

    `source`/`target` are the fused query/key embeddings whose dot product is the pair
    score (at most 1; see `ModalityFusion`), so a caller can rank any candidate subset
    (`top_k(k, candidates=...)`), e.g. the test pairs of a benchmark, or index the targets
    for nearest-neighbour search.
    `modality_weights` (N1 + N2, M) are the entity-level weights, in `modalities` order.
    """

    best: Tensor  # (N1,) long g2 index
    score: Tensor  # (N1,) float CSLS score of `best`
    source: Tensor  # (N1, D)
    target: Tensor  # (N2, D)
    csls_k: int
    modalities: tuple[str, ...]
    modality_weights: Tensor
    losses: dict[str, float]

    def top_k(self, k: int, candidates: Tensor | None = None,
              sources: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(indices (n, k) into g2, CSLS scores (n, k)), best first.

        `candidates` restricts the g2 side (indices returned are still g2 indices) and
        `sources` the g1 rows; CSLS neighbourhoods are taken within that restriction.
        """
        src = self.source if sources is None else self.source[sources]
        tgt = self.target if candidates is None else self.target[candidates]
        idx, val = csls_topk(src, tgt, self.csls_k, k)
        if candidates is not None:
            idx = candidates[idx]
        return idx, val

    def pairs(self) -> list[tuple[int, int, float]]:
        """(g1 index, g2 index, score) for every g1 entity, best score first."""
        order = torch.argsort(self.score, descending=True)
        return [(int(i), int(self.best[i]), float(self.score[i])) for i in order]


_MODALITIES = ("graph", "relation", "attribute", "image")


def _bag(counts: Tensor) -> Tensor:
    """Counts -> log-scaled, L2-normalised rows (an all-zero row stays zero)."""
    return F.normalize(torch.log1p(counts.float()), dim=-1)


def _relation_bag(g: GraphTensors) -> Tensor:
    r = max(1, g.num_relations)
    bag = torch.zeros(g.num_entities, 2 * r)
    if g.edges.numel():
        ones = torch.ones(g.edges.shape[0])
        bag.index_put_((g.edges[:, 0], g.edge_relations), ones, accumulate=True)
        bag.index_put_((g.edges[:, 1], g.edge_relations + r), ones, accumulate=True)
    return _bag(bag)


def _attribute_bag(g: GraphTensors) -> Tensor:
    if g.attributes.shape[1] == 0:
        return torch.zeros(g.num_entities, 1)
    return _bag(g.attributes.clamp_min(0))


class UMAEAModel(nn.Module):
    """The encoders, fusion and (for "umaea") the imputer over the union of both graphs."""

    def __init__(self, g1: GraphTensors, g2: GraphTensors, config: UMAEAConfig,
                 generator: torch.Generator) -> None:
        super().__init__()
        self.config = config
        self.n1, n2 = g1.num_entities, g2.num_entities
        n = self.n1 + n2
        d = config.dim
        img = torch.cat(_same_width(g1, g2))
        has = torch.cat([g1.has_image, g2.has_image]).bool()
        self.use_image = config.variant != "structure" and bool(has.any()) and img.shape[1] > 0
        self.modalities = _MODALITIES if self.use_image else _MODALITIES[:3]
        m = len(self.modalities)

        e1 = g1.edges.long()
        e2 = g2.edges.long() + self.n1
        heads = torch.cat([e1[:, 0], e2[:, 0]])
        tails = torch.cat([e1[:, 1], e2[:, 1]])
        loops = torch.arange(n)
        self.src = torch.cat([heads, tails, loops])
        self.dst = torch.cat([tails, heads, loops])
        rel = (_relation_bag(g1), _relation_bag(g2))
        att = (_attribute_bag(g1), _attribute_bag(g2))
        self.rel1 = rel[0]
        self.rel2 = rel[1]
        self.att1 = att[0]
        self.att2 = att[1]
        self.structure = StructureEncoder(n, d, config.gat_layers)
        self.relation = BagEncoder((rel[0].shape[1], rel[1].shape[1]), d)
        self.attribute = BagEncoder((att[0].shape[1], att[1].shape[1]), d)
        self.has_image = has
        if self.use_image:
            img = torch.where(has[:, None], F.normalize(img, dim=-1), torch.zeros_like(img))
            if config.variant in ("naive", "weights"):
                img = _noise_fill(img, has, generator)
            self.image_features = img
            self.visual = nn.Linear(img.shape[1], d)
        self.fusion = ModalityFusion(d, m, learned=config.variant in ("weights", "umaea"),
                                     spread=config.weight_spread)
        with_imputer = config.variant == "umaea" and self.use_image
        self.imputer = VisualImputer(3 * d, d, config.latent) if with_imputer else None
        names = ["gmi", *(f"ecia_{x}" for x in self.modalities), "iir"]
        self.uncertainty = UncertaintyWeights(len(names))
        self.loss_names = names
        self.impute = False  # stage 2-2 switches the imputed visual tokens on
        self.imputed: tuple[Tensor, Tensor, Tensor, Tensor, Tensor] | None = None

    def tokens(self) -> tuple[Tensor, Tensor, Tensor]:
        """Modality tokens (N, M, D), which are present (N, M) and which are virtual (N, M):
        the imputer's stand-ins for missing images once CMMI (stage 2-2) is on."""
        parts = [self.structure(self.src, self.dst),
                 self.relation((self.rel1, self.rel2)), self.attribute((self.att1, self.att2))]
        n = parts[0].shape[0]
        present = torch.ones(n, len(self.modalities), dtype=torch.bool)
        virtual = torch.zeros(n, len(self.modalities), dtype=torch.bool)
        self.imputed = None
        if self.use_image:
            vis = self.visual(self.image_features)
            if self.config.variant == "umaea":
                use_virtual = self.training or self.config.impute_at_inference
                if self.impute and self.imputer is not None and use_virtual:
                    h = torch.cat(parts, -1).detach()
                    v_hat, h_hat, kl = self.imputer(h, sample=self.training)
                    self.imputed = (h, vis.detach(), v_hat, h_hat, kl)
                    vis = torch.where(self.has_image[:, None], vis, v_hat)
                    virtual[:, 3] = ~self.has_image
                else:
                    present[:, 3] = self.has_image
            parts.append(vis)
        return torch.stack(parts, dim=1), present, virtual

    def forward(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """-> query, key (N, 2MD), weights (N, M), hidden (N, M*D), tokens, present."""
        tokens, present, virtual = self.tokens()
        query, key, w, hidden = self.fusion(tokens, present, virtual)
        return query, key, w, hidden, tokens, present


def _same_width(g1: GraphTensors, g2: GraphTensors) -> tuple[Tensor, Tensor]:
    """Both image matrices at one width: a graph without any image may come as (N, 0)."""
    a, b = g1.images.float(), g2.images.float()
    if a.shape[1] == b.shape[1]:
        return a, b
    if not bool(g1.has_image.any()):
        return a.new_zeros(a.shape[0], b.shape[1]), b
    if not bool(g2.has_image.any()):
        return a, b.new_zeros(b.shape[0], a.shape[1])
    raise ValueError(f"image feature widths differ: {a.shape[1]} vs {b.shape[1]}")


def _noise_fill(img: Tensor, has: Tensor, generator: torch.Generator) -> Tensor:
    """Missing rows <- N(mean, std) of the known rows, per dimension (the baselines' loader)."""
    known = img[has]
    mean, std = known.mean(0), known.std(0) if known.shape[0] > 1 else torch.ones(img.shape[1])
    noise = mean + std * torch.randn(img.shape, generator=generator)
    return torch.where(has[:, None], img, noise)


def _alignment_losses(model: UMAEAModel, seeds: Tensor, tau: float) -> dict[str, Tensor]:
    query, key, w, hidden, tokens, present = model()
    a, b = seeds[:, 0], seeds[:, 1] + model.n1
    out = {"gmi": info_nce(query[a], key[b], tau, normalize=False)}
    learned = model.fusion.learned
    if learned:
        out["iir"] = info_nce(hidden[a], hidden[b], tau)
    wd = w.detach()
    for j, name in enumerate(model.modalities):
        ok = present[a, j] & present[b, j]
        if int(ok.sum()) < 2:
            continue
        conf = (wd[a, j] * wd[b, j]).sqrt()[ok] if learned else None
        out[f"ecia_{name}"] = info_nce(tokens[a[ok], j], tokens[b[ok], j], tau, conf)
    return out


def _combine(model: UMAEAModel, losses: dict[str, Tensor]) -> Tensor:
    if not model.fusion.learned:  # MCLEA-style plain sum for the uniform-weight baselines
        return torch.stack(list(losses.values())).sum()
    s = model.uncertainty.log_vars
    idx = [model.loss_names.index(k) for k in losses]
    return sum((torch.exp(-s[i]) * losses[k] + s[i] for i, k in zip(idx, losses, strict=True)),
               start=s.new_zeros(()))


def _imputer_losses(model: UMAEAModel, seeds: Tensor, tau: float) -> Tensor:
    """VAE terms: KL(v_hat || v) on entities with images, KL(h_hat || h), seed alignment
    of the virtual embeddings, and the VAE's own KL to the prior. Uses the imputation of
    the last forward (stage 2-2) or runs the encoders without gradient (stage 2-1): the
    imputer learns from the encoders, it does not move them."""
    assert model.imputer is not None
    if model.imputed is None:
        with torch.no_grad():
            tokens, _, _ = model.tokens()
        h, v = tokens[:, :3].reshape(tokens.shape[0], -1), tokens[:, 3]
        v_hat, h_hat, kl = model.imputer(h, sample=True)
    else:
        h, v, v_hat, h_hat, kl = model.imputed
    has = model.has_image
    loss = kl_softmax(v_hat[has], v[has]) + kl_softmax(h_hat, h) + 0.01 * kl
    if seeds.shape[0] >= 2:
        loss = loss + info_nce(v_hat[seeds[:, 0]], v_hat[seeds[:, 1] + model.n1], tau)
    return loss


def _run_stage(name: str, epochs: int, params: list[nn.Parameter], lr: float, wd: float,
               step: Callable[[], Tensor], progress: Progress | None) -> float:
    if epochs == 0 or not params:
        return float("nan")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5 * (1 + math.cos(math.pi * e / epochs)))
    last = float("nan")
    for epoch in range(epochs):
        opt.zero_grad(set_to_none=True)
        loss = step()
        loss.backward()
        opt.step()
        sched.step()
        last = float(loss.detach())
        if progress is not None:
            progress(name, epoch + 1, epochs)
    return last


def align(g1: GraphTensors, g2: GraphTensors, seeds: Tensor, config: UMAEAConfig,
          progress: Progress | None = None) -> Alignment:
    """Train on `seeds` ((S, 2) long: g1 index, g2 index) and align every g1 entity.

    Deterministic for a given `config.seed` (and thread count); the global RNG state is
    left as it was. With fewer than two seeds nothing can be learned and the result is
    the untrained encoders' ranking (the service rejects zero seeds before this).
    """
    g1.validate()
    g2.validate()
    seeds = seeds.long().reshape(-1, 2)
    if seeds.numel() and (int(seeds.min()) < 0 or int(seeds[:, 0].max()) >= g1.num_entities
                          or int(seeds[:, 1].max()) >= g2.num_entities):
        raise ValueError("seeds name an entity outside its graph")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        gen = torch.Generator().manual_seed(config.seed)
        model = UMAEAModel(g1, g2, config, gen)
        losses = _train(model, seeds, config, progress)
        model.eval()
        with torch.no_grad():
            query, key, w, _, _, _ = model()
    src, tgt = query[:model.n1], key[model.n1:]
    idx, val = csls_topk(src, tgt, config.csls_k, 1)
    if idx.shape[1] == 0:
        best, score = torch.full((model.n1,), -1, dtype=torch.long), torch.full((model.n1,), float("nan"))
    else:
        best, score = idx[:, 0], val[:, 0]
    return Alignment(best=best, score=score, source=src, target=tgt, csls_k=config.csls_k,
                     modalities=model.modalities, modality_weights=w, losses=losses)


def _train(model: UMAEAModel, seeds: Tensor, config: UMAEAConfig,
           progress: Progress | None) -> dict[str, float]:
    if seeds.shape[0] < 2:
        return {}
    tau, lr, wd = config.tau, config.lr, config.weight_decay
    model.train()

    def align_step() -> Tensor:
        return _combine(model, _alignment_losses(model, seeds, tau))

    everything = [p for n, p in model.named_parameters() if not n.startswith("imputer.")]
    out = {"stage1": _run_stage("stage1", config.stage1_epochs, everything, lr, wd, align_step, progress)}
    if model.imputer is None:
        out["stage3"] = _run_stage("stage3", config.stage3_epochs, everything, lr / 2, wd, align_step,
                                   progress)
        return out
    imputer = list(model.imputer.parameters())
    out["stage2"] = _run_stage("stage2", config.stage2_epochs, imputer, lr, wd,
                               lambda: _imputer_losses(model, seeds, tau), progress)
    model.impute = True

    def cmmi_step() -> Tensor:
        return align_step() + _imputer_losses(model, seeds, tau)  # same forward's imputation

    out["stage3"] = _run_stage("stage3", config.stage3_epochs, [*everything, *imputer], lr / 2, wd,
                               cmmi_step, progress)
    return out
