"""The encoders the scorer pipeline scores: the shared concord-encoder (trained here with the
encoder recipe, or a registered / local one) and registering the optional hard-negative
fine-tune."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from concord.registry import Registry, is_registry_uri, resolve_model
from pipelines.encoder.data import ensure_dataset
from pipelines.scorer.config import GIVEN, SHARED, ScorerConfig


@dataclass
class EncoderRun:
    label: str
    directory: Path
    uri: str  # what scorer.json names: models:/concord-encoder/N or the absolute directory
    seconds: float = 0.0
    note: str = ""


def registry_of(cfg: ScorerConfig) -> Registry | None:
    return Registry(cfg.tracking_uri) if cfg.tracking_uri else None


def shared_encoder(cfg: ScorerConfig, registry: Registry | None) -> EncoderRun:
    if cfg.encoder:

        def tracking() -> Registry:
            assert registry is not None, "a models:/ encoder needs --tracking-uri"
            return registry

        model_id, directory = resolve_model(cfg.encoder, tracking, kind="encoder")
        if is_registry_uri(cfg.encoder):  # pinned: the package names the version scored with
            return EncoderRun(GIVEN, directory, f"models:/{model_id.name}/{model_id.version}")
        return EncoderRun(GIVEN, directory.resolve(), str(directory.resolve()))
    from pipelines.train_encoder import RECIPES, TrainConfig, train

    root = ensure_dataset(
        "retrieval",
        cfg.data_cache / f"retrieval-{cfg.retrieval_size}-seed{cfg.seed}",
        cfg.retrieval_size,
        cfg.seed,
    )
    given = {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "binding_size": cfg.binding_size}
    settings = {**RECIPES[cfg.recipe], **{k: v for k, v in given.items() if v is not None}}
    out = (cfg.work_dir / "encoder-shared").resolve()
    res = train(
        TrainConfig(
            data=root,
            data_cache=cfg.data_cache,
            seed=cfg.seed,
            train_limit=cfg.train_limit,
            out=out,
            tracking_uri=cfg.tracking_uri,
            register=registry is not None,
            run_name=f"scorer-{cfg.recipe}-encoder",
            progress=cfg.progress,
            threads=cfg.threads,
            device=cfg.device,
            **settings,  # type: ignore[arg-type]
        )
    )
    uri = f"models:/concord-encoder/{res.version}" if res.version else str(out)
    h = res.history[-1]
    note = f"recipe {cfg.recipe}: val R@1 t2i {h.val_r1_t2i:.3f}, final loss {h.loss:.3f}"
    return EncoderRun(SHARED, out, uri, res.seconds, note)


def register_encoder(registry: Registry, directory: Path, run_name: str) -> str:
    with registry.start_run(
        run_name, experiment="concord-encoder", tags={"concord.kind": "training"}
    ) as run:
        path = run.log_model_dir(directory)
        run_id = run.run_id
    info = registry.register_model(
        "concord-encoder", run_id, path, tags={"concord.training": "hard-negatives"}
    )
    return f"models:/{info.name}/{info.version}"
