"""The demo bundle: pack a build (tiny models standing in for the trained ones), verify the
checksums, rebuild the encoder from its delta and the installed MiniLM, register every model
once, and refuse a corrupted file before registering anything. The shipped bundle itself is
checked too (its manifest, sizes and checksums), without registering it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from concord.checkpoints import load_encoder
from concord.config import Settings
from concord.registry import Registry
from pipelines.demo import models as demo
from pipelines.demo.build import Step, commands, finished, pack
from tests.fixtures.models import (
    bias_package,
    linker_package,
    scorer_package,
    tiny_encoder,
    tiny_generator,
)

MAX_BUNDLE_BYTES = 50_000_000  # issue 16: shipped weights total at most 50 MB


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build directory laid out as `pipelines.demo.build` leaves it, with tiny models."""
    out = tmp_path_factory.mktemp("demo-build")
    encoder = tiny_encoder(tmp_path_factory)
    (out / "encoder").symlink_to(encoder, target_is_directory=True)
    scorer_package(out / "scorer" / "package", encoder)
    (out / "generator").symlink_to(tiny_generator(tmp_path_factory), target_is_directory=True)
    linker_package(out / "linker", encoder)
    bias_package(out / "bias", encoder)
    return out


@pytest.fixture(scope="module")
def bundle(build_dir: Path) -> Path:
    return pack(build_dir, build_dir / "bundle")


def test_pack_ships_only_what_differs_from_minilm_and_names_the_encoder_by_alias(
    bundle: Path, build_dir: Path
) -> None:
    delta = bundle / "encoder" / demo.ENCODER_DELTA
    full = tiny_encoder_weights(build_dir)
    assert delta.stat().st_size < full.stat().st_size / 3  # MiniLM's 22M weights stay out
    for name, json_name in (
        ("scorer", "scorer.json"),
        ("linker", "linker.json"),
        ("bias", "bias.json"),
    ):
        assert json.loads((bundle / name / json_name).read_text())["encoder"] == demo.ENCODER_URI
    manifest = demo.read_manifest(bundle)
    assert set(manifest["models"]) == set(demo.MODELS)
    assert manifest["backbone"]["sha256"] == demo.backbone_checksum()


def tiny_encoder_weights(build_dir: Path) -> Path:
    return build_dir / "encoder" / "model.safetensors"


def test_every_step_trains_on_the_one_encoder_and_a_finished_step_is_kept(build_dir: Path) -> None:
    steps = commands(build_dir, "demo")
    assert steps["encoder"][1:5] == ["-m", "pipelines.train_encoder", "--recipe", "concord"]
    encoder = str(build_dir / "encoder")
    assert steps["encoder"][steps["encoder"].index("--out") + 1] == encoder
    for name in ("scorer", "linker", "bias"):  # no step trains an encoder of its own
        assert steps[name][steps[name].index("--encoder") + 1] == encoder
    assert all(finished(build_dir, n) for n in ("encoder", "scorer", "linker", "bias"))
    assert not finished(build_dir / "elsewhere", "encoder")
    said: list[str] = []
    step = Step("encoder", build_dir, steps, reuse=True, say=said.append)
    assert step.proc is None and "kept" in said[0]  # nothing started
    step.wait()


def test_the_encoder_rebuilt_from_its_delta_has_the_original_weights(
    bundle: Path, build_dir: Path, tmp_path: Path
) -> None:
    original, _ = load_encoder(tiny_encoder_weights(build_dir).parent)
    rebuilt, _ = load_encoder(demo.materialize_encoder(bundle / "encoder", tmp_path / "enc"))
    theirs = rebuilt.state_dict()
    for key, value in original.state_dict().items():
        assert torch.equal(value, theirs[key]), key


def test_register_bundle_registers_each_model_once_and_then_reuses_it(
    bundle: Path, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path / "home")
    lines: list[str] = []
    served = demo.ensure_models(settings, say=lines.append, bundle=bundle)
    assert served == {name: f"models:/{name}/1" for name in demo.MODELS}
    registry = Registry.from_settings(settings)
    for name in demo.MODELS:
        assert registry.get_alias(name, demo.ALIAS).version == 1
    # the registered encoder loads through the registry like any other
    again = demo.ensure_models(settings, say=lines.append, bundle=bundle)
    assert again == served
    assert "already registered" in lines[-1]
    assert all(len(registry.list_versions(name)) == 1 for name in demo.MODELS)


def test_a_corrupted_file_is_refused_before_anything_is_registered(
    bundle: Path, tmp_path: Path
) -> None:
    broken = demo.copy_bundle(bundle, tmp_path / "broken")
    target = broken / "generator" / "weights.safetensors"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    settings = Settings(home=tmp_path / "home")
    with pytest.raises(demo.BundleError, match=r"concord-generator: .*weights.safetensors.*sha256"):
        demo.ensure_models(settings, say=lambda _: None, bundle=broken)
    registry = Registry.from_settings(settings)
    assert demo.has_alias(registry, demo.ENCODER) is None


def test_the_shipped_bundle_matches_its_manifest_and_size_limit() -> None:
    if not (demo.BUNDLE / demo.MANIFEST).is_file():
        pytest.fail(f"no shipped demo bundle at {demo.BUNDLE}: `make run` would have no models")
    shipped = demo.shipped_models()
    assert set(shipped) == set(demo.MODELS)
    for model in shipped.values():
        demo.verify(model)
        assert model.reproduce, model.name
    assert sum(m.size for m in shipped.values()) <= MAX_BUNDLE_BYTES
