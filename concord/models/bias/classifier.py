"""ViLBias's small-model classifier (arXiv 2412.17052, method card 5): a text encoder (MiniLM,
frozen / LoRA on q,v / fully fine-tuned) and an image encoder (the concord-encoder image tower,
frozen or LoRA on its qkv), each projected and L2-normalised, fused by concatenation or "align"
(element-wise product), then an MLP and a linear head giving one logit of "biased". The text-only
and image-only baselines are the same class with `modality="text"` / `"image"`.

The forward pass is split in three (`text_states`, `image_states`, `classify`) so a pipeline can
precompute what is frozen once and occlusion can reuse one side while varying the other.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from concord.models.text_tower import mean_pool

Fusion = Literal["concat", "align"]
Modality = Literal["both", "text", "image"]
TextTuning = Literal["frozen", "lora", "full"]
ImageTuning = Literal["frozen", "lora"]

TEXT_LORA_TARGETS = ("query", "value")  # BERT self-attention q and v projections
IMAGE_LORA_TARGETS = ("qkv",)  # concord.models.vit.Attention's fused q/k/v projection
TEXT_PREFIX, IMAGE_PREFIX = "text_backbone.", "image_tower."


@dataclass(frozen=True)
class BiasConfig:
    fusion: Fusion = "concat"  # "concat": [t, v]; "align": t * v (element-wise)
    modality: Modality = "both"  # "text" / "image": the unimodal baselines
    text_tuning: TextTuning = "lora"  # MiniLM: frozen, LoRA on q/v, or every weight trained
    image_tuning: ImageTuning = "frozen"  # the encoder's image tower: frozen or LoRA on qkv
    lora_r: int = 8  # LoRA rank (text; the card's small reproduction uses 8)
    lora_alpha: int = 16  # LoRA scale alpha / r
    lora_dropout: float = 0.0
    image_lora_r: int = 8
    proj_dim: int = 128  # each modality's projection (the paper: 768)
    hidden: int = 128  # fusion MLP width
    dropout: float = 0.1  # before each projection and inside the MLP
    max_length: int = 32  # text tokens read, [CLS]/[SEP] included
    # Start both projections at the encoder's own (when proj_dim equals its embed_dim), so the
    # "align" product of the two starts as the encoder's image-text agreement, term by term.
    init_projections: bool = True

    def __post_init__(self) -> None:
        allowed: dict[str, tuple[str, ...]] = {
            "fusion": ("concat", "align"),
            "modality": ("both", "text", "image"),
            "text_tuning": ("frozen", "lora", "full"),
            "image_tuning": ("frozen", "lora"),
        }
        for name, values in allowed.items():
            if getattr(self, name) not in values:
                raise ValueError(f"{name} must be one of {values}, got {getattr(self, name)!r}")
        if min(self.lora_r, self.image_lora_r, self.proj_dim, self.hidden, self.lora_alpha) < 1:
            raise ValueError(f"ranks and widths must be positive: {self}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1): {self}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")

    @property
    def uses_text(self) -> bool:
        return self.modality != "image"

    @property
    def uses_image(self) -> bool:
        return self.modality != "text"

    def to_dict(self) -> dict[str, Any]:
        """Returns: a JSON-ready dict; `from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BiasConfig:
        """Build from `to_dict` output. Raises: ValueError on unknown keys or bad values."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown BiasConfig keys: {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> BiasConfig:
        return BiasConfig.from_dict({**self.to_dict(), **changes})


class BiasClassifier(nn.Module):
    """P(biased) logits for image-text pairs.

    Args:
        config: the architecture and what is trained.
        text_backbone: a transformers BERT-like model (MiniLM); LoRA is injected in place, so
            pass a copy if the caller keeps using it (`from_encoder` does).
        image_tower: a module `pixels -> (pooled (B, image_width), tokens)`
            (concord.models.vit.ImageTower); LoRA is injected in place too.
        image_width: size of the image tower's pooled output.
    Frozen towers stay in eval mode (no dropout) when the classifier is put in train mode.
    """

    def __init__(
        self, config: BiasConfig, text_backbone: nn.Module, image_tower: nn.Module, image_width: int
    ) -> None:
        super().__init__()
        self.config = config
        backbone_config: Any = getattr(text_backbone, "config", None)
        if backbone_config is None or not hasattr(backbone_config, "hidden_size"):
            raise TypeError("text_backbone must be a transformers model (.config.hidden_size)")
        self.text_width = int(backbone_config.hidden_size)
        self.image_width = int(image_width)
        self.text_backbone = _tune(
            text_backbone, config.text_tuning, TEXT_LORA_TARGETS, config.lora_r, config
        )
        self.image_tower = _tune(
            image_tower, config.image_tuning, IMAGE_LORA_TARGETS, config.image_lora_r, config
        )
        p = config.proj_dim
        self.text_proj = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(self.text_width, p))
        self.image_proj = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(self.image_width, p))
        fused = {"both": 2 * p if config.fusion == "concat" else p, "text": p, "image": p}
        width = fused[config.modality]
        # No LayerNorm here: it would subtract the mean of the "align" product, which is the
        # image-text cosine / proj_dim, the very agreement that fusion exists to expose.
        self.mlp = nn.Sequential(
            nn.Linear(width, config.hidden),
            nn.GELU(),
            nn.Dropout(config.dropout),
        )
        self.head = nn.Linear(config.hidden, 1)
        self.train(self.training)

    @classmethod
    def from_encoder(cls, config: BiasConfig, encoder: nn.Module) -> BiasClassifier:
        """A classifier over a Concord DualEncoder's MiniLM backbone and image tower. Towers that
        are trained (LoRA or full) are deep copies; frozen ones are shared with `encoder`.

        Raises:
            TypeError: the encoder is not a Concord DualEncoder (it has no `image_tower`).
        """
        text_tower = getattr(encoder, "text_tower", None)
        image_tower = getattr(encoder, "image_tower", None)
        encoder_config: Any = getattr(encoder, "config", None)
        if text_tower is None or image_tower is None or encoder_config is None:
            raise TypeError(
                f"the bias classifier needs a Concord encoder (DualEncoder), got "
                f"{type(encoder).__name__}"
            )
        backbone = text_tower.backbone
        if config.text_tuning != "frozen":
            backbone = copy.deepcopy(backbone)
        if config.image_tuning != "frozen":
            image_tower = copy.deepcopy(image_tower)
        classifier = cls(config, backbone, image_tower, int(encoder_config.image.width))
        if config.init_projections:
            classifier.copy_projections(encoder)
        return classifier

    @torch.no_grad()
    def copy_projections(self, encoder: nn.Module) -> bool:
        """Copy the encoder's text / image projections into this classifier's (bias zeroed).

        Returns: whether they were copied (False: the encoder's sizes differ from proj_dim).
        """
        text_proj, image_proj = getattr(encoder, "text_proj", None), getattr(encoder, "image_proj", None)
        pairs = ((self.text_proj[1], text_proj), (self.image_proj[1], image_proj))
        for ours, theirs in pairs:
            if not isinstance(theirs, nn.Linear) or not isinstance(ours, nn.Linear):
                return False
            if theirs.weight.shape != ours.weight.shape:
                return False
        for ours, theirs in pairs:
            assert isinstance(ours, nn.Linear) and isinstance(theirs, nn.Linear)
            ours.weight.copy_(theirs.weight)
            if ours.bias is not None:
                ours.bias.zero_()
        return True

    # -- what is trained -----------------------------------------------------------------
    def train(self, mode: bool = True) -> BiasClassifier:
        super().train(mode)
        if self.config.text_tuning == "frozen":
            self.text_backbone.eval()
        if self.config.image_tuning == "frozen":
            self.image_tower.eval()
        return self

    def from_encoder_key(self, key: str) -> bool:
        """Whether a state-dict key is an encoder weight used unchanged (not in the package)."""
        if "lora_" in key:
            return False
        if key.startswith(TEXT_PREFIX):
            return self.config.text_tuning != "full"
        return key.startswith(IMAGE_PREFIX)

    def own_state_dict(self) -> dict[str, Tensor]:
        """The weights the package stores: everything but the encoder's unchanged weights."""
        return {
            k: v.detach().cpu().clone()
            for k, v in self.state_dict().items()
            if not self.from_encoder_key(k)
        }

    def load_own_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load `own_state_dict` output over encoder-initialised towers.

        Raises:
            ValueError: keys missing from `state` or unknown to this architecture.
        """
        expected = {k for k in self.state_dict() if not self.from_encoder_key(k)}
        missing, unknown = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unknown:
            raise ValueError(
                f"bias weights do not match the config: missing {missing[:5]}, "
                f"unknown {unknown[:5]}"
            )
        self.load_state_dict(state, strict=False)

    def parameter_counts(self) -> tuple[int, int]:
        """Returns: (trainable, total) parameters on the path this modality uses."""
        used: list[nn.Module] = [self.mlp, self.head]
        if self.config.uses_text:
            used += [self.text_backbone, self.text_proj]
        if self.config.uses_image:
            used += [self.image_tower, self.image_proj]
        params = [p for m in used for p in m.parameters()]
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    # -- forward -------------------------------------------------------------------------
    def text_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, T) ids and mask -> (B, text_width): MiniLM states mean-pooled over real tokens."""
        states = self.text_backbone(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        return mean_pool(states, attention_mask)

    def image_states(self, pixels: Tensor) -> Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, image_width): the image tower's pooled output."""
        pooled, _ = self.image_tower(pixels)
        return pooled

    def classify(self, text_states: Tensor | None, image_states: Tensor | None) -> Tensor:
        """Project, L2-normalise, fuse and score. The side this modality ignores may be None.

        Returns: (B,) logits of "biased".
        """
        parts: list[Tensor] = []
        if self.config.uses_text:
            if text_states is None:
                raise ValueError(f"modality {self.config.modality!r} needs text states")
            parts.append(F.normalize(self.text_proj(text_states), dim=-1))
        if self.config.uses_image:
            if image_states is None:
                raise ValueError(f"modality {self.config.modality!r} needs image states")
            parts.append(F.normalize(self.image_proj(image_states), dim=-1))
        # Unit vectors have entries ~ 1/sqrt(P): rescale so the MLP sees entries ~ 1.
        p = self.config.proj_dim
        if len(parts) == 2 and self.config.fusion == "align":
            fused = parts[0] * parts[1] * p  # sums to P * cosine of the two projections
        else:
            fused = torch.cat(parts, dim=-1) * math.sqrt(p)
        return self.head(self.mlp(fused)).squeeze(-1)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, pixels: Tensor | None) -> Tensor:
        """Returns: (B,) logits of "biased" (pixels may be None for the text-only baseline)."""
        text = self.text_states(input_ids, attention_mask) if self.config.uses_text else None
        image = (
            self.image_states(pixels) if self.config.uses_image and pixels is not None else None
        )
        return self.classify(text, image)


def _tune(
    module: nn.Module, tuning: str, targets: tuple[str, ...], rank: int, config: BiasConfig
) -> nn.Module:
    """Freeze `module`, train it fully, or inject LoRA adapters (peft) into `targets`."""
    if tuning == "full":
        module.requires_grad_(True)
        return module
    module.requires_grad_(False)
    if tuning == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        lora = LoraConfig(
            r=rank,
            lora_alpha=config.lora_alpha * rank // config.lora_r,
            lora_dropout=config.lora_dropout,
            target_modules=list(targets),
        )
        module = inject_adapter_in_model(lora, module)
        for name, param in module.named_parameters():
            param.requires_grad_("lora_" in name)
    return module
