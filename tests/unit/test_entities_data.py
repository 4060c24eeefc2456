"""The entities set is hard in M3EL's sense: names and looks are each shared, only the pair
identifies an entity, and a mention's text names an attribute its entity's description does not."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

from pipelines.data.sets import BuildArgs, registry
from pipelines.data.sets.entities import ATTRIBUTES
from pipelines.data.store import read_jsonl

SPEC = registry()["entities"]


def _build(root: Path, **options: float) -> tuple[dict[str, dict], list[dict]]:
    args = BuildArgs(root, 0, {"entities": 70, "train": 70, "val": 0, "test": 70}, 32)
    SPEC.build(replace(args, options=options or None))
    kb = {e["id"]: e for e in read_jsonl(root / "kb.jsonl")}
    return kb, read_jsonl(root / "mentions/test.jsonl") + read_jsonl(root / "mentions/train.jsonl")


def test_names_and_looks_are_shared_but_their_pair_is_unique(tmp_path: Path) -> None:
    kb, _ = _build(tmp_path)
    names = Counter(e["name"] for e in kb.values())
    looks = Counter(e["look"] for e in kb.values())
    assert len(names) == 10 and all(c == 7 for c in names.values())
    assert min(looks.values()) >= 3 and max(looks.values()) <= 5
    assert len({(e["name"], e["look"]) for e in kb.values()}) == len(kb)
    for e in kb.values():
        assert 2 <= len(e["attributes"]) <= 3 and set(e["latent"]) == set(ATTRIBUTES)
        assert all(e["latent"][k] == v and str(v) in e["description"] for k, v in e["attributes"].items())


def test_a_mention_names_an_attribute_its_description_does_not(tmp_path: Path) -> None:
    kb, mentions = _build(tmp_path)
    assert Counter(m["gold"] for m in mentions) == Counter({e: 2 for e in kb})  # round-robin
    for m in mentions:
        e = kb[m["gold"]]
        (attribute, value), = m["attribute"].items()
        assert attribute not in e["attributes"] and e["latent"][attribute] == value
        assert value in m["text"] and m["text"][slice(*m["span"])] == e["name"]
    assert any(m["image"] is None for m in mentions) and any(m["occluded"] for m in mentions)
    assert any(not e["images"] for e in kb.values())


def test_options_switch_missing_images_and_occlusion(tmp_path: Path) -> None:
    kb, mentions = _build(tmp_path, missing_entity_image=0.0, missing_mention_image=0.0, occlusion=0.0)
    assert all(e["images"] for e in kb.values())
    assert all(m["image"] and not m["occluded"] for m in mentions)
