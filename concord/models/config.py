"""Encoder architecture configs: frozen dataclasses and the named JSON presets in `configs/`.

`load_config("tiny")` reads `configs/tiny.json` from this package; a path to any JSON works too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PRESETS_DIR = Path(__file__).parent / "configs"


STEMS = ("patch", "conv", "cnn")
POOLS = ("mean", "attn", "max")


@dataclass(frozen=True)
class ImageTowerConfig:
    image_size: int = 64  # pixels; square input side, a multiple of patch_size
    patch_size: int = 8  # pixels; (image_size / patch_size)^2 patch tokens
    width: int = 128  # transformer width (channels per token)
    depth: int = 4  # transformer blocks
    heads: int = 4  # attention heads; must divide width
    mlp_ratio: float = 4.0  # MLP hidden size / width
    # How pixels become patch tokens. "patch": one linear map per non-overlapping patch (plain
    # ViT). "conv": a stack of stride-2 3x3 convolutions down to the same patch grid (Xiao et al.
    # 2021, "Early convolutions help transformers see better"): on small data trained from
    # scratch it learns shapes that the linear patch map does not. Needs a power-of-2 patch_size.
    # "cnn": 3x3 convolutions at full resolution with 2x2 max-pooling down to the patch grid
    # (VGG-style): a 10-pixel shape is seen before it is downsampled. With depth 0 the tower is
    # that CNN alone (tokens: its last feature map); in a supervised shape probe on Concord Scenes
    # it reached shape AUC 0.89 where the "conv" stem ViT stayed at 0.70 (README, "Where the recipe
    # falls short").
    stem: str = "patch"
    # How patch tokens become the pooled embedding. "mean": their average (every background patch
    # weighs as much as an object's). "attn": a learned query attends over the tokens (SigLIP's
    # MAP head, Zhai et al. 2023), so a few object patches can carry the whole embedding. "max":
    # the channel-wise maximum over tokens (an object's features survive however small it is).
    pool: str = "mean"
    # CoordConv (Liu et al. 2018): each pixel's x and y join its RGB as two input channels, so the
    # stem's convolutions can say where a feature is as well as what it is. Convolutions are
    # translation-equivariant and max pooling drops place; the learned position embedding added
    # after the stem stayed weak (a tenth of a token's norm), and left/right sat at chance even on
    # training images (README, "Relations").
    coords: bool = False

    def __post_init__(self) -> None:
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(STEMS)}, got {self.stem!r}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        if self.stem in ("conv", "cnn") and (
            self.patch_size < 2 or self.patch_size & (self.patch_size - 1)
        ):
            raise ValueError(
                f"a {self.stem} stem needs a power-of-2 patch_size >= 2, got {self.patch_size}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} not a multiple of patch_size {self.patch_size}"
            )
        if self.width % self.heads:
            raise ValueError(f"width {self.width} not divisible by heads {self.heads}")
        if min(self.image_size, self.patch_size, self.width, self.heads) < 1 or self.depth < 0:
            raise ValueError(f"image tower dimensions must be positive: {self}")
        if self.depth == 0 and self.stem != "cnn":
            raise ValueError(f"depth 0 (no transformer blocks) needs stem 'cnn', got {self.stem!r}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class TextTowerConfig:
    max_length: int = 64  # tokens, including [CLS]/[SEP]; longer texts are truncated
    unfrozen_layers: int = 0  # 0 = MiniLM frozen; k = top k transformer layers trainable

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise ValueError(
                f"max_length must be >= 2 (room for [CLS] and [SEP]), got {self.max_length}"
            )
        if self.unfrozen_layers < 0:
            raise ValueError(f"unfrozen_layers must be >= 0, got {self.unfrozen_layers}")


@dataclass(frozen=True)
class EncoderConfig:
    name: str  # preset or model name, e.g. "tiny"
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)  # image tower
    text: TextTowerConfig = field(default_factory=TextTowerConfig)  # text tower
    embed_dim: int = 256  # joint embedding dimension E
    init_temperature: float = 0.07  # initial softmax temperature; logit scale = 1 / temperature

    def __post_init__(self) -> None:
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim must be positive, got {self.embed_dim}")
        if not 0 < self.init_temperature <= 1:
            raise ValueError(f"init_temperature must be in (0, 1], got {self.init_temperature}")

    def to_dict(self) -> dict[str, Any]:
        """Returns:
        A JSON-ready nested dict; `from_dict` inverts it.
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        """Build a config from `to_dict` output, rejecting unknown keys.

        Args:
            data: nested dict with `name`, `image`, `text`, `embed_dim`, `init_temperature`.
        Returns:
            The EncoderConfig.
        """
        data = dict(data)
        image = ImageTowerConfig(**data.pop("image", {}))
        text = TextTowerConfig(**data.pop("text", {}))
        return cls(image=image, text=text, **data)

    def replace(self, **changes: Any) -> EncoderConfig:
        """Returns:
        A copy with top-level fields changed; `image`/`text` accept dicts of their fields.
        """
        data = self.to_dict()
        for key, value in changes.items():
            if key in ("image", "text") and isinstance(value, dict):
                data[key] = {**data[key], **value}
            elif key in ("image", "text"):
                data[key] = asdict(value)
            else:
                data[key] = value
        return EncoderConfig.from_dict(data)


def preset_names() -> list[str]:
    """Returns:
    The names of the bundled presets (`tiny`, `small`, `base`, ...).
    """
    return sorted(p.stem for p in PRESETS_DIR.glob("*.json"))


def load_config(name_or_path: str | Path) -> EncoderConfig:
    """Load a bundled preset by name, or any config JSON by path.

    Args:
        name_or_path: a preset name (see `preset_names()`) or a path to a `.json` file.
    Returns:
        The EncoderConfig.
    """
    path = PRESETS_DIR / f"{name_or_path}.json"
    if not path.is_file():
        path = Path(name_or_path)
        if path.suffix != ".json" or not path.is_file():
            raise ValueError(
                f"unknown encoder config {name_or_path!r}; presets: {', '.join(preset_names())}"
            )
    return EncoderConfig.from_dict(json.loads(path.read_text()))
