"""Concord Scenes renderer: shapes, colours, layouts, instance masks and relations agree with pixels."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.data.render import render
from pipelines.data.scene import (
    Background,
    Scene,
    SceneObject,
    compute_relations,
    held_out_combos,
    sample_scene,
)
from pipelines.data.vocab import COLOURS, SHAPES, class_id

BG = Background("light", "flat", (220, 220, 220), (220, 220, 220), 0.0)


def _solo(shape: str, colour: str = "red", texture: str = "plain", r: float = 0.3) -> Scene:
    obj = SceneObject(shape, colour, "large", texture, 0.5, 0.5, r, COLOURS[colour])
    return Scene((obj,), (), BG, 1)


def test_every_shape_has_its_own_layout_class_and_outline() -> None:
    masks = {}
    for shape in SHAPES:
        out = render(_solo(shape))
        assert set(np.unique(out.layout)) == {0, class_id(shape)}
        assert np.array_equal(out.layout > 0, out.instances == 1)
        masks[shape] = out.layout > 0
    for a in SHAPES:
        for b in SHAPES:
            if a < b:
                iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
                assert iou < 0.9, f"{a} and {b} render almost the same outline"


@pytest.mark.parametrize("colour", list(COLOURS))
def test_plain_object_pixels_are_nearest_to_their_colour_word(colour: str) -> None:
    out = render(_solo("square", colour))
    inner = out.image[out.layout > 0].astype(float).mean(axis=0)
    nearest = min(COLOURS, key=lambda c: np.linalg.norm(np.asarray(COLOURS[c]) - inner))
    assert nearest == colour


def test_textures_are_visible_and_plain_is_flat() -> None:
    spread = {t: render(_solo("square", "blue", t)).image[16:48, 16:48].std(axis=(0, 1)).mean() for t in
              ("plain", "striped", "checkered", "dotted")}
    assert spread["plain"] < 6
    assert all(spread[t] > 3 * spread["plain"] for t in ("striped", "checkered", "dotted"))


def test_render_is_pure_and_honours_size() -> None:
    scene = sample_scene(np.random.default_rng(3))
    a, b = render(scene), render(scene)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.layout, b.layout)
    for size in (32, 96):
        out = render(scene, size)
        assert out.image.shape == (size, size, 3) and out.layout.shape == (size, size)
    with pytest.raises(ValueError):
        render(scene, 8)


def _cols_rows(inst: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.nonzero(inst == k + 1)
    return cols, rows


def test_relations_hold_in_the_pixels() -> None:
    checked = {"left_of": 0, "above": 0, "inside": 0}
    for i in range(300):
        scene = sample_scene(np.random.default_rng([5, i]))
        inst = render(scene).instances
        for rel in scene.relations:
            sc, sr = _cols_rows(inst, rel.subject)
            oc, orr = _cols_rows(inst, rel.object)
            if not len(sc) or not len(oc):
                continue
            if rel.predicate == "left_of":
                assert sc.max() < oc.min()
            elif rel.predicate == "above":
                assert sr.max() < orr.min()
            elif rel.predicate == "inside":
                assert oc.min() <= sc.min() and sc.max() <= oc.max()
                assert orr.min() <= sr.min() and sr.max() <= orr.max()
            elif rel.predicate == "bigger_than":
                a, b = scene.objects[rel.subject], scene.objects[rel.object]
                assert a.r > b.r
            checked[rel.predicate] = checked.get(rel.predicate, 0) + 1
    assert all(v > 5 for v in checked.values()), checked


def test_relations_are_recomputed_identically() -> None:
    scene = sample_scene(np.random.default_rng(11), n_objects=4)
    assert compute_relations(scene.objects) == scene.relations


def test_held_out_combos_leave_every_colour_and_shape_in_training() -> None:
    held = held_out_combos(0)
    assert len(held) == 2 * len(COLOURS)
    assert held != held_out_combos(1)
    for c in COLOURS:
        assert sum((c, s) not in held for s in SHAPES) >= len(SHAPES) - 2
    for s in SHAPES:
        assert any((c, s) not in held for c in COLOURS)
    for i in range(100):
        scene = sample_scene(np.random.default_rng([2, i]), exclude=held)
        assert not {(o.colour, o.shape) for o in scene.objects} & held
    combo = sorted(held)[0]
    assert (sample_scene(np.random.default_rng(0), require=combo).objects[0].colour,
            sample_scene(np.random.default_rng(0), require=combo).objects[0].shape) == combo


def test_scene_round_trips_through_dict() -> None:
    scene = sample_scene(np.random.default_rng(4), n_objects=3)
    assert Scene.from_dict(scene.to_dict()) == scene
