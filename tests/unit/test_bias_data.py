"""ShapeNews (pipelines/data/sets/bias.py): both kinds of bias are real (loaded words with gold
spans; images that contradict the headline in object, count, relation, colour or size), the
image-cued headlines are worded like neutral ones, and the simulated annotation votes."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from pipelines.data.sets import BuildArgs, registry
from pipelines.data.sets.bias import ANNOTATORS, LOADED_ADJ, VERBS
from pipelines.data.store import read_jsonl
from pipelines.data.vocab import COUNT_WORDS

LOADED_WORDS = set(LOADED_ADJ) | set(VERBS["singular"][1]) | set(VERBS["plural"][1]) | {
    "Outrage", "Shocking", "Scandal", "Disgrace", "disgrace", "fury", "failure", "shameful"}


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    root = tmp_path_factory.mktemp("shapenews")
    registry()["bias"].build(BuildArgs(root, 5, {"train": 240, "val": 0, "test": 120}, 32))
    return {s: read_jsonl(root / f"{s}.jsonl") for s in ("train", "test")}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z]+", text))


def test_text_cued_items_carry_gold_loaded_spans(records: dict[str, list[dict]]) -> None:
    seen = 0
    for r in records["train"] + records["test"]:
        loaded_here = _words(r["caption"]) & LOADED_WORDS
        if r["loaded"]:
            assert r["cue_spans"] and r["true_label"] == 1
            for s, e in r["cue_spans"]:
                assert _words(r["caption"][s:e]) & LOADED_WORDS, r["caption"][s:e]
            seen += 1
        else:
            assert not r["cue_spans"] and not loaded_here, r["caption"]
    assert seen > 40


def test_image_cued_items_contradict_their_headline(records: dict[str, list[dict]]) -> None:
    cues: Counter[str] = Counter()
    for r in records["train"] + records["test"]:
        if not r["inconsistent"]:
            assert r["image_cue"] is None
            assert r["counterfactuals"][0]["text"] == r["counterfactuals"][2]["text"]
            continue
        cue = r["image_cue"]
        cues[cue] += 1
        (s, e), = r["inconsistent_spans"]
        claimed = r["caption"][s:e].lower()
        objects = r["scene"]["objects"]
        subject = objects[0]
        # The faithful description of the image differs from the claim.
        assert r["counterfactuals"][0]["text"] != r["counterfactuals"][2]["text"]
        if cue == "object":
            assert not subject["shape"].startswith(claimed)
        elif cue == "colour":
            assert subject["colour"] != claimed
        elif cue == "size":
            assert subject["size"] != claimed
        elif cue == "count":
            number = {"a": 1, "an": 1} | {w: n for n, w in COUNT_WORDS.items()}
            same = [o for o in objects if (o["shape"], o["colour"]) == (subject["shape"], subject["colour"])]
            assert len(same) != number[claimed]
        else:
            other = objects[-1]
            holds = {"to the left of": subject["x"] + subject["r"] <= other["x"] - other["r"],
                     "to the right of": other["x"] + other["r"] <= subject["x"] - subject["r"],
                     "above": subject["y"] + subject["r"] <= other["y"] - other["r"],
                     "below": other["y"] + other["r"] <= subject["y"] - subject["r"]}[claimed]
            assert not holds
    assert set(cues) == {"object", "count", "relation", "colour", "size"}


def test_image_cued_headlines_are_worded_like_neutral_ones(records: dict[str, list[dict]]) -> None:
    def profile(rows: list[dict]) -> dict[str, float]:
        n = max(1, len(rows))
        return {
            "prefix": sum(":" in r["caption"] for r in rows) / n,
            "count": sum(r["caption"].split()[0].lower() in ("two", "three") for r in rows) / n,
            "length": sum(len(r["caption"].split()) for r in rows) / n / 10,
        }

    rows = records["train"] + records["test"]
    neutral = profile([r for r in rows if r["kind"] == "neutral"])
    image = profile([r for r in rows if r["kind"] == "inconsistent"])
    for key in neutral:
        assert abs(neutral[key] - image[key]) < 0.15, (key, neutral, image)


def test_votes_majority_and_gold_split(records: dict[str, list[dict]]) -> None:
    wrong: Counter[tuple[int, str]] = Counter()
    total: Counter[str] = Counter()
    for split, rows in records.items():
        for r in rows:
            assert len(r["votes"]) == len(ANNOTATORS)
            assert r["label"] == int(sum(r["votes"]) >= 2)
            assert r["gold_checked"] == (split == "test")
            group = "image" if r["cue"] == "image" else "other"
            total[group] += 1
            for k, vote in enumerate(r["votes"]):
                wrong[k, group] += vote != r["true_label"]
    reader = next(k for k, a in enumerate(ANNOTATORS) if a[0] == "text-reader")
    # The text reader misses most image-cued bias and little else.
    assert wrong[reader, "image"] / total["image"] > 0.3 > wrong[reader, "other"] / total["other"]
    vote_errors = sum(r["label"] != r["true_label"] for rows in records.values() for r in rows)
    assert 0.03 < vote_errors / sum(total.values()) < 0.2


def test_the_reader_gives_pixels_and_labels(tmp_path: Path) -> None:
    from pipelines.bias.data import load_split

    registry()["bias"].build(BuildArgs(tmp_path, 1, {"train": 0, "val": 0, "test": 8}, 32))
    split = load_split(tmp_path, "test", image_size=32)
    assert split.pixels.shape == (8, 3, 32, 32) and len(split.texts) == 8
    assert split.labels.tolist() == [r["label"] for r in split.records]
    assert split.gold.tolist() == [r["true_label"] for r in split.records]
