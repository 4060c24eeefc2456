"""The encoder runs a report measures: the shared recipe and its caption-only baseline, one run
per seed, kept in a runs directory so that a report reuses a finished run (its training record
says how it was trained) instead of training it again."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from rich.console import Console

from concord.checkpoints import load_encoder
from pipelines.encoder.embed import TextStateCache
from pipelines.train_encoder import (
    RECIPES,
    TRAINING_RECORD,
    EpochStats,
    TrainConfig,
    TrainResult,
    dataset_dirs,
    train,
)

console = Console()
RECIPE, BASELINE = "Concord recipe", "captions only"

# What must match for a stored run to stand for the one asked for (paths compared resolved).
MATCHED = (
    "preset", "loss", "unfrozen_layers", "embed_dim", "hard_negatives", "foil_weight", "twins",
    "shape_twins", "caption_rounds", "epochs", "batch_size", "lr", "text_lr", "weight_decay",
    "seed", "train_limit", "data", "binding", "reword", "grounding", "relations",
    "relation_margin", "fronted_probes", "mirror_twins", "caption_relations",
    "caption_swaps",
)  # fmt: skip


@dataclass(frozen=True)
class Variant:
    name: str  # the method name in the report's rows
    slug: str  # its runs-directory prefix
    overrides: dict[str, object]  # on top of the recipe

    def settings(self, recipe: str, epochs: int | None) -> dict[str, object]:
        s = {**RECIPES[recipe], **self.overrides}
        return s if epochs is None else {**s, "epochs": epochs}


VARIANTS = (
    Variant(RECIPE, "concord", {}),
    # The same model, optimiser and epochs on the dataset's own captions: no foils, no twins, no
    # binding pairs. What the recipe's hard negatives buy is the difference.
    Variant(
        BASELINE,
        "captions",
        {
            "hard_negatives": 0,
            "twins": False,
            "shape_twins": False,
            "binding_size": "",
            "reword": 0.0,
            "grounding": 0.0,
            "relations": 0.0,
            "relation_margin": None,
            "fronted_probes": False,
            "caption_relations": 0,
            "caption_swaps": False,
        },
    ),
)


def _comparable(cfg: TrainConfig) -> dict[str, object]:
    """The settings that decide what a run learns; the datasets as resolved directories."""
    d = asdict(cfg)
    data, binding = dataset_dirs(cfg)
    d["data"], d["binding"] = str(data.resolve()), str(binding.resolve()) if binding else None
    return {k: d.get(k) for k in MATCHED}


def _stored_config(record: dict[str, object]) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    stored = record["config"]
    assert isinstance(stored, dict)
    return TrainConfig(**{k: v for k, v in stored.items() if k in known})


def stored_run(cfg: TrainConfig) -> TrainResult | None:
    """The run in `cfg.out` if its training record matches `cfg`, else None (says why)."""
    assert cfg.out is not None
    path = Path(cfg.out) / TRAINING_RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    stored, wanted = _comparable(_stored_config(record)), _comparable(cfg)
    differs = [k for k in MATCHED if stored[k] != wanted[k]]
    if differs:
        console.print(f"[yellow]{cfg.out}: trained with other {', '.join(differs)}; retraining[/]")
        return None
    model, tokenizer = load_encoder(Path(cfg.out))
    result = TrainResult(model, tokenizer, Path(cfg.out))
    result.history = [EpochStats(**h) for h in record["history"]]
    result.seconds = float(record["seconds"])
    result.train_images = int(record.get("train_images", 0))
    result.world_size = int(record.get("world_size", 1))
    return result


def obtain(
    variant: Variant,
    seed: int,
    *,
    recipe: str,
    runs_dir: Path,
    data: Path,
    binding: Path | None,
    data_cache: Path,
    epochs: int | None = None,
    threads: int = 2,
    tracking_uri: str | None = None,
    cache: TextStateCache | None = None,
) -> tuple[TrainResult, bool]:
    """The variant's run for `seed`: the stored one when it matches, else trained now.

    `cache` holds the frozen MiniLM layers' states of texts already seen (shared by the runs of
    one report: same backbone, same frozen depth), so a second run skips most of that setup.

    Returns: (the run, whether it was reused).
    """
    settings = variant.settings(recipe, epochs)
    cfg = TrainConfig(
        data=data,
        binding=binding if settings.get("binding_size") else None,
        data_cache=data_cache,
        seed=seed,
        out=runs_dir / f"{variant.slug}-seed{seed}",
        threads=threads,
        tracking_uri=tracking_uri,
        run_name=f"report-{variant.slug}-seed{seed}",
        progress=False,
        **settings,  # type: ignore[arg-type]
    )
    stored = stored_run(cfg)
    if stored is not None:
        console.print(f"[dim]{variant.name}, seed {seed}: reusing {cfg.out}[/]")
        return stored, True
    return train(cfg, cache=cache), False
