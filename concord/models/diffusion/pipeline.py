"""Text-to-image (and layout) generation: the EMA U-Net, the frozen MiniLM text encoder, guided
sampling with per-prompt seeds, DECOR projection and LoRA concepts; plus `finetune_concept`,
the pure-torch customization loop the service's job worker runs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from concord.models.diffusion.categorical import CategoricalDiffusion
from concord.models.diffusion.config import GeneratorConfig
from concord.models.diffusion.decor import project_away
from concord.models.diffusion.lora import inject_lora, lora_applied, lora_state, remove_lora
from concord.models.diffusion.losses import diffusion_loss
from concord.models.diffusion.samplers import DEFAULT_SAMPLER, get_sampler
from concord.models.diffusion.sampling import layout_step, timesteps
from concord.models.diffusion.schedule import NoiseSchedule
from concord.models.diffusion.unet import UNet

OnStep = Callable[[int, int, Tensor], bool]


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # uint8 (H, W, 3)
    layout: np.ndarray | None  # uint8 (H, W) class ids (config.class_names); None: image-only
    seed: int  # the seed this image was drawn with (request seed + prompt index)


@dataclass(frozen=True)
class ConceptWeights:
    """A DECOR/LoRA customization."""

    name: str  # the concept token used in prompts, e.g. "zorv"
    class_word: str  # what the concept is, e.g. "shape"
    rank: int
    state: dict[str, Tensor]  # LoRA parameters (lora.lora_state names)
    reference_count: int


class GenerationCancelled(Exception):
    """on_step returned False; the generation stopped early."""


def encode_text(
    backbone: nn.Module, hf_tokenizer: Any, prompts: Sequence[str], max_tokens: int
) -> tuple[Tensor, Tensor]:
    """Token states of the frozen text backbone, padded/truncated to `max_tokens`.

    Returns:
        ((B, L, D) float32 states, (B, L) bool mask of real tokens), on the backbone's device.
    """
    device = next(backbone.parameters()).device
    tok = hf_tokenizer(
        list(prompts),
        padding="max_length",
        truncation=True,
        max_length=max_tokens,
        return_tensors="pt",
    )
    ids, mask = tok["input_ids"].to(device), tok["attention_mask"].to(device)
    with torch.no_grad():
        out = backbone(input_ids=ids, attention_mask=mask)
    return out.last_hidden_state.float(), mask.bool()


def to_uint8(x: Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


class TextToImage:
    """Generator U-Net (EMA weights) + frozen MiniLM text encoder (BertModel passed in) + tokenizer.

    `generate` holds a lock: a concept's LoRA is patched into the shared U-Net for one call.
    """

    def __init__(
        self, unet: UNet, text_backbone: nn.Module, hf_tokenizer: Any, config: GeneratorConfig
    ) -> None:
        self.unet = unet.eval().requires_grad_(False)
        self.text_backbone = text_backbone.eval().requires_grad_(False)
        self.hf_tokenizer = hf_tokenizer
        self.config = config
        self.schedule = NoiseSchedule(config.schedule, config.train_timesteps)
        self.categorical = (
            CategoricalDiffusion(config.num_classes, config.layout_schedule, config.train_timesteps)
            if config.layout
            else None
        )
        self._lock = threading.RLock()

    @property
    def device(self) -> torch.device:
        """Where the U-Net is (move it with concord.checkpoints.to_device)."""
        return next(self.unet.parameters()).device

    def encode_prompts(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Returns:
        ((B, L, D) token states, (B, L) bool mask), L = config.max_text_tokens.
        """
        return encode_text(
            self.text_backbone, self.hf_tokenizer, prompts, self.config.max_text_tokens
        )

    def unwanted_embeddings(self, unwanted: Sequence[str]) -> Tensor:
        """The word-token rows ([CLS]/[SEP]/padding excluded) of each unwanted phrase, stacked."""
        states, mask = self.encode_prompts(unwanted)
        rows = []
        for s, m in zip(states, mask, strict=True):
            n = int(m.sum())
            rows.append(s[1 : n - 1] if n > 2 else s[:n])
        return torch.cat(rows)

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        *,
        seed: int,
        steps: int,
        guidance_scale: float,
        sampler: str = DEFAULT_SAMPLER,
        concept: ConceptWeights | None = None,
        unwanted: Sequence[str] = (),
        alpha: float = 0.0,
        directions: int = 1,
        on_step: OnStep | None = None,
        lora_scale: float = 1.0,
    ) -> list[Sample]:
        """One image per prompt; image i drawn from torch.Generator seeded seed + i, so a prompt's
        result does not depend on its batch mates.

        Args:
            prompts: non-empty list of prompts.
            seed: base seed; steps: denoising steps (1..train_timesteps).
            guidance_scale: classifier-free guidance w (1 = conditional only, 0 = unconditional),
                applied to the noise and to the layout logits.
            sampler: a name in `samplers.SAMPLERS` ("ddim": eta 0, or "ddpm").
            concept: LoRA weights to apply for this call.
            unwanted, alpha, directions: DECOR, project the prompt states away from the top
                `directions` singular vectors of the unwanted phrases' token states.
            on_step: on_step(step, total, x0_preview (B, 3, H, W) in [0, 1]) after every step;
                returning False raises GenerationCancelled.
            lora_scale: multiplier of the concept's LoRA update.
        Returns:
            One Sample per prompt, in order.
        """
        if not prompts:
            raise ValueError("at least one prompt is needed")
        pairs = timesteps(self.config.train_timesteps, steps)
        smp = get_sampler(sampler)
        text, mask = self.encode_prompts(prompts)
        if unwanted and alpha > 0:
            text = project_away(text, self.unwanted_embeddings(unwanted), alpha, directions)
        with self._lock:
            if concept is not None:
                with lora_applied(self.unet, concept.state, lora_scale):
                    return self._sample(text, mask, seed, pairs, smp, guidance_scale, on_step)
            return self._sample(text, mask, seed, pairs, smp, guidance_scale, on_step)

    def _sample(
        self,
        text: Tensor,
        mask: Tensor,
        seed: int,
        pairs: list[tuple[int, int]],
        smp: Any,
        w: float,
        on_step: OnStep | None,
    ) -> list[Sample]:
        b, s, k = text.shape[0], self.config.image_size, self.config.num_classes
        # Per-prompt CPU generators draw every noise tensor, which then moves to the U-Net's
        # device: a seed gives the same starting point on any device.
        gens = [torch.Generator().manual_seed(seed + i) for i in range(b)]
        x = torch.stack([torch.randn(3, s, s, generator=g) for g in gens]).to(self.device)
        y = None
        if self.config.layout:
            y = torch.stack([torch.randint(0, k, (s, s), generator=g) for g in gens])
            y = y.to(self.device)
        null, null_mask = self.unet.null_condition(b)
        for i, (t, s_) in enumerate(pairs):
            eps, logits = self._guided(x, y, t, text, mask, null, null_mask, w)
            x, x0 = smp.step(self.schedule, x, t, s_, eps, gens)
            if y is not None:  # a layout model: it has the categorical diffusion and logits
                assert self.categorical is not None and logits is not None
                y = layout_step(self.categorical, logits, y, t, s_, gens)
            if on_step is not None and on_step(i + 1, len(pairs), (x0 + 1) / 2) is False:
                raise GenerationCancelled(f"cancelled at step {i + 1} of {len(pairs)}")
        images = to_uint8(x)
        return [
            Sample(
                images[i],
                None if y is None else y[i].to(torch.uint8).cpu().numpy(),
                seed + i,
            )
            for i in range(b)
        ]

    def _guided(
        self,
        x: Tensor,
        y: Tensor | None,
        t: int,
        text: Tensor,
        mask: Tensor,
        null: Tensor,
        null_mask: Tensor,
        w: float,
    ) -> tuple[Tensor, Tensor | None]:
        """Classifier-free guidance on eps (or v) and on the layout log-probabilities; returns eps."""
        b = x.shape[0]
        tt = torch.full((b,), t, dtype=torch.long, device=x.device)
        if w == 1.0:
            out, logits = self.unet(x, tt, text, mask, y)
            if self.config.prediction == "v":
                out = self.schedule.eps_from_v(x, tt, out)
            return out, logits
        yy = None if y is None else torch.cat([y, y])
        eps, logits = self.unet(
            torch.cat([x, x]),
            torch.cat([tt, tt]),
            torch.cat([text, null]),
            torch.cat([mask, null_mask]),
            yy,
        )
        eps = eps[b:] + w * (eps[:b] - eps[b:])
        if self.config.prediction == "v":  # linear in the output, so guiding v guides eps
            eps = self.schedule.eps_from_v(x, tt, eps)
        if logits is not None:
            lp = F.log_softmax(logits, dim=1)
            logits = lp[b:] + w * (lp[:b] - lp[b:])
        return eps, logits

    @torch.no_grad()
    def infer_layout(
        self, images: Tensor, prompts: Sequence[str], *, steps: int = 20, seed: int = 0
    ) -> Tensor:
        """Image -> layout by resampling (GCDP's cross-modal outpainting): the layout is sampled
        while the image is held at q(x_t | x_0) of the given image.

        Args:
            images: (B, 3, S, S) in [0, 1]; prompts: one per image.
        Returns:
            (B, S, S) int64 layouts.
        """
        if not self.config.layout:
            raise ValueError("an image-only model has no layout head")
        b, s, k = images.shape[0], self.config.image_size, self.config.num_classes
        x0 = images.to(self.device) * 2 - 1
        text, mask = self.encode_prompts(prompts)
        gens = [torch.Generator().manual_seed(seed + i) for i in range(b)]
        y = torch.stack([torch.randint(0, k, (s, s), generator=g) for g in gens]).to(self.device)
        for t, s_ in timesteps(self.config.train_timesteps, steps):
            tt = torch.full((b,), t, dtype=torch.long, device=self.device)
            noise = torch.stack([torch.randn(3, s, s, generator=g) for g in gens])
            xt = self.schedule.q_sample(x0, tt, noise.to(self.device))
            _, logits = self.unet(xt, tt, text, mask, y)
            assert self.categorical is not None and logits is not None  # a layout model
            y = layout_step(self.categorical, logits, y, t, s_, gens)
        return y


def finetune_concept(
    pipe: TextToImage,
    references: Tensor,
    prompt: str,
    *,
    name: str,
    class_word: str,
    steps: int,
    rank: int = 4,
    lr: float = 1e-3,
    seed: int = 0,
    on_step: Callable[[int, int], bool] | None = None,
) -> ConceptWeights:
    """LoRA customization on reference images (N,3,S,S) in [0,1] with the prompt (which contains
    `name`). Pure torch training loop (no I/O) so the service's job worker can run it.

    A layout model is tuned on pseudo-layouts that it infers from the references itself.
    on_step(step, total) returning False stops early (the weights so far are returned).
    """
    if name not in prompt:
        raise ValueError(f"the prompt {prompt!r} must contain the concept name {name!r}")
    if references.dim() != 4 or references.shape[1] != 3 or references.shape[0] == 0:
        raise ValueError(f"references must be (N, 3, S, S), got {tuple(references.shape)}")
    s = pipe.config.image_size
    refs = references.float().clamp(0, 1).to(pipe.device)
    if refs.shape[-1] != s or refs.shape[-2] != s:
        refs = F.interpolate(refs, size=(s, s), mode="area")
    n = refs.shape[0]
    with pipe._lock:
        text, mask = pipe.encode_prompts([prompt] * n)
        y0 = pipe.infer_layout(refs, [prompt] * n, seed=seed) if pipe.config.layout else None
        unet = pipe.unet
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            params = inject_lora(unet, rank)
        try:
            for p in params:
                p.requires_grad_(True)
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
            for step in range(steps):
                with torch.enable_grad():
                    parts = diffusion_loss(
                        unet,
                        pipe.schedule,
                        pipe.categorical,
                        refs * 2 - 1,
                        text,
                        mask,
                        y0,
                        cond_drop=0.0,
                        generator=gen,
                    )
                    opt.zero_grad(set_to_none=True)
                    parts.total.backward()
                    opt.step()
                if on_step is not None and on_step(step + 1, steps) is False:
                    break
            state = lora_state(unet)
        finally:
            remove_lora(unet)
            unet.requires_grad_(False)
    return ConceptWeights(name, class_word, rank, state, n)
