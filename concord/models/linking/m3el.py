"""M3EL (KDD 2025, method card 3): multi-level matching of a mention (sentence + optional
image) against KB entities, on frozen encoder features.

Matchers, each a scaled cosine so their scores live on one scale and can be averaged:
- text coarse: mention text global vs entity text global (projected);
- text fine: the entity's text global attends (multi-head, scaled dot product) over the
  mention's token states; the context is scored against the entity;
- visual: coarse (global vs global) and fine (entity image global over mention patches),
  averaged, as the paper's image intra-modal matcher does;
- cross-modal, bidirectional: text->visual (the text global attends over the image patches)
  and visual->text (the image global attends over the text tokens), each fused by a gate and
  a tanh-gated residual of its query, on both sides; score = mention context . entity context.
  text->visual applies wherever the ENTITY has an image (a mention without an image brings its
  text alone, so its words are still checked against the entity's image); visual->text needs
  both images.
A matcher that does not apply is NaN (visual: either side without an image; cross-modal: the
entity without one); `final` is the mean of the applicable ones, so a mention without an image
still links.

Entities are read as global vectors only (a KB is vectors in Qdrant), so an entity's "local"
side is its single global vector. Intra-modal contrastive learning (mention-entity logits
weighted 1.0 plus same-modality entity-entity / mention-mention logits weighted 0.8, T=0.03)
shapes the projected globals, as the repo's WeightedContrastiveLoss does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from concord.models.linking.features import EntityFeatures, MentionFeatures

MATCHERS = ("text_coarse", "text_fine", "visual", "cross_modal")
MAX_SCALE = 100.0
VARIANTS = ("full", "no_cl", "one_direction", "text_only", "image_only", "global_only")


@dataclass(frozen=True)
class M3ELConfig:
    """Sizes, loss weights and the ablation switches (all False = the full model)."""

    hidden: int = 64  # the paper uses 96 on CLIP features; M3EL-lite uses 64
    heads: int = 4  # attention heads of the fine and cross-modal matchers
    init_scale: float = 10.0  # initial logit scale of every matcher's cosine
    cl_temperature: float = 0.03
    cl_inter_weight: float = 1.0  # mention-entity logits in the contrastive term
    cl_intra_weight: float = 0.8  # same-modality entity-entity / mention-mention logits
    cl_weight: float = 1.0
    dropout: float = 0.0
    no_cl: bool = False  # ablation: drop the intra-modal contrastive term
    one_direction: bool = False  # ablation: cross-modal text->visual only
    text_only: bool = False  # ablation: text matchers only
    image_only: bool = False  # ablation: visual matcher only
    global_only: bool = False  # ablation / baseline: coarse global-global matchers only

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        if self.text_only and self.image_only:
            raise ValueError("text_only and image_only exclude each other")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> M3ELConfig:
        """Raises: ValueError naming unknown keys (a package from a newer Concord)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown M3EL config keys: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def variant(cls, name: str, **overrides: Any) -> M3ELConfig:
        """The full model or one ablation by name (`VARIANTS`)."""
        if name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        switches = {} if name == "full" else {name: True}
        return cls(**{**switches, **overrides})

    @property
    def uses_text(self) -> bool:
        return not self.image_only

    @property
    def uses_image(self) -> bool:
        return not self.text_only

    @property
    def uses_cross(self) -> bool:
        return not (self.text_only or self.image_only or self.global_only)


@dataclass(frozen=True, eq=False)
class MatchScores:
    """(B, N) scores per matcher; NaN where a matcher does not apply. `final` is the mean of
    the applicable matchers, -inf where none applies (only in the unimodal ablations)."""

    text_coarse: Tensor
    text_fine: Tensor
    visual: Tensor
    cross_modal: Tensor
    final: Tensor

    def matchers(self) -> dict[str, Tensor]:
        """Returns: the four matcher score tensors by name (`MATCHERS`)."""
        return {name: getattr(self, name) for name in MATCHERS}


@dataclass(frozen=True)
class LossParts:
    total: Tensor  # what to backpropagate
    parts: dict[str, float]  # each term's value, for logging


class FineMatcher(nn.Module):
    """Global-to-local: the entity global (query) attends over the mention's local tokens; the
    LayerNormed context is compared with the entity's own projected global."""

    def __init__(self, in_dim: int, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(in_dim, hidden)
        self.key = nn.Linear(in_dim, hidden)
        self.value = nn.Linear(in_dim, hidden)
        self.anchor = nn.Linear(in_dim, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, tokens: Tensor, mask: Tensor, entity: Tensor) -> Tensor:
        """tokens (B, L, D), mask (B, L), entity (N, D) -> cosine (B, N)."""
        b, length, _ = tokens.shape
        n, h = entity.shape[0], self.heads
        q = self.query(entity).view(n, h, -1).transpose(0, 1)  # (h, N, d)
        k = self.key(tokens).view(b, length, h, -1).permute(0, 2, 3, 1)  # (B, h, d, L)
        v = self.value(tokens).view(b, length, h, -1).transpose(1, 2)  # (B, h, L, d)
        logits = torch.matmul(q.unsqueeze(0) / math.sqrt(q.shape[-1]), k)  # (B, h, N, L)
        bias = torch.zeros(mask.shape, dtype=logits.dtype, device=logits.device)
        bias = bias.masked_fill(~mask, float("-inf"))[:, None, None, :]
        context = torch.matmul((logits + bias).softmax(-1), v)  # (B, h, N, d)
        context = context.transpose(1, 2).reshape(b, n, -1)
        context = F.normalize(self.norm(context), dim=-1)
        anchor = F.normalize(self.anchor(entity), dim=-1)
        return (context * anchor.unsqueeze(0)).sum(-1)


class CrossDirection(nn.Module):
    """One direction of cross-modal matching: a query global of one modality attends over the
    local tokens of the other (MatchModule), the two are fused by a sigmoid gate
    (FusionModule), and a tanh gate adds back the query (the paper's gated residual)."""

    def __init__(self, query_dim: int, local_dim: int, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query_proj = nn.Linear(query_dim, hidden)
        self.local_proj = nn.Linear(local_dim, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.fuse = nn.Linear(hidden, hidden)
        self.gate = nn.Linear(hidden, 1)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, query: Tensor, local: Tensor, mask: Tensor | None) -> Tensor:
        """query (B, Dq), local (B, L, Dl), mask (B, L) or None -> normalised context (B, H).

        A row whose mask is all False (no local side, e.g. a mention without an image) attends
        to nothing: its context is the gated query alone."""
        b, length, _ = local.shape
        h = self.heads
        q = self.query_proj(query)
        loc = self.local_proj(local)
        k = self.key(loc).view(b, length, h, -1)
        v = self.value(loc).view(b, length, h, -1)
        logits = torch.einsum("bhd,blhd->bhl", q.view(b, h, -1), k) / math.sqrt(k.shape[-1])
        present = torch.ones(b, dtype=torch.bool, device=q.device)
        if mask is not None:
            present = mask.any(1)
            hide = ~mask & present[:, None]  # an empty row attends uniformly, then is zeroed
            logits = logits.masked_fill(hide[:, None, :], float("-inf"))
        attended = F.relu(torch.einsum("bhl,blhd->bhd", logits.softmax(-1), v).reshape(b, -1))
        attended = attended * present[:, None].to(attended.dtype)
        mix = torch.sigmoid(self.fuse(q) + self.fuse(attended))
        fused = q * mix + attended * (1 - mix)
        context = self.norm(torch.tanh(self.gate(q)) * q + fused)
        return F.normalize(context, dim=-1)


class M3EL(nn.Module):
    """The matcher over frozen features (see the module docstring).

    Args:
        config: sizes and ablation switches.
        text_dim: Dt of the text features (the encoder's embed size).
        image_dim: Di of the image features.
    """

    def __init__(self, config: M3ELConfig, text_dim: int, image_dim: int) -> None:
        super().__init__()
        self.config, self.text_dim, self.image_dim = config, text_dim, image_dim
        hid, heads = config.hidden, config.heads
        self.text_global_norm = nn.LayerNorm(text_dim)
        self.text_token_norm = nn.LayerNorm(text_dim)
        self.image_global_norm = nn.LayerNorm(image_dim)
        self.image_patch_norm = nn.LayerNorm(image_dim)
        self.text_proj = nn.Linear(text_dim, hid)
        self.image_proj = nn.Linear(image_dim, hid)
        self.text_fine = FineMatcher(text_dim, hid, heads)
        self.image_fine = FineMatcher(image_dim, hid, heads)
        self.text_to_visual = CrossDirection(text_dim, image_dim, hid, heads)
        self.visual_to_text = CrossDirection(image_dim, text_dim, hid, heads)
        self.log_scales = nn.Parameter(torch.full((len(MATCHERS),), math.log(config.init_scale)))
        self.dropout = nn.Dropout(config.dropout)

    @property
    def embed_dim(self) -> int:
        """Size of the fused ANN vector: text, image and two cross-modal parts of `hidden`."""
        return 4 * self.config.hidden

    def scales(self) -> Tensor:
        """(4,) positive logit scales, one per matcher, clamped to [1, 100]."""
        return self.log_scales.clamp(0.0, math.log(MAX_SCALE)).exp()

    # -- the pieces every matcher shares -------------------------------------------------------
    def _text_global(self, x: Tensor) -> Tensor:
        return self.text_global_norm(x)

    def _image_global(self, x: Tensor) -> Tensor:
        return self.image_global_norm(x)

    def coarse_text(self, x: Tensor) -> Tensor:
        """(B, Dt) text globals -> (B, H) normalised coarse vectors (also the CL space)."""
        return F.normalize(self.text_proj(self.dropout(self._text_global(x))), dim=-1)

    def coarse_image(self, x: Tensor) -> Tensor:
        """(B, Di) image globals -> (B, H) normalised coarse vectors (also the CL space)."""
        return F.normalize(self.image_proj(self.dropout(self._image_global(x))), dim=-1)

    def _mention_contexts(self, m: MentionFeatures) -> list[Tensor]:
        """Per cross-modal direction the mention contexts (B, H): its text global over its
        image patches, and its image global over its text tokens."""
        tg_m, ig_m = self._text_global(m.text_global), self._image_global(m.image_global)
        patches = self.image_patch_norm(m.image_patches)
        patch_mask = m.has_image.to(patches.device)[:, None].expand(patches.shape[:2])
        contexts = [self.text_to_visual(tg_m, patches, patch_mask)]
        if not self.config.one_direction:
            tokens = self.text_token_norm(m.text_tokens)
            contexts.append(self.visual_to_text(ig_m, tokens, m.text_mask))
        return contexts

    def _entity_contexts(self, e: EntityFeatures) -> list[Tensor]:
        """Per direction the entity contexts (N, H): an entity's local side is its single
        global vector of the other modality."""
        tg_e, ig_e = self._text_global(e.text_global), self._image_global(e.image_global)
        contexts = [self.text_to_visual(tg_e, ig_e.unsqueeze(1), None)]
        if not self.config.one_direction:
            contexts.append(self.visual_to_text(ig_e, tg_e.unsqueeze(1), None))
        return contexts

    # -- scoring -------------------------------------------------------------------------------
    def match(self, mentions: MentionFeatures, entities: EntityFeatures) -> MatchScores:
        """Score B mentions against N entities.

        Returns:
            MatchScores of (B, N) tensors; NaN where a matcher does not apply (a side has no
            image, or the config switches the matcher off).
        """
        cfg, s = self.config, self.scales()
        b, n = len(mentions), len(entities)
        dev = mentions.text_global.device
        nan = torch.full((b, n), float("nan"), device=dev)
        both = mentions.has_image.to(dev)[:, None] & entities.has_image.to(dev)[None, :]

        text_coarse = text_fine = visual = cross = nan
        if cfg.uses_text:
            text_coarse = (
                s[0]
                * self.coarse_text(mentions.text_global)
                @ self.coarse_text(entities.text_global).T
            )
            if not cfg.global_only:
                tokens = self.text_token_norm(mentions.text_tokens)
                text_fine = s[1] * self.text_fine(
                    tokens, mentions.text_mask, self._text_global(entities.text_global)
                )
        if cfg.uses_image:
            coarse = (
                self.coarse_image(mentions.image_global)
                @ self.coarse_image(entities.image_global).T
            )
            if cfg.global_only:
                raw = coarse
            else:
                patches = self.image_patch_norm(mentions.image_patches)
                patch_mask = torch.ones(patches.shape[:2], dtype=torch.bool, device=dev)
                fine = self.image_fine(
                    patches, patch_mask, self._image_global(entities.image_global)
                )
                raw = (coarse + fine) / 2
            visual = torch.where(both, s[2] * raw, nan)
        if cfg.uses_cross:
            mention_ctx = self._mention_contexts(mentions)
            entity_ctx = self._entity_contexts(entities)
            # text->visual applies wherever the entity has an image (a mention without one
            # brings its text alone); visual->text needs both images.
            scores = torch.stack(
                [mc @ ec.T for mc, ec in zip(mention_ctx, entity_ctx, strict=True)]
            )
            entity_img = entities.has_image.to(dev)[None, :].expand(b, n)
            applies = torch.stack([entity_img, both][: scores.shape[0]])
            summed = torch.where(applies, scores, torch.zeros_like(scores)).sum(0)
            directions = applies.sum(0)
            cross = torch.where(directions > 0, s[3] * summed / directions.clamp(min=1), nan)

        stacked = torch.stack([text_coarse, text_fine, visual, cross])
        valid = ~stacked.isnan()
        count = valid.sum(0)
        total = torch.where(valid, stacked, torch.zeros_like(stacked)).sum(0)
        final = torch.where(
            count > 0, total / count.clamp(min=1), torch.full_like(total, float("-inf"))
        )
        return MatchScores(text_coarse, text_fine, visual, cross, final)

    def forward(self, mentions: MentionFeatures, entities: EntityFeatures) -> Tensor:
        """Returns: the final (B, N) scores (`match(...).final`)."""
        return self.match(mentions, entities).final

    # -- the fused ANN vector ------------------------------------------------------------------
    def mention_embedding(self, m: MentionFeatures) -> Tensor:
        """(B, 4H) L2-normalised fused vectors: scaled text, image and cross-modal parts whose
        dot product with `entity_embedding` tracks the factorisable matchers (text coarse,
        visual coarse, cross-modal) of `final`; for ANN candidate search."""
        img = m.has_image
        return self._fused(
            m.text_global, m.image_global, img, self._mention_contexts(m), [None, img]
        )

    def entity_embedding(self, e: EntityFeatures) -> Tensor:
        """(N, 4H) L2-normalised fused vectors (see `mention_embedding`)."""
        img = e.has_image
        return self._fused(e.text_global, e.image_global, img, self._entity_contexts(e), [img, img])

    def _fused(
        self,
        text: Tensor,
        image: Tensor,
        has_image: Tensor,
        contexts: list[Tensor],
        context_masks: list[Tensor | None],
    ) -> Tensor:
        """Concatenate sqrt(scale)-weighted normalised parts (zeros where a part does not
        apply: no image, or switched off) and L2-normalise the whole."""
        cfg, s = self.config, self.scales()
        rows, hid = text.shape[0], cfg.hidden
        img = has_image.to(text.device).unsqueeze(1).to(text.dtype)
        zeros = text.new_zeros(rows, hid)
        text_part = s[0].sqrt() * self.coarse_text(text) if cfg.uses_text else zeros
        image_part = s[2].sqrt() * self.coarse_image(image) * img if cfg.uses_image else zeros
        cross_parts = [zeros, zeros]
        if cfg.uses_cross:
            weight = (s[3] / len(contexts)).sqrt()
            for i, (ctx, mask) in enumerate(zip(contexts, context_masks, strict=False)):
                keep = 1.0 if mask is None else mask.to(text.device).unsqueeze(1).to(text.dtype)
                cross_parts[i] = weight * ctx * keep
        return F.normalize(torch.cat([text_part, image_part, *cross_parts], dim=-1), dim=-1)

    # -- training ------------------------------------------------------------------------------
    def loss(
        self,
        mentions: MentionFeatures,
        entities: EntityFeatures,
        targets: Tensor,
        scores: MatchScores | None = None,
    ) -> LossParts:
        """CE(final) + sum of CE(each matcher that applies) + intra-modal CL.

        Args:
            mentions: B training mentions.
            entities: the candidate set (the whole KB, or in-batch entities).
            targets: (B,) long, each mention's gold entity index into `entities`.
            scores: `match(mentions, entities)` if already computed.
        """
        scores = scores if scores is not None else self.match(mentions, entities)
        terms = {"final": _masked_ce(scores.final, targets)}
        for name, value in scores.matchers().items():
            terms[name] = _masked_ce(value, targets)
        if not self.config.no_cl:
            gold = entities[targets]
            cl = []
            if self.config.uses_text:
                cl.append(
                    self._contrastive(
                        self.coarse_text(mentions.text_global),
                        self.coarse_text(gold.text_global),
                        targets,
                        torch.ones_like(targets, dtype=torch.bool),
                    )
                )
            if self.config.uses_image:
                ok = mentions.has_image.to(targets.device) & gold.has_image.to(targets.device)
                cl.append(
                    self._contrastive(
                        self.coarse_image(mentions.image_global),
                        self.coarse_image(gold.image_global),
                        targets,
                        ok,
                    )
                )
            present = [c for c in cl if c is not None]
            if present:
                terms["cl"] = self.config.cl_weight * torch.stack(present).mean()
        kept = [t for t in terms.values() if t is not None]
        total = torch.stack(kept).sum() if kept else scores.final.new_zeros((), requires_grad=True)
        return LossParts(total, {k: float(v.detach()) for k, v in terms.items() if v is not None})

    def _contrastive(
        self, mention: Tensor, entity: Tensor, targets: Tensor, ok: Tensor
    ) -> Tensor | None:
        """The repo's WeightedContrastiveLoss on normalised (B, H) mention / gold-entity
        vectors: each row's positive is its pair; negatives are the other rows' pairs (weight
        1.0) and the other rows of its own side (weight 0.8). Rows sharing a gold entity are
        positives of each other, never negatives."""
        idx = ok.nonzero().squeeze(1)
        if idx.numel() < 2:
            return None
        mention, entity, targets = mention[idx], entity[idx], targets[idx]
        cfg = self.config
        same = targets[:, None] == targets[None, :]
        losses = []
        for a, b in ((entity, mention), (mention, entity)):
            inter = cfg.cl_inter_weight * (a @ b.T) / cfg.cl_temperature
            intra = cfg.cl_intra_weight * (a @ a.T) / cfg.cl_temperature
            intra = intra.masked_fill(same, float("-inf"))  # self and same-entity rows
            logits = torch.cat([inter, intra], dim=1)
            log_prob = logits.log_softmax(dim=1)[:, : len(idx)]
            positive = torch.where(same, log_prob, torch.full_like(log_prob, float("-inf")))
            losses.append(-torch.logsumexp(positive, dim=1).mean())
        return (losses[0] + losses[1]) / 2


def _masked_ce(logits: Tensor, targets: Tensor) -> Tensor | None:
    """Cross-entropy over the entities where the matcher applies (NaN -> excluded); rows whose
    gold entity it does not apply to are skipped. None when no row applies."""
    logits = torch.where(logits.isnan(), torch.full_like(logits, float("-inf")), logits)
    gold = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
    rows = torch.isfinite(gold)
    if not rows.any():
        return None
    return F.cross_entropy(logits[rows], targets[rows])
