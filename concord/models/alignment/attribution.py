"""CLIP4DM attribution on a dual encoder's text tower: `AlignmentScorer` (pure torch, no I/O).

- Fine-grained score: FILIP text->image late interaction, mean over the caption's word tokens of
  the best patch similarity; per word the best patch and a (grid_h, grid_w) heat map row.
- CLIP4DM dense misalignment (Nam et al., AAAI 2025): for the last `layers` text layers, the
  attention A_l and its gradient G_l = ds/dA_l of the pair cosine s; R = (1/L) sum_l
  mean_heads(G_l * A_l), with no positive clamping, so negative evidence survives. A token's
  relevance is read from the rows that make the pooled text embedding (see `_token_relevance`);
  sub-word tokens are averaged into words; a word with attribution < -threshold is flagged.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from concord.models.alignment.scores import (
    CLIP_WEIGHT,
    DEFAULT_LAYERS,
    DEFAULT_PENALTY,
    DEFAULT_THRESHOLD,
    Explanation,
    PairScores,
    RawPair,
)
from concord.models.alignment.spans import group_words
from concord.models.clip import ClipAdapter
from concord.models.dual_encoder import DualEncoder, Encoded
from concord.models.preprocess import TextTokenizer


class AlignmentScorer:
    """Wraps an encoder (concord.models.dual_encoder.DualEncoder, or concord.models.clip.ClipAdapter)
    and its TextTokenizer. No I/O.

    The text backbone is switched to eager attention (numerically the same as SDPA) because the
    attribution needs the attention probabilities as graph tensors; gradients are only taken
    with respect to activations, never parameters, so a frozen backbone works as is.
    """

    def __init__(
        self,
        model: DualEncoder | ClipAdapter,
        tokenizer: TextTokenizer,
        *,
        weight: float = CLIP_WEIGHT,
        layers: int = DEFAULT_LAYERS,
        template: str = "",
        penalty: float = DEFAULT_PENALTY,
        f_threshold: float | None = None,
    ) -> None:
        """`penalty` and `f_threshold` (F-CLIPScore's own epsilon; None: the request's word
        threshold) come from the scorer package, fitted on held-out pairs."""
        if weight <= 0:
            raise ValueError(f"weight must be positive, got {weight}")
        if penalty < 0:
            raise ValueError(f"penalty must be >= 0, got {penalty}")
        self.model = model
        self.tokenizer = tokenizer
        self.weight = float(weight)
        self.penalty = float(penalty)
        if f_threshold is not None and f_threshold < 0:
            raise ValueError(f"f_threshold must be >= 0, got {f_threshold}")
        self.f_threshold = f_threshold
        self.template = template
        self._eos_pooled = model.text_pooling == "eos"  # CLIP; the DualEncoder mean-pools
        # A transformers text model: CLIP's or the DualEncoder's BERT-like backbone.
        text_model = model.text_backbone
        n_layers = model.text_depth
        if not 1 <= layers <= n_layers:
            raise ValueError(f"layers must be in [1, {n_layers}], got {layers}")
        self.layers = int(layers)
        _set_eager(text_model)
        self._local = threading.local()
        text_model.embeddings.register_forward_hook(self._track_embeddings)

    @property
    def device(self) -> torch.device:
        """Where the model is; inputs are moved there, per-word results come back to the CPU."""
        return next(self.model.parameters()).device

    # -- public API

    def score(
        self,
        pixels: Tensor,
        texts: Sequence[str],
        references: Sequence[Sequence[str]] | None = None,
        *,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> list[PairScores]:
        """Score image i against text i.

        Args:
            pixels: (B, 3, S, S) float in [0, 1] (concord.models.preprocess.images_to_tensor).
            texts: one text per image.
            references: optional reference captions per image (RefCLIPScore); an empty list
                gives ref_clip_score None for that pair.
            threshold: CLIP4DM's epsilon for F-CLIPScore's flagged words.
        Returns:
            One PairScores per pair.
        """
        return [e.scores for e in self.analyse(pixels, texts, references, threshold=threshold)]

    def explain(
        self, pixels: Tensor, text: str, *, threshold: float = DEFAULT_THRESHOLD
    ) -> Explanation:
        """Per-word attributions, flags, spans and heat map for one pair.

        Args:
            pixels: (1, 3, S, S) or (3, S, S) float in [0, 1].
            text: the text.
        Returns:
            The Explanation.
        """
        if pixels.ndim == 3:
            pixels = pixels.unsqueeze(0)
        if pixels.shape[0] != 1:
            raise ValueError(f"explain takes one image, got {pixels.shape[0]}")
        return self.analyse(pixels, [text], threshold=threshold)[0]

    def analyse(
        self,
        pixels: Tensor,
        texts: Sequence[str],
        references: Sequence[Sequence[str]] | None = None,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        positive_only: bool = False,
    ) -> list[Explanation]:
        """Everything for a batch of pairs in one forward and one backward pass.

        Args:
            positive_only: Chefer-style ablation: clamp G*A to >= 0 before averaging heads.
        Returns:
            One Explanation per pair (image i with text i).
        """
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        raws = self.raw(pixels, texts, references)
        return [
            r.explanation(threshold, self.weight, positive_only, self.penalty, self.f_threshold)
            for r in raws
        ]

    def encode_images(self, pixels: Tensor) -> Encoded:
        """Image embeddings for `raw(image=...)` (encode each image once, score many texts)."""
        if pixels.ndim != 4:
            raise ValueError(f"need pixels (B, 3, S, S), got {tuple(pixels.shape)}")
        with torch.inference_mode(False), torch.no_grad():
            was_training = self.model.training
            self.model.eval()
            try:
                return self.model.encode_image(pixels.to(self.device).clone())
            finally:
                self.model.train(was_training)

    def raw(
        self,
        pixels: Tensor | None,
        texts: Sequence[str],
        references: Sequence[Sequence[str]] | None = None,
        *,
        image: Encoded | None = None,
    ) -> list[RawPair]:
        """Threshold-free per-pair results (signed and positive-clamped attributions together).

        Args:
            pixels: (B, 3, S, S), or None when `image` (from `encode_images`, B rows) is given.
            texts: one text per image.
            references: optional reference captions per image.
        Returns:
            One RawPair per pair.
        """
        if isinstance(texts, str):
            raise TypeError("pass a sequence of texts, not a single str")
        if image is None:
            if pixels is None or pixels.ndim != 4 or pixels.shape[0] != len(texts):
                got = None if pixels is None else tuple(pixels.shape)
                raise ValueError(f"need pixels (B, 3, S, S) with B = {len(texts)} texts, got {got}")
            image = self.encode_images(pixels)
        elif len(image) != len(texts):
            raise ValueError(f"{len(image)} image embeddings for {len(texts)} texts")
        if references is not None and len(references) != len(texts):
            raise ValueError(f"{len(references)} reference lists for {len(texts)} texts")
        batch = self.tokenizer([self.template + t for t in texts])
        prefix = len(self.template)
        with torch.inference_mode(False):
            was_training = self.model.training
            self.model.eval()
            try:
                cos, signed, positive, tokens = self._attribute(
                    batch.input_ids.to(self.device),
                    batch.attention_mask.to(self.device),
                    image.pooled.to(self.device),
                )
                refs = self._reference_cosines(tokens.pooled, references)
            finally:
                self.model.train(was_training)
        # The per-word bookkeeping below is many tiny ops: on the CPU, in float32.
        cos, signed, positive = cos.float().cpu(), signed.float().cpu(), positive.float().cpu()
        tokens = Encoded(tokens.pooled.cpu(), tokens.tokens.float().cpu(), tokens.mask.cpu())
        image_tokens = image.tokens.float().cpu()
        out = []
        for i, text in enumerate(texts):
            groups = group_words(text, batch.offsets[i], prefix)
            sim = tokens.tokens[i] @ image_tokens[i].T  # (T, N): token-patch cosines
            word_tokens = sorted({t for _, m in groups for t in m})
            if not word_tokens:  # no word (e.g. only punctuation): every real token
                word_tokens = [int(t) for t in torch.nonzero(batch.attention_mask[i]).flatten()]
            fine = float(sim[word_tokens].amax(dim=1).mean())
            rows = [sim[list(m)].mean(dim=0) for _, m in groups]
            heat = torch.stack(rows) if rows else sim.new_zeros(0, sim.shape[1])
            out.append(
                RawPair(
                    text=text,
                    spans=tuple(s for s, _ in groups),
                    cosine=float(cos[i]),
                    fine_grained=fine,
                    attributions=np.array([float(signed[i, list(m)].mean()) for _, m in groups]),
                    positive=np.array([float(positive[i, list(m)].mean()) for _, m in groups]),
                    heat=heat.numpy().astype(np.float32),
                    ref_cosine=refs[i],
                )
            )
        return out

    # -- internals

    def _track_embeddings(self, module: nn.Module, args: Any, output: Tensor) -> Tensor | None:
        """Make the embedding output a graph leaf while attributing (frozen backbones have no
        graph otherwise); a no-op for every other forward, in any thread."""
        if getattr(self._local, "active", False) and not output.requires_grad:
            return output.requires_grad_(True)
        return None

    def _attribute(
        self, ids: Tensor, mask: Tensor, image_pooled: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Encoded]:
        """Returns: (pair cosines (B,), signed token relevance (B, T), the same with G*A clamped
        to >= 0 (Chefer-style ablation), text Encoded), all detached."""
        self._local.active = True
        try:
            with torch.enable_grad():
                text, attentions = self.model.encode_text_with_attentions(ids, mask)
                cos = (text.pooled * image_pooled.detach()).sum(dim=-1)
                chosen = attentions[-self.layers :]
                grads = torch.autograd.grad(cos.sum(), chosen)  # pairs are independent rows
        finally:
            self._local.active = False
        signed = torch.zeros_like(chosen[0][:, 0])  # (B, T, T): zero start, not the identity
        positive = torch.zeros_like(signed)
        for a, g in zip(chosen, grads, strict=True):
            cam = g.detach() * a.detach()
            signed = signed + cam.mean(dim=1)
            positive = positive + cam.clamp(min=0).mean(dim=1)
        n = len(chosen)
        return (
            cos.detach(),
            self._token_relevance(signed / n, mask),
            self._token_relevance(positive / n, mask),
            _detach(text),
        )

    def _token_relevance(self, relevance: Tensor, mask: Tensor) -> Tensor:
        """Relevance of each token j to the pooled text embedding.

        CLIP pools the EOS state, so the paper reads row R[EOS, j]. Our MiniLM tower mean-pools
        every real token, so each real query row i feeds the pooled output (the 1/T of the mean
        is already inside G); the analogue of the EOS row is the SUM of R[i, j] over real query
        rows i. (Their mean differs only by 1/T, which would make a fixed threshold depend on
        the caption's length.)
        """
        real = mask.to(relevance.dtype)
        if self._eos_pooled:
            eos = mask.sum(dim=1).long() - 1  # the tokenizer appends EOS as the last real token
            return relevance[torch.arange(len(eos), device=eos.device), eos] * real
        return (relevance * real.unsqueeze(-1)).sum(dim=1) * real

    def _reference_cosines(
        self, text_pooled: Tensor, references: Sequence[Sequence[str]] | None
    ) -> list[float | None]:
        if references is None:
            return [None] * len(text_pooled)
        flat = [r for refs in references for r in refs]
        if not flat:
            return [None] * len(text_pooled)
        batch = self.tokenizer(flat)
        with torch.no_grad():
            ids, mask = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
            ref = self.model.encode_text(ids, mask).pooled
        out: list[float | None] = []
        start = 0
        for i, refs in enumerate(references):
            n = len(refs)
            out.append(float((ref[start : start + n] @ text_pooled[i]).max()) if n else None)
            start += n
        return out


def _set_eager(text_model: nn.Module) -> None:
    """Attention probabilities are only returned (as graph tensors) by eager attention."""
    setter = getattr(text_model, "set_attn_implementation", None)
    if callable(setter):
        try:
            setter("eager")
            return
        except (ValueError, TypeError):  # older transformers: fall back to the config field
            pass
    config: Any = text_model.config  # a transformers config
    config._attn_implementation = "eager"


def _detach(e: Encoded) -> Encoded:
    return Encoded(e.pooled.detach(), e.tokens.detach(), e.mask)
