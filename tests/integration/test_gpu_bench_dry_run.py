"""The GPU benchmark's CPU dry run: `python -m benchmarks.gpu_bench --device cpu --quick` runs
every measurement of the GPU run (a tiny CLIP, short windows) and the served figures really
went through gRPC. No timing is asserted: the goals are judged on a GPU only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import Distribution
from pathlib import Path

import pytest

from benchmarks.gpu_bench_inputs import QUICK, texts_for, write_clip_tokenizer
from benchmarks.gpu_bench_serving import ensure_entry_points

ROOT = Path(__file__).resolve().parents[2]
# The dry run is ~45 s of CPU; on a 2-core machine shared with other work it took 4 minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, str]:
    out = tmp_path_factory.mktemp("bench-gpu")
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    command = ["-m", "benchmarks.gpu_bench", "--device", "cpu", "--quick", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    data = json.loads((out / "bench_gpu.json").read_text())
    return data, (out / "bench_gpu.md").read_text(), done.stdout


def _row(data: dict, metric: str, split: str, method: str) -> dict:
    found = [
        r for r in data["rows"] if (r["metric"], r["split"], r["method"]) == (metric, split, method)
    ]
    assert found, f"no row {metric} | {split} | {method}"
    return found[0]


def test_every_measurement_ran_and_is_reported(dry_run: tuple[dict, str, str]) -> None:
    data, markdown, _ = dry_run
    assert data["failures"] == [], data["failures"]
    search = f"{QUICK.points} x 32, top-10"
    many = max(QUICK.clients)
    expected = []
    for b in QUICK.batches:
        for metric in ("images/s", "texts/s"):
            expected += [(metric, f"forward batch={b}", "eager fp32")]
            for c in QUICK.clients:
                name = "gRPC EncodeImages" if metric == "images/s" else "gRPC EncodeTexts"
                expected += [(metric, f"served batch={b}", f"{name}, {c} clients")]
                expected += [("served/ceiling", f"{metric[:-2]} batch={b}", f"{c} clients")]
        expected += [("images/s", f"forward batch={b}", "eager bf16 weights, channels_last")]
        if b > 1:
            expected += [
                (
                    "images/s",
                    f"JPEG -> embedding batch={b}",
                    "PIL decode, thread pool, 2 in flight",
                ),
                (
                    "images/s",
                    f"JPEG -> embedding batch={b}",
                    "torchvision decode_jpeg on cpu, 2 in flight",
                ),
            ]
    for query, raw in (("vector", "raw engine"), ("text", "raw engine + forward")):
        for c in (1, many):
            expected += [("QPS", f"{query} query {search}", f"{raw}, {c} clients")]
            expected += [("QPS", f"{query} query {search}", f"gRPC Search, {c} clients")]
            expected += [("served/raw", f"search {query} query {search}", f"{c} clients")]
        expected += [("p50 ms", f"{query} query {search}", m) for m in ("raw", "gRPC")]
    b = QUICK.scorer_batch
    expected += [("pairs/s", f"pairs batch={b}", "raw score (ceiling)")]
    expected += [("pairs/s", f"pairs batch={b}", f"gRPC Score, {c} clients") for c in (1, many)]
    expected += [("served/raw", f"scorer batch={b}", f"{c} clients") for c in (1, many)]
    expected += [("p50 ms", "score batch=1", m) for m in ("raw", "gRPC")]
    expected += [("p50 ms", f"{k} batch=1", "gRPC") for k in ("image", "text")]
    for metric, split, method in expected:
        row = _row(data, metric, split, method)
        assert row["value"] > 0, row
        assert f"| {split} | {method} |" in markdown
    # the served rows are compared with their raw ceilings in the report
    assert _row(data, "pairs/s", f"pairs batch={b}", "gRPC Score, 1 clients")["baseline"] == (
        "raw score (ceiling)"
    )
    assert "## Goals" in markdown and "not judged (no GPU run)" in markdown
    assert [g["met"] for g in data["goals"]] == [None, None]
    assert data["options"]["device"] == "cpu" and data["options"]["quick"] is True
    assert data["options"]["served settings"]["CONCORD_DEVICE__DEFAULT"] == "cpu"


def test_served_path_went_through_grpc(dry_run: tuple[dict, str, str]) -> None:
    data, _, stdout = dry_run
    assert data["facts"]["encoder items served"] > 0
    # what the service returned over gRPC is what the raw path computes from the same JPEGs
    for kind in ("images", "texts"):
        assert _row(data, "cosine", f"served vs raw {kind} (n=8)", "min")["value"] > 0.999
    assert data["facts"]["served model"].startswith("clip ")
    assert "wrote " in stdout and "GOAL" in stdout


def test_script_parses() -> None:
    done = subprocess.run(
        ["bash", "-n", str(ROOT / "benchmarks" / "gpu.sh")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_entry_points_written_where_concord_is_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [])
    site = ensure_entry_points(tmp_path)
    assert site is not None
    (info,) = Path(site).glob("concord-*.dist-info")
    services = {ep.name: ep.value for ep in Distribution.at(info).entry_points}
    assert services["encoder"] == "services.encoder.app:build"
    assert {"retrieval", "scorer"} <= set(services)


def test_clip_tokenizer_gives_whole_words(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    texts = texts_for(8)
    vocab_size = QUICK.clip["text_config"]["vocab_size"]
    write_clip_tokenizer(tmp_path, " ".join(texts).split(), vocab_size)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert len(ids) == len(text.split()) + 2, (text, tokenizer.convert_ids_to_tokens(ids))
    assert tokenizer.eos_token_id == QUICK.clip["text_config"]["vocab_size"] - 1
