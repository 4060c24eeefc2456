"""The scorer pipeline end to end on tiny data (a few training steps): it writes the scorer
package, registers it as concord-scorer@production in a real (sqlite) MLflow registry, and
writes the report rows and plots. Checks what is written, not the quality."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import pytest
import torch

from concord.checkpoints import load_model
from concord.models.alignment import AlignmentScorer, aligned_probability
from concord.registry import Registry
from pipelines.scorer.hardneg import HardNegConfig
from pipelines.scorer.package import SCORER_FILE, read_scorer_package, write_scorer_package
from pipelines.scorer.pipeline import ScorerConfig
from pipelines.scorer.report import build_report


@pytest.mark.slow  # trains for about 10 s on 2 cores
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
        binding_size="tiny",
        hard_negatives=True,
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
    assert package["penalty"] > 0  # F-CLIPScore's weight, fitted on val (never zero)
    assert package["f_threshold"] >= 0
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
    for enc in ("shared", "hard-neg"):
        assert f"F-CLIPScore [{enc}]" in methods and f"CLIP4DM [{enc}]" in methods
        assert f"CLIP4DM clamped (ablation) [{enc}]" in methods
    assert (tmp_path / "reports" / "scorer" / "reliability.png").stat().st_size > 0
    text = files.markdown.read_text()
    assert "![reliability](scorer/reliability.png)" in text and "## pair AUC" in text

    # -- several encoders (seeds): every row is the mean over them, the package the first's
    shared = str(tmp_path / "work" / "encoder-shared")
    given = replace(cfg, encoder=shared, hard_negatives=False, work_dir=tmp_path / "work2")
    again, files = build_report(given, tmp_path / "reports", "seeds", more_encoders=[shared])
    rows = json.loads(files.json.read_text())["rows"]
    auc = next(r for r in rows if r["metric"] == "pair AUC" and r["method"] == "CLIPScore [given]")
    assert auc["seeds"] == 2 and auc["spread"] == pytest.approx(0.0)  # the same encoder twice
    assert read_scorer_package(again.package_dir)["encoder"] == shared
    latest = Registry(uri).download("models:/concord-scorer@production")[0]
    assert latest.version == 2  # the first encoder's package registered; the second's not


def test_package_refuses_missing_calibration_and_relative_encoder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="calibration"):
        write_scorer_package(tmp_path, "models:/concord-encoder/1", {})
    with pytest.raises(ValueError, match="absolute"):
        write_scorer_package(tmp_path, "relative/dir", {"form": "logistic"})


def test_fit_f_clip_weighs_attributions_by_what_they_add_on_held_out_pairs() -> None:
    """When only the attributions tell aligned from misaligned pairs, the fitted penalty lets
    F-CLIPScore separate them where CLIPScore cannot; it is scale-free in the attributions."""
    import numpy as np

    from concord.models.alignment import RawPair
    from pipelines.evaluate.classification import roc_auc
    from pipelines.scorer import evaluate as ev
    from pipelines.scorer.data import Pair, PairSet

    rng = np.random.default_rng(0)
    n, scale = 200, 1e-4
    aligned = np.arange(n) % 2 == 0
    cosines = rng.uniform(0.2, 0.4, n)  # carries no signal
    raws, pairs = [], []
    for i in range(n):
        a = rng.normal(0, 0.1, 3) * scale
        if not aligned[i]:
            a[1] = -scale  # the contradicted word
        raws.append(
            RawPair(
                "a b c",
                ((0, 1), (2, 3), (4, 5)),
                float(cosines[i]),
                0.0,
                a,
                a,
                np.zeros((3, 4)),
                None,
            )
        )
        kind = "aligned" if aligned[i] else "attribute"
        pairs.append(Pair(i, "a b c", bool(aligned[i]), kind, (), i // 2))
    data = PairSet(torch.zeros(n, 3, 2, 2), tuple(pairs), tuple(str(i) for i in range(n)))
    scored = ev.Scored(data, tuple(raws), tuple(np.zeros(3, int) for _ in raws))
    threshold, penalty, auc = ev.fit_f_clip(scored, weight=2.5)
    scores = ev.pair_scores(scored, threshold, 2.5, penalty)
    assert penalty > 0
    assert auc == pytest.approx(roc_auc(aligned, scores["f_clip_score"]))
    assert auc > 0.9 > roc_auc(aligned, scores["clip_score"])
    # ten times larger attributions: ten times smaller penalty, same scores
    big = ev.Scored(
        data,
        tuple(RawPair(**{**r.__dict__, "attributions": r.attributions * 10}) for r in raws),
        scored.labels,
    )
    big_threshold, big_penalty, big_auc = ev.fit_f_clip(big, weight=2.5)
    assert big_threshold == pytest.approx(threshold * 10) and big_auc == pytest.approx(auc)
    assert big_penalty == pytest.approx(penalty / 10)


def test_auc_difference_ci_brackets_a_real_gap_and_is_zero_for_equal_scores() -> None:
    import numpy as np

    from concord.models.alignment import RawPair
    from pipelines.scorer import evaluate as ev
    from pipelines.scorer.data import Pair, PairSet

    n = 400
    pairs = tuple(
        Pair(i, "t", i % 2 == 0, "aligned" if i % 2 == 0 else "attribute", (), i // 2)
        for i in range(n)
    )
    data = PairSet(torch.zeros(n, 3, 2, 2), pairs, tuple(str(i) for i in range(n)))
    empty = RawPair("t", (), 0.0, 0.0, np.zeros(0), np.zeros(0), np.zeros((0, 1)), None)
    scored = ev.Scored(data, (empty,) * n, (np.zeros(0),) * n)
    rng = np.random.default_rng(0)
    y = scored.aligned.astype(float)
    sharp, blurred = y + rng.normal(0, 1, n), y + rng.normal(0, 3, n)
    low, high = ev.auc_difference_ci(scored, sharp, blurred)
    assert 0 < low < high  # the sharper score is better beyond noise
    assert ev.auc_difference_ci(scored, sharp, sharp) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("preset", "described"),
    [
        ("tiny-cnn", "tiny-cnn: CNN, 128 channels out, max-pooled"),
        ("tiny-conv", "tiny-conv: ViT 4 x 128, convolutional stem, mean-pooled"),
    ],
)
def test_the_report_names_the_image_tower_it_scored_with(
    tmp_path: Path, preset: str, described: str
) -> None:
    from concord.models.config import load_config
    from pipelines.scorer.report_markdown import _image_tower

    (tmp_path / "config.json").write_text(json.dumps(load_config(preset).to_dict()))
    assert _image_tower(tmp_path) == described
