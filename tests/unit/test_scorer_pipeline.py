"""The scorer pipeline end to end on tiny data (a few training steps): it writes the scorer
package, registers it as concord-scorer@production in a real (sqlite) MLflow registry, and
writes the report rows and plots. Checks what is written, not the quality."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import pytest
import torch

from concord.loading import load_model
from concord.models.alignment import AlignmentScorer, aligned_probability
from concord.registry import Registry
from pipelines.scorer.hardneg import HardNegConfig
from pipelines.scorer.package import SCORER_FILE, read_scorer_package, write_scorer_package
from pipelines.scorer.pipeline import ScorerConfig
from pipelines.scorer.report import build_report


def test_pipeline_writes_package_registry_and_report(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = ScorerConfig(
        seed=1,
        retrieval_size="tiny",
        misalignment_size="tiny",
        data_cache=tmp_path / "data",
        work_dir=tmp_path / "work",
        epochs=1,
        batch_size=8,
        hard_neg=HardNegConfig(epochs=1, batch_size=4),
        hard_neg_limit=3,
        val_limit=2,
        test_limit=2,
        template_check=False,
        tracking_uri=uri,
    )
    result, files = build_report(cfg, tmp_path / "reports", name="scorer")

    # -- the package: scorer.json per the contract, pointing at a registered encoder
    package = read_scorer_package(result.package_dir)
    assert package["encoder"].startswith("models:/concord-encoder/")
    assert package["weight"] == 2.5 and package["layers"] == 3 and package["data_seed"] == 1
    assert package["threshold"] >= 0 and package["created_by"] == "pipelines.scorer"
    cal = package["calibration"]
    assert cal["form"] == "logistic" and len(cal["coef"]) == len(cal["features"]) == 3

    # -- the registry: concord-scorer@production holds that scorer.json; its encoder loads
    registry = Registry(uri)
    info, directory = registry.download("models:/concord-scorer@production")
    assert info.version == result.version == 1
    assert json.loads((directory / SCORER_FILE).read_text()) == package
    encoder = load_model(package["encoder"], lambda: registry)
    scorer = AlignmentScorer(
        encoder.torch_model(), encoder.tokenizer, weight=package["weight"], layers=package["layers"]
    )
    pair = scorer.score(torch.rand(1, 3, 64, 64), ["a red circle"], threshold=package["threshold"])
    assert 0.0 <= aligned_probability(pair[0], cal) <= 1.0

    # -- the report: markdown, JSON rows (metric/split/method/value/baseline), plots
    body = json.loads(files.json.read_text())
    rows = body["rows"]
    assert body["data_seed"] == 1 and rows
    assert all({"metric", "split", "method", "value"} <= set(r) for r in rows)
    metrics = {r["metric"] for r in rows}
    assert {"pair AUC", "word F1", "word AP", "localisation accuracy", "ECE"} <= metrics
    methods = {r["method"] for r in rows}
    for enc in ("plain", "hard-neg"):
        assert f"F-CLIPScore [{enc}]" in methods and f"CLIP4DM [{enc}]" in methods
        assert f"CLIP4DM clamped (ablation) [{enc}]" in methods
    assert (tmp_path / "reports" / "scorer" / "reliability.png").stat().st_size > 0
    text = files.markdown.read_text()
    assert "![reliability](scorer/reliability.png)" in text and "## pair AUC" in text


def test_package_refuses_missing_calibration_and_relative_encoder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="calibration"):
        write_scorer_package(tmp_path, "models:/concord-encoder/1", {})
    with pytest.raises(ValueError, match="absolute"):
        write_scorer_package(tmp_path, "relative/dir", {"form": "logistic"})
