"""Generator training data: reproducible from the seed, cached, layouts and captions that match
the scene, and the rare shape at about its requested share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.data.scene import Scene
from pipelines.data.vocab import CLASS_NAMES
from pipelines.generator.data import DataConfig, build, describe, load_or_build, simple_scene


def test_build_is_a_function_of_the_seed() -> None:
    a, b = build(DataConfig(count=20, seed=1)), build(DataConfig(count=20, seed=1))
    c = build(DataConfig(count=20, seed=2))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.layouts, b.layouts)
    assert (a.captions == b.captions).all()
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (20, 32, 32, 3) and a.layouts.shape == (20, 32, 32)
    assert a.captions.shape == (20, 2)


def test_layouts_and_captions_name_the_objects_drawn() -> None:
    data = build(DataConfig(count=60, seed=3))
    for layout, caps, sd in zip(data.layouts, data.captions, data.scenes, strict=True):
        scene = Scene.from_dict(sd)
        shapes = {o.shape for o in scene.objects}
        present = {CLASS_NAMES[i] for i in np.unique(layout)} - {"background"}
        assert present == shapes
        for o in scene.objects:
            assert o.colour in caps[0] and o.shape in caps[0]


def test_relation_captions_hold_in_the_geometry() -> None:
    rng = np.random.default_rng(0)
    cfg = DataConfig()
    checked = 0
    for _ in range(200):
        scene = simple_scene(rng, cfg, [("red", "circle"), ("blue", "square")])
        red, blue = scene.objects
        for cap in describe(scene, rng, 4):
            if cap == "a red circle above a blue square":
                assert red.y + red.r <= blue.y - blue.r
                checked += 1
            if cap == "a red circle to the left of a blue square":
                assert red.x + red.r <= blue.x - blue.r
                checked += 1
    assert checked > 20


def test_rare_shape_share() -> None:
    data = build(DataConfig(count=800, seed=0, rare_frac=0.03))
    shapes = [o["shape"] for s in data.scenes for o in s["objects"]]
    share = shapes.count("cross") / len(shapes)
    assert 0.015 < share < 0.05
    none = build(DataConfig(count=300, seed=0, rare_shape=None))
    assert any(o["shape"] == "cross" for s in none.scenes for o in s["objects"])


def test_load_or_build_caches_in_the_data_dir(tmp_path: Path) -> None:
    cfg = DataConfig(count=10, seed=4)
    first = load_or_build(cfg, tmp_path)
    files = list(tmp_path.glob("generator-*.npz"))
    assert [f.name for f in files] == [f"generator-{cfg.key()}.npz"]
    second = load_or_build(cfg, tmp_path)
    assert np.array_equal(first.images, second.images)
    assert (first.captions == second.captions).all() and first.scenes == second.scenes


def test_bad_configs_fail_fast() -> None:
    with pytest.raises(ValueError):
        DataConfig(shapes=("circle", "blob"))
    with pytest.raises(ValueError):
        DataConfig(rare_shape="star")
