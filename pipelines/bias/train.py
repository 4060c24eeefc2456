"""Training one ViLBias classifier variant on precomputed inputs.

What is frozen is computed once (`precompute`): the image tower's pooled states for every image
(the towers are frozen in every variant here), and MiniLM's mean-pooled states when the text
encoder is frozen too, so the frozen variants train only their heads, in seconds. LoRA and full
fine-tuning run MiniLM forward and backward every step (sequences trimmed to the batch's longest).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from concord.models.bias import BiasClassifier
from concord.models.preprocess import TextTokenizer
from pipelines.bias.data import BiasSplit


@dataclass(frozen=True)
class Inputs:
    """A split as the classifier reads it."""

    input_ids: Tensor  # (N, T) padded to the split's longest text (<= max_length)
    attention_mask: Tensor  # (N, T)
    image_states: Tensor  # (N, Di): the frozen image tower's pooled output
    text_states: Tensor | None  # (N, Dt) frozen MiniLM states, or None when MiniLM is tuned

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def text_batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        mask = self.attention_mask[index]
        length = max(2, int(mask.sum(dim=1).max()))
        return self.input_ids[index, :length], mask[:, :length]


@torch.no_grad()
def precompute(
    classifier: BiasClassifier,
    split: BiasSplit,
    tokenizer: TextTokenizer,
    frozen_text: bool,
    batch_size: int = 256,
) -> Inputs:
    """Tokenize the split and run what is frozen once (eval mode, no dropout)."""
    classifier.eval()
    tokens = tokenizer(split.texts)
    images, texts = [], []
    for start in range(0, len(split), batch_size):
        images.append(classifier.image_states(split.pixels[start : start + batch_size]))
        if frozen_text:
            ids = tokens.input_ids[start : start + batch_size]
            mask = tokens.attention_mask[start : start + batch_size]
            texts.append(classifier.text_states(ids, mask))
    return Inputs(
        tokens.input_ids,
        tokens.attention_mask,
        torch.cat(images),
        torch.cat(texts) if frozen_text else None,
    )


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 3
    batch_size: int = 32
    head_lr: float = 1e-3  # projections, MLP, head (frozen MiniLM: the heads are all that learns)
    tuned_head_lr: float = 3e-4  # the heads while MiniLM is tuned (they start warm: LP-FT)
    text_lr: float = 5e-5  # full fine-tune of MiniLM (the paper's rate)
    lora_lr: float = 5e-4  # LoRA adapters (low-rank updates take a higher rate)
    weight_decay: float = 0.01
    warmup_frac: float = 0.1
    max_steps: int = 0  # 0: epochs * steps per epoch
    frozen_epochs: int = 30  # heads on precomputed states: cheap, so train longer
    seed: int = 0


@dataclass
class Trained:
    classifier: BiasClassifier
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    val_loss: float | None = None  # the kept epoch's (None: no validation)


def train_classifier(
    classifier: BiasClassifier,
    inputs: Inputs,
    labels: Tensor,
    settings: TrainSettings,
    log: Callable[[dict[str, float], int], None] | None = None,
    val: tuple[Inputs, Tensor] | None = None,
) -> Trained:
    """Binary cross-entropy on `labels` (0/1), AdamW, warmup then linear decay. With `val`
    (inputs, vote labels), the weights of the epoch with the lowest val loss are kept."""
    cfg = classifier.config
    frozen_text = cfg.text_tuning == "frozen"
    if frozen_text and cfg.uses_text and inputs.text_states is None:
        raise ValueError("a frozen-text variant needs precomputed text states")
    generator = torch.Generator().manual_seed(settings.seed)
    backbone = [p for p in classifier.text_backbone.parameters() if p.requires_grad]
    backbone_ids = {id(p) for p in backbone}
    heads = [p for p in classifier.parameters() if p.requires_grad and id(p) not in backbone_ids]
    text_lr = settings.lora_lr if cfg.text_tuning == "lora" else settings.text_lr
    tuned = not frozen_text and cfg.uses_text
    groups = [{"params": heads, "lr": settings.tuned_head_lr if tuned else settings.head_lr}]
    if backbone and cfg.uses_text:
        groups.append({"params": backbone, "lr": text_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=settings.weight_decay)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    n = len(inputs)
    epochs = settings.frozen_epochs if (frozen_text or not cfg.uses_text) else settings.epochs
    per_epoch = math.ceil(n / settings.batch_size)
    total = settings.max_steps or epochs * per_epoch
    warmup = max(1, int(settings.warmup_frac * total))
    classifier.train()
    start, step, losses = time.perf_counter(), 0, []
    targets = labels.float()
    best: tuple[float, dict[str, Tensor]] | None = None
    epoch = 0
    while step < total:
        order = torch.randperm(n, generator=generator)
        for k in range(0, n, settings.batch_size):
            if step >= total:
                break
            index = order[k : k + settings.batch_size]
            scale = min(1.0, (step + 1) / warmup) * max(0.0, (total - step) / max(1, total - warmup))
            for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = lr * min(1.0, scale)
            text = None
            if cfg.uses_text:
                if frozen_text:
                    assert inputs.text_states is not None
                    text = inputs.text_states[index]
                else:
                    text = classifier.text_states(*inputs.text_batch(index))
            logits = classifier.classify(text, inputs.image_states[index])
            loss = F.binary_cross_entropy_with_logits(logits, targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
            if log is not None and step % 20 == 0:
                log({"loss": sum(losses[-20:]) / 20}, step)
        epoch += 1
        if val is not None:
            val_logits = predict_logits(classifier, val[0])
            val_loss = float(F.binary_cross_entropy_with_logits(val_logits, val[1].float()))
            if log is not None:
                log({"val_loss": val_loss}, step)
            if best is None or val_loss < best[0]:
                best = (val_loss, _trainable_state(classifier))
            classifier.train()
    if best is not None:
        classifier.load_state_dict(best[1], strict=False)
    classifier.eval()
    return Trained(classifier, step, time.perf_counter() - start, losses, best[0] if best else None)


def _trainable_state(classifier: BiasClassifier) -> dict[str, Tensor]:
    names = {n for n, p in classifier.named_parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in classifier.state_dict().items() if k in names}


@torch.no_grad()
def predict_logits(classifier: BiasClassifier, inputs: Inputs, batch_size: int = 256) -> Tensor:
    """(N,) logits in eval mode."""
    classifier.eval()
    cfg = classifier.config
    out = []
    for k in range(0, len(inputs), batch_size):
        index = torch.arange(k, min(k + batch_size, len(inputs)))
        text = None
        if cfg.uses_text:
            if inputs.text_states is not None and cfg.text_tuning == "frozen":
                text = inputs.text_states[index]
            else:
                text = classifier.text_states(*inputs.text_batch(index))
        out.append(classifier.classify(text, inputs.image_states[index]))
    return torch.cat(out)
