"""Image-text alignment scores and word-level misalignment on a dual encoder (pure torch, no I/O).

- CLIPScore (Hessel et al. 2021): `w * max(cos, 0)`; RefCLIPScore: harmonic mean of CLIPScore and
  the best reference cosine `max(max_r cos(text, r), 0)` (the paper's form, no `w` on that term).
- Fine-grained score: FILIP text->image late interaction, mean over the caption's word tokens of
  the best patch similarity; per word the best patch and a (grid_h, grid_w) heat map row.
- CLIP4DM dense misalignment (Nam et al., AAAI 2025): for the last `layers` text layers, the
  attention A_l and its gradient G_l = ds/dA_l of the pair cosine s; R = (1/L) sum_l
  mean_heads(G_l * A_l), with no positive clamping, so negative evidence survives. A token's
  relevance is read from the rows that make the pooled text embedding (see `_token_relevance`);
  sub-word tokens are averaged into words; a word with attribution < -threshold is flagged.
- F-CLIPScore (see `f_clip_score`) lowers CLIPScore by the flagged words' negative attributions,
  weighted by `penalty` (the attribution scale is encoder-specific: pipelines.scorer fits it).
- `aligned_probability`: calibrated P(aligned) (logistic over the pair scores, fitted offline).

Word spans are character spans of the ORIGINAL text: words are `\\w+` runs (apostrophes inside
a word kept), found with a regex on the text, and a token belongs to the word its tokenizer
offsets overlap. Special tokens and punctuation carry no word.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from concord.models.clip import ClipAdapter
from concord.models.dual_encoder import DualEncoder, Encoded
from concord.models.preprocess import TextTokenizer
from concord.models.text_tower import mean_pool

CLIP_WEIGHT = 2.5  # CLIPScore's w (torchmetrics uses 100: keep `weight` a parameter)
DEFAULT_THRESHOLD = 5e-5  # CLIP4DM's epsilon: flag words with attribution < -threshold
DEFAULT_LAYERS = 3  # CLIP4DM's L: the last L text layers
# F-CLIPScore's weight on (1 - s) * sum of flagged attributions. 1 is the reference code's implicit
# weight (naver-ai/CLIP4DM); packages carry one fitted on held-out pairs for their encoder.
DEFAULT_PENALTY = 1.0
WORD_RE = re.compile(r"\w+(?:['\u2019]\w+)*")
CALIBRATION_FEATURES = ("clip_score", "fine_grained_score", "f_clip_score")


@dataclass(frozen=True)
class PairScores:
    clip_score: float  # w * max(cos, 0)
    ref_clip_score: (
        float | None
    )  # harmonic mean of clip_score and max(max_ref cos, 0); None without refs
    fine_grained_score: float  # FILIP text->image: mean over word tokens of max patch similarity
    f_clip_score: float  # CLIP4DM F-CLIPScore: clip_score lowered by flagged negative attributions


@dataclass(frozen=True)
class WordScore:
    word: str
    span: tuple[int, int]  # character span [start, end) in the ORIGINAL text
    attribution: float  # CLIP4DM attribution (sub-word tokens averaged); negative = contradicted
    similarity: float  # best late-interaction similarity of the word (its tokens' mean) to a patch
    best_patch: int  # index into the patch grid (row-major)
    misaligned: bool  # attribution < -threshold


@dataclass(frozen=True)
class Explanation:
    words: list[WordScore]
    scores: PairScores
    heatmap: np.ndarray  # float32 (n_words, grid_h, grid_w): word-patch similarities
    cosine: float = 0.0  # the raw pair cosine s (CLIPScore before weighting and clamping)


def word_spans(text: str) -> list[tuple[int, int]]:
    """Returns: the character spans of the words of `text` (`WORD_RE`), in order."""
    return [m.span() for m in WORD_RE.finditer(text)]


def group_words(
    text: str, offsets: Sequence[tuple[int, int]], prefix: int = 0
) -> list[tuple[tuple[int, int], tuple[int, ...]]]:
    """Assign tokens to the words of `text`.

    Args:
        text: the original text (without any template).
        offsets: per token, its character span in `template + text` ((0, 0) for specials).
        prefix: len(template); offsets are shifted back by it.
    Returns:
        (word span in `text`, token positions) for each word that has at least one token
        (words cut off by truncation are dropped). Tokens of the template, special tokens and
        punctuation belong to no word.
    """
    spans = word_spans(text)
    members: list[list[int]] = [[] for _ in spans]
    k = 0
    for pos, (a, b) in enumerate(offsets):
        a, b = a - prefix, b - prefix
        if b <= a or b <= 0:
            continue  # special token, empty, or inside the template
        while k < len(spans) and spans[k][1] <= a:
            k += 1
        j = k
        while j < len(spans) and spans[j][0] < b:
            members[j].append(pos)  # a token straddling two words counts for both
            j += 1
    return [(s, tuple(m)) for s, m in zip(spans, members, strict=True) if m]


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
        self._clip = isinstance(model, ClipAdapter)  # EOS-pooled CLIP text model
        # A transformers text model: CLIP's or the DualEncoder's BERT-like backbone.
        text_model: Any
        if isinstance(model, ClipAdapter):
            text_model = model.clip.text_model
            n_layers = len(text_model.encoder.layers)
        else:
            text_model = model.text_tower.backbone
            n_layers = len(text_model.encoder.layer)
        self._text_model = text_model
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

    def _text_forward(self, ids: Tensor, mask: Tensor) -> tuple[Encoded, tuple[Tensor, ...]]:
        out = self._text_model(input_ids=ids, attention_mask=mask, output_attentions=True)
        real = mask.bool()
        if isinstance(self.model, ClipAdapter):
            proj = self.model.clip.text_projection
            pooled, states = proj(out.pooler_output), out.last_hidden_state
        else:
            proj = self.model.text_proj
            states = out.last_hidden_state
            pooled = proj(mean_pool(states, mask))
        tokens = F.normalize(proj(states), dim=-1) * real.unsqueeze(-1).to(states.dtype)
        return Encoded(F.normalize(pooled, dim=-1), tokens, real), tuple(out.attentions)

    def _attribute(
        self, ids: Tensor, mask: Tensor, image_pooled: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Encoded]:
        """Returns: (pair cosines (B,), signed token relevance (B, T), the same with G*A clamped
        to >= 0 (Chefer-style ablation), text Encoded), all detached."""
        self._local.active = True
        try:
            with torch.enable_grad():
                text, attentions = self._text_forward(ids, mask)
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
        if self._clip:
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


@dataclass(frozen=True, eq=False)  # array fields
class RawPair:
    """Threshold-free results for one pair; `explanation` applies a threshold."""

    text: str
    spans: tuple[tuple[int, int], ...]  # per word, its span in `text`
    cosine: float  # pair cosine s
    fine_grained: float  # FILIP text->image score over word tokens
    attributions: np.ndarray  # (n_words,) CLIP4DM attributions (signed)
    positive: np.ndarray  # (n_words,) the same with G*A clamped to >= 0 (ablation)
    heat: np.ndarray  # (n_words, N) word-patch similarities
    ref_cosine: float | None  # best reference cosine; None without references

    @property
    def similarities(self) -> np.ndarray:
        """(n_words,) each word's best patch similarity."""
        return self.heat.max(axis=1) if len(self.heat) else np.zeros(0, np.float32)

    def explanation(
        self,
        threshold: float,
        weight: float = CLIP_WEIGHT,
        positive_only: bool = False,
        penalty: float = DEFAULT_PENALTY,
        f_threshold: float | None = None,
    ) -> Explanation:
        """Returns: the Explanation with words flagged at `threshold` and scores from `weight`
        (CLIPScore's w), `penalty` (F-CLIPScore's weight on the flagged attributions) and
        `f_threshold` (the words F-CLIPScore counts; None: `threshold`)."""
        attributions = self.positive if positive_only else self.attributions
        clip = weight * max(self.cosine, 0.0)
        ref_clip = None
        if self.ref_cosine is not None:
            r = max(self.ref_cosine, 0.0)
            ref_clip = 2 * clip * r / (clip + r) if clip + r > 0 else 0.0
        n_patches = self.heat.shape[1]
        grid = math.isqrt(n_patches)
        shape = (grid, grid) if grid * grid == n_patches else (1, n_patches)
        words = [
            WordScore(
                self.text[s:e],
                (s, e),
                float(a),
                float(row.max()),
                int(row.argmax()),
                bool(a < -threshold),
            )
            for (s, e), a, row in zip(self.spans, attributions, self.heat, strict=True)
        ]
        f_eps = threshold if f_threshold is None else f_threshold
        f = f_clip_score(clip, self.cosine, attributions, f_eps, penalty)
        return Explanation(
            words,
            PairScores(clip, ref_clip, self.fine_grained, f),
            self.heat.reshape(-1, *shape),
            self.cosine,
        )


def f_clip_score(
    clip_score: float,
    cosine: float,
    attributions: Sequence[float] | np.ndarray,
    threshold: float,
    penalty: float = DEFAULT_PENALTY,
) -> float:
    """F-CLIPScore = CLIPScore + penalty * (1 - max(s, 0)) * sum of flagged attributions.

    Flagged words have a < -threshold, so the term is <= 0: each contradicted word lowers the
    score by its own (unnormalised) attribution, less so the better the whole pair already
    matches (the 1 - s head-room of naver-ai/CLIP4DM's `sum_negative_attribution * (1 - s)`).
    A share of the caption's total attribution (our first form) was measured worse: it is as
    large for a short aligned caption with one weakly negative word as for a contradiction.
    Without flagged words it equals CLIPScore.
    """
    a = np.asarray(attributions, dtype=np.float64)
    flagged = float(a[a < -threshold].sum()) if a.size else 0.0
    return float(clip_score + penalty * (1.0 - max(cosine, 0.0)) * flagged)


def aligned_probability(scores: PairScores, calibration: Mapping[str, Any]) -> float:
    """Calibrated P(aligned) from the calibration dict stored in scorer.json.

    Form (`"form": "logistic"`): sigmoid(intercept + sum_k coef_k * (x_k - mean_k) / scale_k)
    over `features` (names of PairScores fields, by default clip_score, fine_grained_score,
    f_clip_score), fitted on a held-out split by pipelines.scorer. Keys: form, features, mean,
    scale, coef, intercept.
    """
    if calibration.get("form") != "logistic":
        raise ValueError(f"unknown calibration form {calibration.get('form')!r}")
    features = list(calibration.get("features", CALIBRATION_FEATURES))
    mean = np.asarray(calibration["mean"], dtype=np.float64)
    scale = np.asarray(calibration["scale"], dtype=np.float64)
    coef = np.asarray(calibration["coef"], dtype=np.float64)
    if not len(features) == len(mean) == len(scale) == len(coef):
        raise ValueError("calibration features, mean, scale and coef differ in length")
    x = np.asarray([float(getattr(scores, f)) for f in features], dtype=np.float64)
    z = float(calibration["intercept"]) + float(coef @ ((x - mean) / np.where(scale > 0, scale, 1)))
    return float(1.0 / (1.0 + math.exp(-z))) if z >= 0 else float(math.exp(z) / (1.0 + math.exp(z)))


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
