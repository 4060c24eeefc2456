"""The encoder report end to end at toy scale: the recipe and its caption-only baseline over
two seeds, means with their spread, the goal table, XBT; the stored runs are reused when their
training records match and retrained when a setting changed. Checks what is written
and reused, not the quality."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from pipelines.encoder.report import ReportConfig, build
from pipelines.encoder.runs import BASELINE, RECIPE, VARIANTS, obtain
from pipelines.evaluate.report import write_report
from pipelines.train_encoder import RECIPES, TrainConfig, check_config


@pytest.mark.slow  # four 1-epoch trainings on toy data
def test_report_over_seeds_then_reuses_its_runs(tmp_path: Path) -> None:
    cfg = ReportConfig(
        seeds=(0, 1),
        epochs=1,
        data_size="tiny",
        data_cache=tmp_path / "data",
        runs_dir=tmp_path / "runs",
        xbt_pairs=8,
        out_dir=tmp_path / "reports",
    )
    rows, notes = build(cfg)
    by_key = {(r.metric, r.split, r.method): r for r in rows}
    recipe = by_key[("R@1", "test t2i", RECIPE)]
    assert recipe.seeds == 2 and recipe.spread is not None and recipe.baseline == BASELINE
    assert by_key[("R@1", "test t2i", BASELINE)].seeds == 2
    assert ("pair accuracy", "binding t2i", f"{RECIPE} (FILIP scoring)") in by_key
    assert ("R@1", "test_unseen_wording t2i", RECIPE) in by_key
    shape = by_key[("accuracy", "test objects: shape told the colour", RECIPE)]
    assert shape.seeds == 2 and 0.0 <= shape.value <= 1.0
    assert 0.0 < by_key[("accuracy", "test objects: shape told the colour", "chance")].value < 1.0
    assert not any("digits" in r.split for r in rows)
    assert "| digits zero-shot | removed |" in notes
    assert any(r.metric == "XBT R@1" for r in rows)
    assert "| retrieval R@1 t2i, global |" in notes and ">= 0.85" in notes
    assert notes.count("| no |") == 4  # four runs, all trained now
    for variant in VARIANTS:
        for seed in (0, 1):
            stored = tmp_path / "runs" / f"{variant.slug}-seed{seed}" / "training.json"
            record = json.loads(stored.read_text())
            assert record["config"]["seed"] == seed and record["config"]["epochs"] == 1
    recipe_record = json.loads((tmp_path / "runs" / "concord-seed0" / "training.json").read_text())
    assert recipe_record["config"]["hard_negatives"] == 2 and recipe_record["config"]["twins"]
    files = write_report("encoder", rows, cfg.out_dir, data_seed=0, notes=notes)
    assert "± " in files.markdown.read_text()

    # a second report would train nothing: every run's record matches what it asks for
    common = dict(recipe="concord", runs_dir=cfg.runs_dir, data=tmp_path / "data" / "retrieval-tiny-seed0",
                  binding=tmp_path / "data" / "binding-tiny-seed0", data_cache=cfg.data_cache)
    for variant in VARIANTS:
        for seed in (0, 1):
            run, reused = obtain(variant, seed, epochs=1, **common)  # type: ignore[arg-type]
            assert reused and run.history[-1].epoch == 1 and run.seconds > 0

    # a changed setting (2 epochs) does not reuse the 1-epoch run; once trained, it is reused
    run, reused = obtain(VARIANTS[1], 0, epochs=2, **common)  # type: ignore[arg-type]
    assert not reused and run.history[-1].epoch == 2
    run, reused = obtain(VARIANTS[1], 0, epochs=2, **common)  # type: ignore[arg-type]
    assert reused and run.history[-1].epoch == 2


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_variant_of_every_recipe_is_a_config_training_accepts(recipe: str) -> None:
    # The baseline switches the relation term off: whatever acts within it must go too, or the
    # report would fail only after training the recipe's runs.
    for variant in VARIANTS:
        check_config(TrainConfig(**variant.settings(recipe, epochs=1)))  # type: ignore[arg-type]
    baseline = next(v for v in VARIANTS if v.name == BASELINE).settings(recipe, None)
    assert not baseline.get("relations") and not baseline.get("caption_relations")
