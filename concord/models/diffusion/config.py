"""Generator architecture configs: a frozen dataclass and the named JSON presets in `configs/`.

`load_preset("tiny")` reads `configs/tiny.json` beside this file; a path to any JSON works too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

PRESETS_DIR = Path(__file__).parent / "configs"
# Concord Scenes layout classes (pipelines/data/vocab.py CLASS_NAMES); kept here as data because
# models never import pipelines. A preset may list its own.
SCENE_CLASSES: tuple[str, ...] = (
    "background",
    "circle",
    "square",
    "triangle",
    "diamond",
    "hexagon",
    "star",
    "cross",
    "heart",
    "crescent",
    "blob",
)


@dataclass(frozen=True)
class GeneratorConfig:
    name: str = "tiny"  # preset or model name
    image_size: int = 32  # pixels; square side, divisible by 2^(len(channel_mult)-1)
    class_names: tuple[str, ...] = SCENE_CLASSES  # layout legend; index = class id, 0 background
    layout: bool = True  # True: GCDP joint image + layout; False: image-only baseline (same U-Net)
    patch: int = 1  # pixels folded into channels before the U-Net (pixel unshuffle), 1 = none
    base_channels: int = 32  # U-Net width at the first (image_size / patch) resolution
    channel_mult: tuple[int, ...] = (1, 2, 2)  # width multiplier per resolution level
    res_blocks: int = 1  # ResBlocks per level (down path; the up path has one more)
    attn_resolutions: tuple[int, ...] = (8, 4)  # feature-map sides with self + cross attention
    heads: int = 4  # attention heads; must divide every attended width
    layout_embed_dim: int = 3  # channels of the learned layout embedding concatenated to x_t
    dropout: float = 0.0  # in ResBlocks
    train_timesteps: int = 1000  # T of the discrete schedules
    schedule: str = "cosine"  # Gaussian noise schedule: cosine | linear
    # What the image head predicts: eps (noise) | v = sqrt(ab) eps - sqrt(1 - ab) x0, which stays
    # well conditioned at both ends of the schedule (a small model learns it much faster).
    prediction: str = "eps"
    layout_schedule: str = "cosine"  # categorical keep-probability schedule: cosine | linear
    cond_drop: float = 0.1  # probability the text condition is replaced by the null embedding
    text_dim: int = 384  # width of the text token states (MiniLM)
    max_text_tokens: int = 16  # tokens incl. [CLS]/[SEP]; longer prompts are truncated
    layout_loss_weight: float = 0.1  # lambda_2 of L = |eps - eps_hat|^2 + lambda_2 L_cat (bits/px)

    def __post_init__(self) -> None:
        if self.image_size % (self.patch * 2 ** (len(self.channel_mult) - 1)):
            raise ValueError(
                f"image_size {self.image_size} not divisible by patch {self.patch} x "
                f"2^{len(self.channel_mult) - 1}"
            )
        if len(self.class_names) < 2 or self.class_names[0] != "background":
            raise ValueError("class_names needs >= 2 entries and 'background' at index 0")
        if self.prediction not in ("eps", "v"):
            raise ValueError(f"prediction must be eps or v, got {self.prediction!r}")
        if not 0.0 <= self.cond_drop < 1.0:
            raise ValueError(f"cond_drop must be in [0, 1), got {self.cond_drop}")
        if self.train_timesteps < 2 or self.max_text_tokens < 2:
            raise ValueError("train_timesteps and max_text_tokens must be >= 2")
        for m in self.channel_mult:
            if (self.base_channels * m) % self.heads:
                raise ValueError(f"heads {self.heads} must divide width {self.base_channels * m}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def replace(self, **changes: Any) -> GeneratorConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Returns:
        A JSON-ready dict (tuples as lists); `from_dict` inverts it.
        """
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        """Build a config from `to_dict` output, rejecting unknown keys.

        Args:
            data: field -> value; lists become tuples.
        Returns:
            The validated config.
        """
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown generator config keys: {sorted(unknown)}")
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**values)


def load_preset(name: str) -> GeneratorConfig:
    """A named preset (`tiny`, `small`) or a JSON file path.

    Args:
        name: preset name or path to a JSON written by `to_dict`.
    Returns:
        The config.
    """
    path = Path(name) if name.endswith(".json") else PRESETS_DIR / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in PRESETS_DIR.glob("*.json"))
        raise ValueError(f"unknown generator preset {name!r}; known: {', '.join(known)}")
    return GeneratorConfig.from_dict(json.loads(path.read_text()))
