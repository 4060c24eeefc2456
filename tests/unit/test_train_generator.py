"""The generator training pipeline end to end on a miniature preset: a few steps with sample grids
and checkpoints, registered in a tmp sqlite MLflow with the `production` alias; `--resume` (the
CLI) continues from the saved step and lands on exactly the weights of an uninterrupted run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from concord.checkpoints import load_generator
from concord.registry import Registry
from pipelines.train_generator import MODEL_NAME, TrainConfig, app, train

MINI = {
    "name": "mini",
    "image_size": 16,
    "patch": 2,
    "base_channels": 16,
    "channel_mult": [1, 2],
    "attn_resolutions": [4],
    "heads": 2,
    "train_timesteps": 50,
    "max_text_tokens": 12,
}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def preset(tmp_path: Path) -> Path:
    path = tmp_path / "mini.json"
    path.write_text(json.dumps(MINI))
    return path


def _cfg(preset: Path, tmp_path: Path, out: str, steps: int, **kw: object) -> TrainConfig:
    base = {
        "preset": str(preset),
        "steps": steps,
        "batch_size": 4,
        "lr": 1e-3,
        "warmup": 1,
        "lr_floor": 1.0,
        "data_count": 24,
        "data_dir": tmp_path / "data",
        "threads": 1,
        "out": tmp_path / out,
        "checkpoint_every": 2,
        "sample_every": 4,
        "log_every": 2,
        "sample_steps": 2,
        "progress": False,
    }
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_train_registers_logs_grids_and_resume_matches_an_uninterrupted_run(
    preset: Path, tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = train(
        _cfg(preset, tmp_path, "run", 4, tracking_uri=uri, register=True, alias="production")
    )
    assert first.step == 4 and [s for s, *_ in first.losses] == [2, 4]
    assert all(e > 0 and lay > 0 for _, e, lay in first.losses)
    assert [p.name for p in first.grids] == ["step_000004.png"]
    assert (tmp_path / "run" / "checkpoint" / "train_state.pt").is_file()
    reg = Registry(uri)
    assert reg.get_alias(MODEL_NAME, "production").version == first.version == 1
    client = reg.client
    arts = [a.path for a in client.list_artifacts(first.run_id, "samples")]
    assert arts == ["samples/step_000004.png"]
    history = client.get_metric_history(first.run_id, "loss_image")
    assert [m.step for m in history] == [2, 4]
    loaded = load_generator(tmp_path / "run")
    assert loaded.config.name == "mini" and loaded.config.layout

    args = [
        "--preset",
        str(preset),
        "--steps",
        "6",
        "--resume",
        str(tmp_path / "run"),
        "--data-count",
        "24",
        "--data-dir",
        str(tmp_path / "data"),
        "--threads",
        "1",
        "--tracking-uri",
        uri,
        "--register",
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
    ]
    res = CliRunner().invoke(app, args)  # lr, warmup, batch... come from the checkpoint
    assert res.exit_code == 0, res.output
    assert "registered concord-generator v2 @production" in res.output
    assert reg.get_alias(MODEL_NAME, "production").version == 2
    state = torch.load(tmp_path / "run" / "checkpoint" / "train_state.pt", weights_only=False)
    assert state["step"] == 6

    straight = train(_cfg(preset, tmp_path, "straight", 6, warmup=1))
    a = load_file(str(tmp_path / "straight" / "weights.safetensors"))
    b = load_file(str(tmp_path / "run" / "weights.safetensors"))
    assert a.keys() == b.keys() and straight.step == 6
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_image_only_baseline_trains_the_same_unet_without_layout(
    preset: Path, tmp_path: Path
) -> None:
    res = train(_cfg(preset, tmp_path, "base", 2, layout=False, sample_every=2))
    assert not res.pipe.config.layout
    assert all(lay == 0 for *_, lay in res.losses)
    assert (
        res.pipe.generate(["a red circle"], seed=0, steps=2, guidance_scale=2.0)[0].layout is None
    )


def test_register_needs_tracking(preset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tracking"):
        train(_cfg(preset, tmp_path, "x", 1, register=True))
