"""Training-only rewordings (pipelines.encoder.paraphrase): they never use the wordings held out
for the unseen-wording test, and a caption and its foils reworded alike still differ in one place."""

from __future__ import annotations

import difflib

import numpy as np

from pipelines.data.scene import Scene, SceneObject
from pipelines.encoder import wording
from pipelines.encoder.paraphrase import COLOUR_WORDS, FRAMES, SHAPE_WORDS, Rewording
from pipelines.encoder.scenes import caption_pool


def test_training_words_and_frames_are_not_the_held_out_ones() -> None:
    for table, held in (
        (COLOUR_WORDS, wording.COLOUR_SYNONYMS),
        (SHAPE_WORDS, wording.SHAPE_SYNONYMS),
    ):
        assert table.keys() == held.keys()
        train = {w for words in table.values() for w in words}
        test = {w for words in held.values() for w in words}
        assert not train & test, train & test
    held_frames = ("depicted", "we see", "in this picture", "/", ":")
    assert not [f for f in FRAMES for h in held_frames if h in f.lower()]


def test_rewording_keeps_articles_plurals_and_verbless_frames() -> None:
    r = Rewording({"orange": "apricot"}, {"circle": "orb", "square": "block"}, None, "there is {}")
    assert r.apply("A red circle and an orange square") == "There is a red orb and an apricot block"
    # A sentence with its own verb keeps its frame; plurals keep their number.
    assert r.apply("Two red circles are left of the orange square") == (
        "Two red orbs are left of the apricot block"
    )
    post = Rewording({}, {"heart": "valentine"}, "{det}{noun} that is {colour}", None)
    assert post.apply("An orange heart") == "A valentine that is orange"
    assert post.apply("Three blue hearts") == "Three valentines that are blue"
    assert (
        Rewording({}, {}, None, None).apply("A picture of a red star") == "A picture of a red star"
    )


def test_a_reworded_foil_still_differs_from_its_caption_in_one_place() -> None:
    scene = Scene.from_dict(
        {
            "background": {
                "kind": "flat",
                "rgb0": [250, 250, 250],
                "rgb1": [250, 250, 250],
                "tone": "light",
                "angle": 0.0,
            },
            "noise_seed": 1,
            "objects": [
                {
                    "colour": "red",
                    "rgb": [215, 40, 40],
                    "shape": "circle",
                    "shape_params": [],
                    "size": "small",
                    "texture": "plain",
                    "x": 0.2,
                    "y": 0.5,
                    "r": 0.09,
                },
                {
                    "colour": "blue",
                    "rgb": [40, 80, 220],
                    "shape": "square",
                    "shape_params": [],
                    "size": "large",
                    "texture": "plain",
                    "x": 0.7,
                    "y": 0.5,
                    "r": 0.2,
                },
            ],
            "relations": [{"subject": 0, "object": 1, "predicate": "left_of"}],
        }
    )
    assert isinstance(scene.objects[0], SceneObject)
    plain = caption_pool(scene, np.random.default_rng(0), rounds=4)
    reworded = caption_pool(scene, np.random.default_rng(0), rounds=4, reword=1.0)
    assert {c.text for c in reworded} != {c.text for c in plain}
    train_words = {w for ws in (*COLOUR_WORDS.values(), *SHAPE_WORDS.values()) for w in ws}
    assert any(w in c.text for c in reworded for w in train_words)
    for c in reworded:
        assert c.foils and c.text not in c.foils
        for foil in c.foils:
            a, b = c.text.split(), foil.split()
            ops = [op for op in difflib.SequenceMatcher(a=a, b=b).get_opcodes() if op[0] != "equal"]
            # one word replaced, or two (a swap of two objects' colours or shapes)
            assert 1 <= len(ops) <= 2, (c.text, foil)
