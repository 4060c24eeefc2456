"""NegCLIP-style fine-tuning: the misalignment TRAIN split's one-word-false variants of a caption
are extra negatives for its image, so the encoder must tell "a red crescent" from "a brown
crescent" (Yuksekgonul et al. 2023, "When and why vision-language models behave like bags of
words"). Global InfoNCE and FILIP terms both see the hard negatives."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from concord.checkpoints import load_encoder, save_encoder
from concord.models.dual_encoder import Encoded
from concord.models.losses import filip_similarity
from pipelines.encoder.embed import TextStateCache, encode_texts
from pipelines.scorer.data import PairSet


@dataclass(frozen=True)
class HardNegConfig:
    epochs: int = 4
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.05
    seed: int = 0
    filip: bool = True  # add the FILIP token-wise term (keeps the fine-grained score trained)


@dataclass(frozen=True)
class HardNegResult:
    model_dir: Path
    losses: tuple[float, ...]  # mean loss per epoch
    seconds: float


def _captions(data: PairSet) -> tuple[list[int], list[str], list[list[str]]]:
    """Per aligned caption: its image row, its text, its misaligned variants' texts."""
    images, texts, negatives = [], [], []
    by_caption: dict[int, int] = {}
    for p in data.pairs:
        if p.aligned:
            by_caption[p.caption] = len(texts)
            images.append(p.image)
            texts.append(p.text)
            negatives.append([])
        else:
            negatives[by_caption[p.caption]].append(p.text)
    return images, texts, negatives


def hard_negative_loss(
    image: Encoded, positives: Encoded, negatives: Encoded, scale: Tensor, filip: bool
) -> Tensor:
    """Image->text cross-entropy over the batch's captions AND every hard negative; text->image
    over the batch's images (a negative has no image of its own).

    Args:
        image, positives: B rows, row i paired.
        negatives: V hard-negative texts (variants of the batch's captions).
    """
    texts = _cat(positives, negatives)
    labels = torch.arange(len(image), device=image.pooled.device)
    logits = scale * image.pooled @ texts.pooled.T  # (B, B + V)
    loss = F.cross_entropy(logits, labels) + F.cross_entropy(logits[:, : len(image)].T, labels)
    if filip:
        t2i = filip_similarity(image, texts).text_to_image  # (B, B + V)
        loss = loss + F.cross_entropy(scale * t2i, labels)
        loss = loss + F.cross_entropy(scale * t2i[:, : len(image)].T, labels)
        return loss / 4
    return loss / 2


def _cat(a: Encoded, b: Encoded) -> Encoded:
    n = max(a.tokens.shape[1], b.tokens.shape[1])
    tok = torch.cat([F.pad(x.tokens, (0, 0, 0, n - x.tokens.shape[1])) for x in (a, b)])
    mask = torch.cat([F.pad(x.mask, (0, n - x.mask.shape[1])) for x in (a, b)])
    return Encoded(torch.cat([a.pooled, b.pooled]), tok, mask)


def fine_tune(
    encoder_dir: Path,
    data: PairSet,
    out: Path,
    cfg: HardNegConfig = HardNegConfig(),
    cache: TextStateCache | None = None,
    device: torch.device | str = "cpu",
) -> HardNegResult:
    """Fine-tune a saved encoder with hard negatives and save it to `out`.

    Args:
        encoder_dir: a `save_encoder` directory (the shared encoder).
        data: the misalignment train split (captions and their variants).
        cache: frozen text-tower outputs (reused across calls; frozen towers only), filled by
            a model on the same device.
        device: where the model trains (and its batches go).
    """
    t0 = time.perf_counter()
    model, tokenizer = load_encoder(encoder_dir)
    model.to(device)  # before the optimiser sees the parameters
    frozen = model.config.text.unfrozen_layers == 0
    cache = (cache if cache is not None else TextStateCache()) if frozen else None
    images, texts, negatives = _captions(data)
    if cache is not None:
        cache.add(model, tokenizer, texts + [t for n in negatives for t in n])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    # One caption per image per epoch, drawn afresh (as the encoder pipeline samples captions).
    per_image: dict[int, list[int]] = {}
    for k, i in enumerate(images):
        per_image.setdefault(i, []).append(k)
    rows = sorted(per_image)
    steps = math.ceil(len(rows) / cfg.batch_size)
    total, step = steps * cfg.epochs, 0
    losses = []
    model.train()
    for _ in range(cfg.epochs):
        order = rng.permutation(len(rows))
        epoch_losses = []
        for b in range(steps):
            chosen = [rows[j] for j in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
            caps = [per_image[i][int(rng.integers(len(per_image[i])))] for i in chosen]
            negs = [(k, t) for k, c in enumerate(caps) for t in negatives[c]]
            for g in opt.param_groups:
                g["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / max(1, total)))
            image = model.encode_image(data.pixels[chosen].to(device))
            pos = encode_texts(model, tokenizer, [texts[c] for c in caps], cache)
            if negs:
                neg = encode_texts(model, tokenizer, [t for _, t in negs], cache)
            else:
                neg = Encoded(pos.pooled[:0], pos.tokens[:0], pos.mask[:0])
            loss = hard_negative_loss(image, pos, neg, model.logit_scale, cfg.filip)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            epoch_losses.append(float(loss.detach()))
            step += 1
        losses.append(float(np.mean(epoch_losses)))
    model.eval()
    save_encoder(model, tokenizer, out)
    return HardNegResult(Path(out), tuple(losses), time.perf_counter() - t0)
