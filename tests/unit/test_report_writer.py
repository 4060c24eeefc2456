"""The report writer: markdown + JSON + plots beside baselines, and the same rows in MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.evaluate.report import MetricRow, log_to_mlflow, mean_over_seeds, write_report

ROWS = [
    MetricRow("R@1", "test", "global", 0.41),
    MetricRow("R@1", "test", "filip", 0.52, baseline="global"),
    MetricRow("R@1", "test_compositional", "global", 0.20),
    MetricRow("R@1", "test_compositional", "filip", 0.31, baseline="global"),
    MetricRow("AUC", "test", "clipscore", 0.70),
    MetricRow("AUC", "test", "f-clipscore", 0.81, baseline="clipscore"),
]


def test_report_files_hold_the_rows_and_compare_with_baselines(tmp_path: Path) -> None:
    files = write_report("demo", ROWS, out_dir=tmp_path, data_seed=7)
    md = files.markdown.read_text()
    assert "| test | filip | 0.5200 | global | 0.4100 | +0.1100 |" in md
    assert "| test | f-clipscore | 0.8100 | clipscore | 0.7000 | +0.1100 |" in md
    assert len(files.plots) == 2
    for plot in files.plots:
        assert plot.read_bytes()[:4] == b"\x89PNG" and f"demo/{plot.name}" in md
    data = json.loads(files.json.read_text())
    assert [MetricRow(**r) for r in data["rows"]] == ROWS
    assert "baseline" not in data["rows"][0]
    assert data["data_seed"] == 7 and data["machine"]["cpus"] >= 1 and data["commit"]


def test_means_over_seeds_carry_their_spread_into_the_table_and_json(tmp_path: Path) -> None:
    seeds = [
        [MetricRow("R@1", "test", "recipe", v), MetricRow("R@1", "test", "base", b)]
        for v, b in ((0.40, 0.30), (0.50, 0.30), (0.60, 0.30))
    ]
    seeds[2].append(MetricRow("R@1", "val", "recipe", 0.7))  # only one seed has it: kept out
    rows = mean_over_seeds(seeds)
    assert [(r.method, r.split) for r in rows] == [("recipe", "test"), ("base", "test")]
    assert rows[0].value == pytest.approx(0.5) and rows[0].spread == pytest.approx(0.08165, abs=1e-4)
    assert rows[0].seeds == 3 and rows[1].spread == 0.0
    files = write_report("seeds", rows, out_dir=tmp_path)
    assert "| test | recipe | 0.5000 ± 0.0816 (3 seeds) |" in files.markdown.read_text()
    assert [MetricRow(**r) for r in json.loads(files.json.read_text())["rows"]] == rows
    one = mean_over_seeds(seeds[:1])
    assert one == seeds[0] and one[0].spread is None  # one run: the row as it is


def test_rows_naming_a_missing_baseline_or_duplicated_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="baseline"):
        write_report("bad", [MetricRow("F1", "test", "vilbias", 0.9, baseline="text-only")], out_dir=tmp_path)
    with pytest.raises(ValueError, match="duplicate"):
        write_report("bad", [MetricRow("F1", "test", "a", 0.9), MetricRow("F1", "test", "a", 0.8)],
                     out_dir=tmp_path)
    assert not (tmp_path / "bad.md").exists()


def test_rows_are_logged_to_mlflow(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    files = write_report("demo", ROWS, out_dir=tmp_path / "reports", data_seed=7)
    run_id = log_to_mlflow(ROWS, uri, "concord-eval-test", "demo", params={"data_seed": 7},
                           artifacts=[files.markdown, files.json])
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.data.metrics["R_at_1/test/filip"] == pytest.approx(0.52)
    assert run.data.metrics["AUC/test/f-clipscore"] == pytest.approx(0.81)
    assert len(run.data.metrics) == len(ROWS)
    assert run.data.params["data_seed"] == "7"
    assert {a.path for a in client.list_artifacts(run_id)} == {"demo.md", "demo.json"}
    assert run.info.artifact_uri.startswith((tmp_path / "artifacts").as_uri())
