"""The scorer pipeline's configuration and the labels of the encoders it scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipelines.scorer.hardneg import HardNegConfig

TEMPLATE = "A photo depicts "  # CLIP4DM's prompt prefix, measured on val
SHARED, HARDNEG, GIVEN = "shared", "hard-neg", "given"


@dataclass(frozen=True)
class ScorerConfig:
    encoder: str | None = None  # models:/NAME/VERSION|@ALIAS or a local dir; None: train one
    seed: int = 0  # data seed and training seed
    retrieval_size: str = "small"  # Concord Scenes retrieval preset the encoder trains on
    misalignment_size: str = "small"  # misalignment preset (train for hard negatives, val, test)
    data_cache: Path = Path(".cache/encoder-data")  # shared with the encoder report
    work_dir: Path = Path(".cache/scorer")  # encoders and the package are written here
    # Without --encoder the pipeline trains the shared concord-encoder with its one recipe
    # (pipelines.train_encoder.RECIPES), so the scorer scores with the encoder every service uses;
    # the fields below override the recipe's settings (None: the recipe's).
    recipe: str = "concord"
    epochs: int | None = None
    batch_size: int | None = None
    binding_size: str | None = None  # binding preset whose train pairs join ('' for none)
    train_limit: int = 0  # retrieval train images (0: all)
    hard_negatives: bool = False  # also fine-tune a copy on the misalignment train split
    hard_neg: HardNegConfig = field(default_factory=HardNegConfig)
    hard_neg_limit: int = 0  # misalignment train images for hard negatives (0: all)
    val_limit: int = 0
    test_limit: int = 0
    weight: float = 2.5
    layers: int = 3
    template_check: bool = True  # measure CLIP4DM's "A photo depicts " prefix on val
    tracking_uri: str | None = None  # MLflow: register encoders and the scorer (None: local only)
    alias: str = "production"
    register_package: bool = True  # register concord-scorer (with a tracking URI)
    progress: bool = False
    threads: int = 2  # torch CPU threads (1 is faster when other jobs share the cores)
    device: str = "auto"  # auto | cpu | cuda | cuda:N: encoder training and scoring (fp32)
