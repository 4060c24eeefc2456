"""The encoder recipe's parts: foils that are false of the scene and differ from the caption only
in their binding, twins that differ from their scene and keep off the held-out combinations, the
foil loss (it prefers the caption, ignores padding, and its paired FILIP score equals FILIP's),
foil batches laid out as the loss takes them, the grounding loss and the object phrases it
trains on (no held-out pair named, centres on the right token), the relation probes (true both
ways, their foils false, mirrored scenes trading them), and a training run with every part
switched on."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from concord.checkpoints import build_encoder
from concord.models.config import load_config
from concord.models.dual_encoder import Encoded
from concord.models.losses import filip_similarity, foil_loss, grounding_loss, separation_loss
from pipelines.data.captions import Draft, Slot, noun_phrase
from pipelines.data.misalign import FLIPS
from pipelines.data.scene import (
    Scene,
    compute_relations,
    held_out_combos,
    make_object,
    sample_background,
    sample_scene,
)
from pipelines.data.vocab import SHAPES
from pipelines.encoder.data import ensure_dataset
from pipelines.encoder.embed import TextStateCache, encode_foils, encode_texts
from pipelines.encoder.relations import caption_probes, relation_probes
from pipelines.encoder.scenes import (
    build_training_set,
    caption_pool,
    object_phrases,
    shape_twin,
    swap_foils,
    twin_scene,
)
from pipelines.train_encoder import TRAINING_RECORD, TrainConfig, check_config, train

SMALL = {"width": 64, "depth": 1, "heads": 2}


def _two_object_scene(seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    red = replace(make_object(rng, "red", "circle", "medium"), x=0.25, y=0.5, r=0.15)
    blue = replace(make_object(rng, "blue", "square", "medium"), x=0.75, y=0.5, r=0.15)
    placed = [red, blue]
    return Scene(tuple(placed), compute_relations(placed), sample_background(rng), 1)


def _words(text: str) -> Counter[str]:
    return Counter(text.lower().split())


def test_a_swap_foil_has_the_captions_words_bound_the_other_way() -> None:
    scene = _two_object_scene()
    a = noun_phrase([scene.objects[0]], ("colour",), "a", "pre", 0)
    b = noun_phrase([scene.objects[1]], ("colour",), "a", "pre", 1)
    draft = Draft((*a, " and ", *b), "short")

    foils = swap_foils(draft, scene)

    assert "A blue circle and a red square" in foils  # colours swapped
    assert "A red square and a blue circle" in foils  # shapes swapped
    assert all(_words(f) == _words(draft.render().text) for f in foils)


def test_no_swap_foil_when_the_swap_is_still_true() -> None:
    scene = _two_object_scene()
    same = Slot("colour", "red", 0, "adj")
    draft = Draft((same, " ", Slot("shape", "circle", 0, "sg")), "short")  # one noun phrase
    assert swap_foils(draft, scene) == []


@pytest.mark.parametrize("seed", range(20))
def test_every_caption_is_true_and_every_foil_differs_from_it(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scene = sample_scene(rng, exclude=held_out_combos(0))
    pool = caption_pool(scene, rng, rounds=1)
    assert len(pool) == 5  # one per caption style
    for c in pool:
        assert c.text not in c.foils and len(set(c.foils)) == len(c.foils)


@pytest.mark.parametrize("seed", range(30))
def test_a_twin_differs_and_keeps_off_the_held_out_combinations(seed: int) -> None:
    rng = np.random.default_rng(seed)
    held = held_out_combos(0)
    scene = sample_scene(rng, exclude=held)
    twin = twin_scene(scene, rng, held)
    if twin is None:
        return
    assert twin != scene
    assert all((o.colour, o.shape) not in held for o in twin.objects)
    if len(scene.objects) > 1:  # a swap or a mirror: the same colours, bound otherwise
        assert sorted(o.colour for o in twin.objects) == sorted(o.colour for o in scene.objects)


def test_twins_of_the_binding_kinds_only_are_never_mirrors() -> None:
    held = held_out_combos(0)
    kinds = ("colour swap", "shape swap")
    mirrors = 0
    for seed in range(40):
        scene = sample_scene(np.random.default_rng(seed), exclude=held)
        mirrored = [replace(o, x=1.0 - o.x) for o in scene.objects]
        any_twin = twin_scene(scene, np.random.default_rng([seed, 1]), held)
        mirrors += any_twin is not None and list(any_twin.objects) == mirrored
        twin = twin_scene(scene, np.random.default_rng([seed, 1]), held, kinds)
        if twin is not None:
            assert list(twin.objects) != mirrored
            assert [(o.x, o.y) for o in twin.objects] == [(o.x, o.y) for o in scene.objects]
    assert mirrors > 0  # with every kind allowed, some of the same scenes do get mirrored


@pytest.mark.parametrize("seed", range(30))
def test_a_shape_twin_changes_one_shape_and_nothing_else(seed: int) -> None:
    rng = np.random.default_rng(seed)
    held = held_out_combos(0)
    scene = sample_scene(rng, exclude=held)
    twin = shape_twin(scene, rng, held)
    if twin is None:  # only blobs, or every other shape held out for their colours
        for o in scene.objects:
            assert o.shape == "blob" or all(s == o.shape or (o.colour, s) in held for s in SHAPES)
        return
    changed = [(a, b) for a, b in zip(scene.objects, twin.objects, strict=True) if a != b]
    assert len(changed) == 1
    before, after = changed[0]
    assert after.shape not in (before.shape, "blob")
    assert replace(after, shape=before.shape) == before  # colour, place and size kept
    assert (after.colour, after.shape) not in held


def _encoded(pooled: torch.Tensor, tokens: torch.Tensor) -> Encoded:
    return Encoded(
        F.normalize(pooled, dim=-1),
        F.normalize(tokens, dim=-1),
        torch.ones(tokens.shape[:2], dtype=torch.bool),
    )


def test_the_foil_loss_is_low_when_the_caption_wins_and_high_when_a_foil_does() -> None:
    g = torch.Generator().manual_seed(0)
    image = _encoded(torch.randn(4, 8, generator=g), torch.randn(4, 5, 8, generator=g))
    caption = image  # the caption is the image itself: cosine 1
    other = _encoded(torch.randn(8, 8, generator=g), torch.randn(8, 5, 8, generator=g))
    mask = torch.ones(4, 2, dtype=torch.bool)
    each_twice = image[torch.arange(4).repeat_interleave(2)]  # foils equal to their image
    for filip in (False, True):
        good = foil_loss(image, caption, other, mask, 10.0, filip=filip)
        flipped = foil_loss(image, other[::2], each_twice, mask, 10.0, filip=filip)
        assert float(good) < 0.1 < 1.0 < float(flipped)


def test_padding_foils_do_not_count_and_no_foils_gives_zero() -> None:
    g = torch.Generator().manual_seed(1)
    image = _encoded(torch.randn(3, 8, generator=g), torch.randn(3, 4, 8, generator=g))
    text = _encoded(torch.randn(3, 8, generator=g), torch.randn(3, 2, 8, generator=g))
    foils = _encoded(torch.randn(6, 8, generator=g), torch.randn(6, 2, 8, generator=g))
    mask = torch.tensor([[True, False], [True, False], [True, False]])
    changed = Encoded(foils.pooled.clone(), foils.tokens, foils.mask)
    changed.pooled[1::2] = image.pooled  # padding rows now equal the image: would dominate
    for filip in (False, True):
        a = foil_loss(image, text, foils, mask, 5.0, filip=filip)
        b = foil_loss(image, text, changed, mask, 5.0, filip=filip)
        assert math.isclose(float(a), float(b), rel_tol=1e-6)
    none = foil_loss(image, text, foils, torch.zeros(3, 2, dtype=torch.bool), 5.0)
    assert float(none) == 0.0


def test_separation_pushes_only_texts_closer_than_the_margin_to_their_real_foils() -> None:
    texts = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    near = F.normalize(torch.tensor([1.0, 0.1]), dim=0)  # cosine 0.995 with text 0
    far = torch.tensor([-1.0, 0.0])  # cosine -1 with text 0
    foils = torch.stack([near, far, near, near])  # text 1's foils: cosine 0.0995, under the margin
    mask = torch.tensor([[True, True], [True, False]])
    got = separation_loss(texts, foils, mask, margin=0.8)
    want = (float(near[0]) - 0.8) / 3  # one hinge above 0 among the three real foils
    assert float(got) == pytest.approx(want, rel=1e-5)
    texts = texts.clone().requires_grad_(True)
    separation_loss(texts, foils, mask, margin=0.8).backward()
    assert texts.grad is not None
    assert float(texts.grad[0] @ near) > 0 and float(texts.grad[1].abs().sum()) == 0.0
    none = separation_loss(texts, foils, torch.zeros(2, 2, dtype=torch.bool), margin=0.8)
    assert float(none.detach()) == 0.0


def test_the_paired_filip_score_is_filips_own() -> None:
    g = torch.Generator().manual_seed(2)
    image = _encoded(torch.randn(3, 8, generator=g), torch.randn(3, 6, 8, generator=g))
    text = _encoded(torch.randn(3, 8, generator=g), torch.randn(3, 4, 8, generator=g))
    foils = _encoded(torch.randn(3, 8, generator=g), torch.randn(3, 4, 8, generator=g))
    mask = torch.ones(3, 1, dtype=torch.bool)
    t2i = filip_similarity(image, text).text_to_image.diagonal()
    neg = filip_similarity(image, foils).text_to_image.diagonal()
    want = F.cross_entropy(torch.stack([t2i, neg], dim=1) * 5.0, torch.zeros(3, dtype=torch.long))
    got = foil_loss(image, text, foils, mask, 5.0, filip=True)
    torch.testing.assert_close(got, want)


def test_foil_batches_are_laid_out_per_caption() -> None:
    model, tokenizer = build_encoder(load_config("tiny").replace(image=SMALL), seed=0)
    model.eval()
    foils = [("a red square",), (), ("a blue circle", "two stars", "one cross")]
    cache = TextStateCache()
    cache.add(model, tokenizer, [f for fs in foils for f in fs])
    with torch.no_grad():
        enc, mask = encode_foils(model, tokenizer, foils, 2, cache)
        want = encode_texts(model, tokenizer, ["a red square", "a blue circle", "two stars"])
    assert mask.tolist() == [[True, False], [False, False], [True, True]]
    torch.testing.assert_close(enc.pooled[[0, 4, 5]], want.pooled)
    assert not enc.pooled[[1, 2, 3]].any()


def test_the_grounding_loss_rewards_the_token_under_the_object_naming_its_phrase() -> None:
    g = torch.Generator().manual_seed(3)
    phrases = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    tokens = F.normalize(torch.randn(2, 4, 8, generator=g), dim=-1)
    tokens[0, 1], tokens[1, 3] = phrases[2], phrases[4]  # object tokens that say their phrase
    image = _encoded(tokens.mean(1), tokens)
    cells = torch.tensor([[1, -1], [3, -1]])
    right = grounding_loss(image, cells, torch.tensor([[2, -1], [4, -1]]), phrases, 20.0)
    wrong = grounding_loss(image, cells, torch.tensor([[0, -1], [1, -1]]), phrases, 20.0)
    assert float(right) < 0.1 < 1.0 < float(wrong)
    # padding counts for nothing, whatever label it carries; no object at all gives 0
    padded = grounding_loss(image, cells, torch.tensor([[2, 0], [4, 3]]), phrases, 20.0)
    assert math.isclose(float(padded), float(right), rel_tol=1e-6)
    none = torch.full((2, 2), -1)
    assert float(grounding_loss(image, none, none, phrases, 20.0)) == 0.0
    with pytest.raises(ValueError, match="grounding batch mismatch"):
        grounding_loss(image, cells[:1], cells[:1], phrases, 20.0)


def test_object_phrases_never_name_a_held_out_pair_and_find_each_objects_token() -> None:
    scene = _two_object_scene()  # a red circle at (0.25, 0.5), a blue square at (0.75, 0.5)
    held = frozenset({("blue", "square"), ("green", "star")})
    objects = object_phrases([scene, replace(scene, objects=scene.objects[:1])], held)
    assert "a blue square" not in objects.phrases and "a green star" not in objects.phrases
    assert "a red circle" in objects.phrases and "an orange circle" in objects.phrases
    cells, labels = objects.cells(np.array([1, 0]), grid=8)
    # image 1 holds the red circle only; image 0's blue square is held out here: unnamed
    assert objects.phrases[int(labels[0, 0])] == "a red circle" and labels[0, 1] == -1
    assert cells.tolist() == [[4 * 8 + 2, -1], [4 * 8 + 2, -1]]  # row 4, column 2 of 8x8
    assert objects.phrases[int(labels[1, 0])] == "a red circle" and labels[1, 1] == -1


def test_relation_probes_state_each_relation_both_ways_and_a_mirror_makes_them_foils() -> None:
    scene = _two_object_scene()  # a red circle left of a blue square, same height and size
    probes = {p.text: p.foils for p in relation_probes(scene, frozenset())}
    assert probes == {
        "The red circle is to the left of the blue square": (
            "The red circle is to the right of the blue square",
            "The blue square is to the left of the red circle",
        ),
        "The blue square is to the right of the red circle": (
            "The blue square is to the left of the red circle",
            "The red circle is to the right of the blue square",
        ),
    }
    for text, foils in probes.items():  # one word changed, or the same words in another order
        assert _words(foils[1]) == _words(text) and len(_words(foils[0]) - _words(text)) == 1
    mirrored = [replace(o, x=1.0 - o.x) for o in scene.objects]
    mirror = replace(scene, objects=tuple(mirrored), relations=compute_relations(mirrored))
    flipped = {p.text for p in relation_probes(mirror, frozenset())}
    assert flipped == {f for foils in probes.values() for f in foils}  # true there, false here
    assert not flipped & set(probes)


def test_fronted_probes_word_the_same_spatial_relations_relation_first() -> None:
    scene = _two_object_scene()  # a red circle left of a blue square, same height and size
    both = relation_probes(scene, frozenset(), ("subject", "fronted"))
    assert both[:2] == relation_probes(scene, frozenset())  # the subject frame first, unchanged
    fronted = {p.text: p.foils for p in both[2:]}
    assert {p.frame for p in both[2:]} == {"fronted"}
    assert fronted == {
        "To the left of the blue square there is a red circle": (
            "To the right of the blue square there is a red circle",
            "To the left of the red circle there is a blue square",
        ),
        "To the right of the red circle there is a blue square": (
            "To the left of the red circle there is a blue square",
            "To the right of the blue square there is a red circle",
        ),
    }
    mirrored = [replace(o, x=1.0 - o.x) for o in scene.objects]
    mirror = replace(scene, objects=tuple(mirrored), relations=compute_relations(mirrored))
    flipped = {p.text for p in relation_probes(mirror, frozenset(), ("fronted",))}
    assert flipped == {f for foils in fronted.values() for f in foils}
    red, blue = scene.objects
    bigger = replace(red, size="large")  # the blue square is medium
    sized = Scene((bigger, blue), compute_relations([bigger, blue]), scene.background, 1)
    assert {p.predicate for p in relation_probes(sized, frozenset())} == {"left_of", "bigger_than"}
    # size is never fronted ("Bigger than the Y there is a X" is not English)
    assert {p.predicate for p in relation_probes(sized, frozenset(), ("fronted",))} == {"left_of"}
    with pytest.raises(ValueError, match="unknown probe frame"):
        relation_probes(scene, frozenset(), ("passive",))


def test_relation_probes_never_name_a_held_out_pair_or_an_ambiguous_object() -> None:
    scene = _two_object_scene()
    assert relation_probes(scene, frozenset({("blue", "square")})) == ()
    red, blue = scene.objects
    twin = replace(red, x=0.5, y=0.1, r=0.08)  # a second red circle: "the red circle" is ambiguous
    placed = [red, blue, twin]
    crowded = Scene(tuple(placed), compute_relations(placed), scene.background, 1)
    assert crowded.relations  # the relations are there; no pair of them is nameable
    assert relation_probes(crowded, frozenset()) == ()


def test_caption_probes_flip_the_relation_words_of_the_caption_grammar_and_nothing_else() -> None:
    scene = _two_object_scene()  # a red circle left of a blue square
    red, blue = scene.objects
    large = replace(red, size="large")  # and now bigger than it
    sized = Scene((large, blue), compute_relations([large, blue]), scene.background, 1)
    probes = caption_probes(sized, np.random.default_rng(0), 16)
    assert probes == caption_probes(sized, np.random.default_rng(0), 16)  # its stream alone
    assert len({p.text for p in probes}) == len(probes) > 1  # repeats dropped
    assert {p.frame for p in probes} == {"caption"}
    assert {p.predicate for p in probes} <= {"left_of", "bigger_than"}
    clauses = [p for p in probes if ";" in p.text]
    assert clauses and any(" there is " in p.text for p in probes)  # two clauses, fronted
    for p in probes:
        assert len(p.foils) == p.text.count(";") + 1  # one foil per relation stated
        for foil in p.foils:
            before, after = p.text.split(), foil.split()
            changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
            assert len(changed) == 1 and changed[0][1] in FLIPS[changed[0][0]]
    twin = replace(red, x=0.5, y=0.1, r=0.08)  # two red circles alike: nothing is nameable
    crowded = Scene((red, blue, twin), compute_relations([red, blue, twin]), scene.background, 1)
    assert caption_probes(crowded, np.random.default_rng(0), 4) == ()


def test_caption_probes_with_swaps_also_trade_one_clauses_objects() -> None:
    scene = _two_object_scene()
    red, blue = scene.objects
    large = replace(red, size="large")
    sized = Scene((large, blue), compute_relations([large, blue]), scene.background, 1)
    probes = caption_probes(sized, np.random.default_rng(0), 16, swaps=True)
    assert any(";" in p.text for p in probes)
    for p in probes:
        flipped, swapped = p.foils  # the same clause's word flipped, then its objects swapped
        changed = [(a, b) for a, b in zip(p.text.split(), flipped.split(), strict=True) if a != b]
        assert len(changed) == 1 and changed[0][1] in FLIPS[changed[0][0]]
        assert swapped != p.text
        assert _words(swapped.replace(";", " ")) == _words(p.text.replace(";", " "))
        kept = [c for c in p.text.split("; ") if c in swapped.split("; ")]
        assert len(kept) == p.text.count(";")  # the other clause, if any, untouched


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    return (
        ensure_dataset("retrieval", root / "retrieval", "tiny", seed=0),
        ensure_dataset("binding", root / "binding", "tiny", seed=0),
    )


def test_the_training_set_keeps_twins_and_binding_pairs_together(data: tuple[Path, Path]) -> None:
    retrieval, binding = data
    ts = build_training_set(retrieval, binding, 64, seed=0, rounds=1)
    assert len(ts) == len(ts.pixels) == sum(len(g) for g in ts.groups)
    assert sorted(i for g in ts.groups for i in g) == list(range(len(ts)))
    assert sum(len(g) == 2 for g in ts.groups) >= 6  # the 6 binding pairs at least
    order = ts.order(np.random.default_rng(0))
    for g in ts.groups:
        if len(g) == 2:
            at = int(np.flatnonzero(order == g[0])[0])
            assert order[at + 1] == g[1]
    captions, foils = ts.draw(np.random.default_rng(0), 2)
    assert len(captions) == len(ts) and all(len(f) <= 2 for f in foils)
    assert sum(map(len, foils)) > len(ts)  # most captions have foils
    assert ts.relations == ()  # no probes unless asked for


def test_a_splits_relation_probes_point_at_their_images(data: tuple[Path, Path]) -> None:
    from pipelines.data.store import read_jsonl
    from pipelines.encoder.relations import load_relation_probes

    retrieval, _ = data
    recs = read_jsonl(retrieval / "test.jsonl")
    loaded = load_relation_probes(retrieval, "test")  # in both frames
    assert len(loaded) == len(loaded.image) > 0
    assert {p.frame for p in loaded.probes} == {"subject", "fronted"}
    both = ("subject", "fronted")
    for i, probe in zip(loaded.image, loaded.probes, strict=True):
        assert probe in relation_probes(Scene.from_dict(recs[int(i)]["scene"]), frozenset(), both)


def test_relation_probes_are_drawn_per_image_and_join_the_texts(data: tuple[Path, Path]) -> None:
    retrieval, binding = data
    plain = build_training_set(retrieval, binding, 64, seed=0, rounds=1)
    ts = build_training_set(retrieval, binding, 64, seed=0, rounds=1, relations=True)
    assert plain.pools == ts.pools  # the probes draw after the pools: the same captions
    assert len(ts.relations) == len(ts)
    captions, _ = ts.draw(np.random.default_rng(0), 2)
    texts, foils = ts.draw_relations(np.random.default_rng(1), captions)
    has = [bool(p) for p in ts.relations]
    assert any(has) and not all(has)
    for i, probes in enumerate(ts.relations):
        if probes:
            assert texts[i] in {p.text for p in probes} and len(foils[i]) == 2
        else:
            assert texts[i] == captions[i] and foils[i] == ()
    assert set(texts) | {f for fs in foils for f in fs} <= set(ts.texts())


def test_caption_probes_join_each_images_relation_probes_after_them(
    data: tuple[Path, Path],
) -> None:
    retrieval, binding = data
    probed = build_training_set(retrieval, binding, 64, seed=0, rounds=1, relations=True)
    ts = build_training_set(
        retrieval, binding, 64, seed=0, rounds=1, relations=True, caption_relations=3
    )
    assert ts.pools == probed.pools  # their own random stream: the captions are unchanged
    worded = 0
    for before, after in zip(probed.relations, ts.relations, strict=True):
        assert after[: len(before)] == before  # the subject-frame probes first, unchanged
        extra = after[len(before) :]
        assert len(extra) <= 3 and {p.frame for p in extra} <= {"caption"}
        worded += bool(extra)
    assert worded > 0
    assert {f for ps in ts.relations for p in ps for f in p.foils} <= set(ts.texts())


def test_shape_twins_join_their_scene_and_its_twin_in_one_group(data: tuple[Path, Path]) -> None:
    retrieval, _ = data
    plain = build_training_set(retrieval, None, 64, seed=0, rounds=1)
    ts = build_training_set(retrieval, None, 64, seed=0, rounds=1, shape_twins=True)
    assert len(ts.groups) == len(plain.groups)  # one group per train scene still
    assert len(ts) > len(plain)
    assert sum(len(g) == 3 for g in ts.groups) >= len(ts.groups) // 2
    order = ts.order(np.random.default_rng(0)).tolist()
    for g in ts.groups:
        at = order.index(g[0])
        assert order[at : at + len(g)] == list(g)


def test_training_with_every_recipe_part_runs_and_saves(
    data: tuple[Path, Path], tmp_path: Path
) -> None:
    retrieval, binding = data
    arch = tmp_path / "arch.json"
    cfg = load_config("tiny-conv").replace(image=SMALL, text={"unfrozen_layers": 1})
    arch.write_text(json.dumps(cfg.to_dict()))
    res = train(
        TrainConfig(
            preset=str(arch),
            data=retrieval,
            loss="both",
            epochs=1,
            batch_size=8,
            hard_negatives=2,
            twins=True,
            binding=binding,
            caption_rounds=1,
            grounding=1.0,
            relations=1.0,
            relation_margin=0.8,
            fronted_probes=True,
            caption_relations=2,
            caption_swaps=True,
            text_cache=tmp_path / "states",
            out=tmp_path / "model",
            progress=False,
        )
    )
    assert math.isfinite(res.history[0].loss)
    assert list((tmp_path / "states").glob("depth5-*/*.pt"))  # the next run loads these
    assert (tmp_path / "model" / "config.json").is_file()
    assert res.model.config.text.unfrozen_layers == 1
    # the training record beside the weights: what trained them, how it went, how fast
    record = json.loads((tmp_path / "model" / TRAINING_RECORD).read_text())
    assert record["config"]["hard_negatives"] == 2 and record["config"]["binding"] == str(binding)
    assert [h["epoch"] for h in record["history"]] == [1]
    assert record["train_images"] == res.train_images > 0
    assert record["images_per_second"] == pytest.approx(res.train_images / res.seconds)
    assert record["config"]["grounding"] == record["config"]["relations"] == 1.0
    assert record["config"]["relation_margin"] == 0.8
    assert record["config"]["caption_relations"] == 2


@pytest.mark.parametrize(
    "option",
    [
        {"relation_margin": 0.8},
        {"relation_margin": 0.0},  # a margin of 0 is still a margin
        {"fronted_probes": True},
        {"caption_relations": 2},
        {"caption_swaps": True},
    ],
)
def test_relation_options_without_the_relation_term_are_refused(
    data: tuple[Path, Path], option: dict[str, object]
) -> None:
    retrieval, _ = data
    cfg = TrainConfig(data=retrieval, hard_negatives=2, progress=False, **option)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"{next(iter(option))} acts within the relation term"):
        train(cfg)


def test_caption_swaps_without_caption_probes_are_refused() -> None:
    cfg = TrainConfig(hard_negatives=2, relations=1.0, caption_swaps=True)
    with pytest.raises(ValueError, match=r"caption_swaps .* set caption_relations > 0"):
        check_config(cfg)


@pytest.mark.parametrize("term", ["grounding", "relations"])
def test_scene_terms_without_scenes_behind_the_images_are_refused(
    data: tuple[Path, Path], term: str
) -> None:
    retrieval, _ = data
    cfg = TrainConfig(data=retrieval, epochs=1, progress=False, **{term: 1.0})
    with pytest.raises(ValueError, match=f"{term} needs the scenes"):
        train(cfg)


def test_rewording_alone_drafts_from_the_scenes_so_grounding_has_its_objects(
    data: tuple[Path, Path],
) -> None:
    from pipelines.train_encoder import training_set

    retrieval, _ = data
    cfg = TrainConfig(data=retrieval, reword=0.5, grounding=1.0, train_limit=8, progress=False)
    built = training_set(cfg, retrieval, 64)
    assert built.objects is not None and (built.objects.label >= 0).any()
