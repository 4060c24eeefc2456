"""The generator's judges and measures: the judge learns from a few renders, its reading becomes
objects, and recall / mIoU / Fréchet / the prompt parser behave on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.generator.data import DataConfig
from pipelines.generator.evaluate import (
    NamedObject,
    frechet_distance,
    layout_miou,
    parse_prompt,
    semantic_recall,
)
from pipelines.generator.judge_train import evaluate_judge, make_renders, train_judge
from pipelines.generator.judges import COLOUR_NAMES, Detection, Reading, detections, present


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow  # trains for about 10 s on 2 cores
def test_judge_learns_shapes_and_colours_from_a_few_renders():
    # A narrower domain and a narrower net than the report's, so it learns in seconds.
    data = DataConfig(size=32, count=10, sizes=("large",), shapes=("circle", "square", "cross"))
    net = train_judge(make_renders(300, data, seed=1), steps=200, batch=16, width=12, lr=5e-3)
    acc = evaluate_judge(net, make_renders(60, data, seed=2), noise=16)
    # Chance: 1 in 3 shapes for an object pixel, 1 in 15 colour-shape pairs for an object.
    assert acc.foreground_accuracy > 0.45
    assert acc.shape_recall > 0.5
    assert acc.object_recall > 0.4
    assert acc.pixel_accuracy > 0.8


def _reading(shapes: np.ndarray, colours: np.ndarray, images: np.ndarray | None = None) -> Reading:
    images = images if images is not None else np.zeros((*shapes.shape, 3), np.uint8)
    return Reading(shapes[None], colours[None], np.zeros((1, 4)), images[None])


def test_detections_name_each_region_by_majority_and_drop_specks_and_sprawl():
    shapes = np.zeros((32, 32), np.uint8)
    colours = np.zeros((32, 32), np.uint8)
    red, blue = COLOUR_NAMES.index("red") + 1, COLOUR_NAMES.index("blue") + 1
    shapes[2:10, 2:10] = 1  # a circle-class square region ...
    shapes[2:4, 2:4] = 2  # ... with a few pixels of another class
    colours[2:10, 2:10] = red
    shapes[20:28, 20:28] = 7
    colours[20:28, 20:28] = blue
    colours[20:22, 20:28] = red  # a minority of another colour
    shapes[15, 15] = 3  # a speck
    found = detections(_reading(shapes, colours), 0)
    assert sorted((d.colour, d.shape) for d in found) == [("blue", "cross"), ("red", "circle")]
    # A ragged diagonal line fills little of its box: not an object.
    rag = np.zeros((32, 32), np.uint8)
    idx = np.arange(20)
    rag[idx, idx] = 1
    rag[idx[:-1], idx[:-1] + 1] = 1
    assert detections(_reading(rag, np.full((32, 32), red, np.uint8)), 0) == []


def test_mean_colour_mode_reads_pixels_not_the_colour_head():
    shapes = np.zeros((32, 32), np.uint8)
    shapes[4:14, 4:14] = 2
    images = np.full((32, 32, 3), 230, np.uint8)
    images[4:14, 4:14] = (40, 165, 60)
    r = _reading(shapes, np.zeros((32, 32), np.uint8), images)
    assert [(d.colour, d.shape) for d in detections(r, 0, "mean")] == [("green", "square")]
    with pytest.raises(ValueError):
        detections(r, 0, "nope")


def test_parse_prompt_reads_colour_shape_and_counts():
    assert parse_prompt("a red circle above a blue square") == [
        NamedObject("red", "circle"),
        NamedObject("blue", "square"),
    ]
    assert parse_prompt("Two yellow crosses") == [NamedObject("yellow", "cross", 2)]
    assert parse_prompt("a zorv and a large striped green triangle in the top left corner") == [
        NamedObject("green", "triangle")
    ]
    assert parse_prompt("a square to the left of a purple circle") == [
        NamedObject(None, "square"),
        NamedObject("purple", "circle"),
    ]
    assert parse_prompt("a photo of a zorv") == []


def test_semantic_recall_counts_objects_prompts_and_shapes():
    d = Detection
    prompts = ["a red circle above a blue cross", "a green square", "a yellow cross"]
    dets = [
        [d("red", "circle", 40), d("green", "cross", 30)],  # blue cross missed (wrong colour)
        [d("green", "square", 50)],
        [d("yellow", "cross", 20), d("red", "circle", 20)],
    ]
    r = semantic_recall(prompts, dets)
    assert (r.objects, r.found, r.prompts, r.prompts_all_found) == (4, 3, 3, 2)
    assert r.recall == pytest.approx(0.75)
    assert r.shape_recall("cross") == pytest.approx(0.5)
    assert r.shape_recall("circle") == 1.0
    assert np.isnan(r.shape_recall("triangle"))
    assert present(dets[0], None, "cross") and not present(dets[0], "blue", "cross")
    with pytest.raises(ValueError):
        semantic_recall(prompts, dets[:2])


def test_layout_miou_on_hand_made_maps():
    a = np.zeros((2, 4, 4), np.uint8)
    a[:, :2] = 1
    assert layout_miou(a, a) == 1.0
    b = np.zeros_like(a)
    b[:, :1] = 1  # class 1 half covered: IoU 0.5; background 8/12 pixels per image: IoU 2/3
    assert layout_miou(b, a) == pytest.approx((0.5 + 2 / 3) / 2)
    with pytest.raises(ValueError):
        layout_miou(a, a[:1])


def test_frechet_distance_is_zero_on_itself_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    near = frechet_distance(x, x + 0.5)
    far = frechet_distance(x, x + 2.0)
    assert near == pytest.approx(8 * 0.25, rel=1e-4)  # a pure shift adds |shift|^2
    assert far > near > 0
    assert frechet_distance(x, x * 3) > 1.0  # a wider spread is a difference too
    with pytest.raises(ValueError):
        frechet_distance(x, x[:, :4])
