"""Every named dataset: byte-identical from a seed, a manifest that matches the files, and the
properties each set promises (held-out combos, nested missing images, labelled spans, ...)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipelines.data.cli import app
from pipelines.data.scene import held_out_combos
from pipelines.data.sets import BuildArgs, registry
from pipelines.data.store import MANIFEST, read_jsonl, verify

SPECS = registry()


def _make(name: str, out: Path, seed: int = 3, **kw) -> BuildArgs:
    args = BuildArgs(out, seed, dict(SPECS[name].presets["tiny"]), image_size=32, **kw)
    SPECS[name].build(args)
    return args


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", list(SPECS))
def test_same_seed_gives_byte_identical_dataset(name: str, tmp_path: Path) -> None:
    _make(name, tmp_path / "a")
    _make(name, tmp_path / "b")
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a == b
    manifest = json.loads(a[MANIFEST])
    assert manifest["name"] == name and manifest["seed"] == 3
    assert {f["path"] for f in manifest["files"]} == set(a) - {MANIFEST}
    assert verify(tmp_path / "a") == []
    (tmp_path / "a" / manifest["files"][0]["path"]).write_bytes(b"tampered")
    assert verify(tmp_path / "a") == [manifest["files"][0]["path"]]


@pytest.mark.parametrize("name", ["retrieval", "misalignment", "bias"])
def test_a_different_seed_gives_different_data(name: str, tmp_path: Path) -> None:
    _make(name, tmp_path / "a", seed=1)
    _make(name, tmp_path / "b", seed=2)
    assert json.loads((tmp_path / "a" / MANIFEST).read_text())["files"] != \
        json.loads((tmp_path / "b" / MANIFEST).read_text())["files"]


def test_worker_count_does_not_change_bytes(tmp_path: Path) -> None:
    counts = {"train": 70, "val": 0, "test": 0, "test_compositional": 0}
    for k, workers in enumerate((1, 2)):
        SPECS["retrieval"].build(BuildArgs(tmp_path / str(k), 0, counts, 32, workers))
    assert _tree(tmp_path / "0") == _tree(tmp_path / "1")


def test_compositional_split_holds_only_unseen_combos(tmp_path: Path) -> None:
    _make("retrieval", tmp_path)
    held = held_out_combos(3)
    for split in ("train", "val", "test"):
        for r in read_jsonl(tmp_path / f"{split}.jsonl"):
            assert not {(o["colour"], o["shape"]) for o in r["scene"]["objects"]} & held
    comp = read_jsonl(tmp_path / "test_compositional.jsonl")
    assert comp and all({(o["colour"], o["shape"]) for o in r["scene"]["objects"]} & held for r in comp)
    assert len(comp[0]["captions"]) == 5


def test_misalignment_records_label_the_changed_words(tmp_path: Path) -> None:
    _make("misalignment", tmp_path)
    n = 0
    for r in read_jsonl(tmp_path / "test.jsonl"):
        for c in r["captions"]:
            for v in c["variants"]:
                (s, e), = v["spans"]
                assert e > s and v["text"][:s] == c["text"][:s]  # only the labelled words differ
                assert v["text"] != c["text"] and v["kind"] in {"attribute", "object", "relation", "count"}
                n += 1
    assert n > 0


def test_kg_missing_images_are_nested_across_rates(tmp_path: Path) -> None:
    images = {}
    for rate in (0.2, 0.6):
        args = replace(BuildArgs(tmp_path / str(rate), 0, {"entities": 40}, 32),
                       options={"missing_rate": rate})
        SPECS["kgs"].build(args)
        images[rate] = set((tmp_path / str(rate) / "kg1" / "images.tsv").read_text().splitlines())
    assert images[0.6] < images[0.2]
    root = tmp_path / "0.2"
    seeds = (root / "alignment/seed.tsv").read_text().splitlines()
    tests = (root / "alignment/test.tsv").read_text().splitlines()
    assert seeds and tests and not set(seeds) & set(tests)
    kg1 = {line.split("\t")[0] for line in (root / "kg1/entities.tsv").read_text().splitlines()}
    assert all(line.split("\t")[0] in kg1 for line in seeds + tests)


def test_entity_mentions_point_at_their_gold_entity(tmp_path: Path) -> None:
    args = BuildArgs(tmp_path, 0, {"entities": 30, "train": 0, "val": 0, "test": 40}, 32)
    SPECS["entities"].build(args)
    kb = {e["id"]: e for e in read_jsonl(tmp_path / "kb.jsonl")}
    names = [e["name"] for e in kb.values()]
    assert len(set(names)) < len(names)  # some names are shared
    ambiguous = 0
    for m in read_jsonl(tmp_path / "mentions/test.jsonl"):
        s, e = m["span"]
        assert m["text"][s:e] == kb[m["gold"]]["name"] and m["gold"] in m["candidates"]
        ambiguous += sum(kb[c]["name"] == kb[m["gold"]]["name"] for c in m["candidates"]) > 1
    assert ambiguous > 0


def test_bias_labels_agree_with_their_cues(tmp_path: Path) -> None:
    SPECS["bias"].build(BuildArgs(tmp_path, 0, {"train": 0, "val": 0, "test": 60}, 32))
    recs = read_jsonl(tmp_path / "test.jsonl")
    assert 0 < sum(r["label"] for r in recs) < len(recs)
    for r in recs:
        assert r["true_label"] == int(r["loaded"] or r["inconsistent"])
        assert bool(r["cue_spans"]) == r["loaded"] and bool(r["inconsistent_spans"]) == r["inconsistent"]
        for s, e in r["inconsistent_spans"]:
            assert r["caption"][s:e] != r["scene"]["objects"][0]["colour"]


def test_binding_pairs_swap_words_not_vocabulary(tmp_path: Path) -> None:
    _make("binding", tmp_path)
    for r in read_jsonl(tmp_path / "test.jsonl"):
        assert r["caption_a"] != r["caption_b"]
        assert sorted(r["caption_a"].lower().split()) == sorted(r["caption_b"].lower().split())


def test_customization_prompts_use_the_concept_token(tmp_path: Path) -> None:
    _make("customization", tmp_path)
    for c in read_jsonl(tmp_path / "concepts.jsonl"):
        assert 3 <= len(c["references"]) <= 5
        assert all(c["token"] in p["text"] for p in c["prompts"])
        assert all(any(o["shape"] == "blob" for o in p["scene"]["objects"]) for p in c["prompts"])


def test_cli_make_and_show(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "ds"
    res = runner.invoke(app, ["make", "digits", "--seed", "1", "--out", str(out), "--size", "tiny"])
    assert res.exit_code == 0, res.output
    again = runner.invoke(app, ["make", "digits", "--seed", "1", "--out", str(out), "--size", "tiny"])
    assert again.exit_code != 0  # refuses to overwrite without --overwrite
    sheet = tmp_path / "sheet.png"
    res = runner.invoke(app, ["show", str(out), "--out", str(sheet), "--n", "3"])
    assert res.exit_code == 0, res.output
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = runner.invoke(app, ["make", "nope", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "unknown dataset" in bad.output
    bad = runner.invoke(app, ["make", "kgs", "--out", str(tmp_path / "y"), "--option", "colour=1"])
    assert bad.exit_code != 0


def test_digit_captions_name_the_digit(tmp_path: Path) -> None:
    _make("digits", tmp_path)
    words = {0: "zero", 7: "seven", 3: "three"}
    for r in read_jsonl(tmp_path / "train.jsonl"):
        if r["label"] in words:
            assert words[r["label"]] in r["captions"][0]
    img = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(tmp_path / r["image"]))
    assert img.shape == (32, 32, 3)
