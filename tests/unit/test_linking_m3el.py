"""M3EL on a tiny random encoder: feature shapes, NaN for matchers that do not apply, a mention
without an image still ranks, the fused vectors, the loss, the ablations, and the package
round trip (including what a broken package reports)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from concord.checkpoints import load_model
from concord.checkpoints.linker import (
    encoder_uri,
    load_linker,
    read_linker_package,
    write_linker_package,
)
from concord.errors import FailedPrecondition
from concord.models.linking import (
    M3EL,
    VARIANTS,
    EntityFeatures,
    M3ELConfig,
    MentionFeatures,
    entity_text,
    featurize_entities,
    featurize_mentions,
    mention_text,
)
from tests.fixtures.models import linker_package, tiny_encoder

DIM = 128  # the tiny encoder's embed_dim


@pytest.fixture(scope="module")
def features(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[MentionFeatures, EntityFeatures, Path]:
    encoder_dir = tiny_encoder(tmp_path_factory)
    loaded = load_model(str(encoder_dir), registry=lambda: pytest.fail("no registry"))
    encoder, size = loaded.torch_model(), loaded.image_size
    gen = torch.Generator().manual_seed(0)
    img = [torch.rand(3, size, size, generator=gen) for _ in range(6)]
    texts = ["Zorba waved from the red float.", "We met Zorba at the striped tent.", "Kel!"]
    spans = [(0, 5), (7, 12), (0, 3)]
    mentions = featurize_mentions(encoder, loaded.tokenizer, texts, spans, [img[0], None, img[1]])
    entity_texts = [
        entity_text("Zorba", "A large circle.", {"region": "north"}),
        entity_text("Zorba", "A small square.", {}),
        entity_text("Kel", "", None),
        entity_text("Mira", "A striped star."),
    ]
    pixels: list[torch.Tensor | list[torch.Tensor] | None] = [
        torch.stack(img[2:4]),
        None,
        [img[4]],
        [],
    ]
    entities = featurize_entities(encoder, loaded.tokenizer, entity_texts, pixels)
    return mentions, entities, encoder_dir


def test_entity_and_mention_texts() -> None:
    assert (
        entity_text("Zorba", "A large circle.", {"b": 2, "a": 1})
        == "Zorba. A large circle. a: 1; b: 2"
    )
    assert entity_text("Kel", "", None) == "Kel"
    assert mention_text("Hi Kel!", (3, 6)) == "Kel [SEP] Hi Kel!"
    with pytest.raises(ValueError, match="outside"):
        mention_text("Hi", (1, 5))


def test_feature_shapes_and_missing_images(features) -> None:  # type: ignore[no-untyped-def]
    mentions, entities, _ = features
    assert len(mentions) == 3 and len(entities) == 4
    b, length, dt = mentions.text_tokens.shape
    assert (b, dt) == (3, DIM) and mentions.text_mask.shape == (3, length)
    assert mentions.text_global.shape == (3, DIM)
    assert mentions.image_patches.shape[0] == 3 and mentions.image_patches.shape[2] == DIM
    assert mentions.has_image.tolist() == [True, False, True]
    assert not mentions.image_global[1].any() and not mentions.image_patches[1].any()
    assert entities.has_image.tolist() == [True, False, True, False]
    assert not entities.image_global[1].any() and not entities.image_global[3].any()
    assert torch.allclose(entities.image_global[0].norm(), torch.tensor(1.0), atol=1e-5)
    both = MentionFeatures.cat([mentions[0:1], mentions[1:3]])
    assert torch.equal(both.text_global, mentions.text_global)


def test_matchers_are_nan_where_they_do_not_apply_and_final_still_ranks(features) -> None:  # type: ignore[no-untyped-def]
    mentions, entities, _ = features
    model = M3EL(M3ELConfig(hidden=16, heads=2), DIM, DIM).eval()
    with torch.no_grad():
        scores = model.match(mentions, entities)
    for t in (*scores.matchers().values(), scores.final):
        assert t.shape == (3, 4)
    both = mentions.has_image[:, None] & entities.has_image[None, :]
    assert torch.equal(scores.visual.isnan(), ~both)
    # text->visual checks a mention's words against the entity's image even without its own
    assert torch.equal(scores.cross_modal.isnan(), ~entities.has_image[None, :].expand(3, 4))
    assert not scores.text_coarse.isnan().any() and not scores.text_fine.isnan().any()
    assert torch.isfinite(scores.final).all()  # the mention without an image still ranks
    expected = torch.stack(list(scores.matchers().values())).nanmean(0)
    assert torch.allclose(scores.final, expected, atol=1e-5)
    row = scores.final[1, 1]  # neither side has an image: the text matchers alone
    assert torch.allclose(row, (scores.text_coarse[1, 1] + scores.text_fine[1, 1]) / 2, atol=1e-5)


def test_fused_vectors_are_normalised(features) -> None:  # type: ignore[no-untyped-def]
    mentions, entities, _ = features
    model = M3EL(M3ELConfig(hidden=16, heads=2), DIM, DIM).eval()
    with torch.no_grad():
        m, e = model.mention_embedding(mentions), model.entity_embedding(entities)
    assert m.shape == (3, model.embed_dim) and e.shape == (4, model.embed_dim)
    assert torch.allclose(m.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(e.norm(dim=-1), torch.ones(4), atol=1e-5)
    hid = model.config.hidden
    assert not e[1, hid:].any()  # an entity without an image: its text part only
    assert not m[1, hid : 2 * hid].any() and not m[1, 3 * hid :].any()  # no image, no v->t
    assert m[1, 2 * hid : 3 * hid].any()  # but its words still meet entity images (t->v)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_trains_a_step(features, variant: str) -> None:  # type: ignore[no-untyped-def]
    mentions, entities, _ = features
    torch.manual_seed(0)
    model = M3EL(M3ELConfig.variant(variant, hidden=16, heads=2), DIM, DIM)
    targets = torch.tensor([0, 1, 2])
    out = model.loss(mentions, entities, targets)
    assert math.isfinite(float(out.total.detach())) and "final" in out.parts
    assert ("cl" in out.parts) == (variant != "no_cl")
    out.total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    scores = model.match(mentions, entities)
    if variant == "text_only":
        assert scores.visual.isnan().all() and scores.cross_modal.isnan().all()
    if variant == "image_only":
        assert scores.text_coarse.isnan().all() and scores.final[1].isneginf().all()
    if variant == "global_only":
        assert scores.text_fine.isnan().all() and scores.cross_modal.isnan().all()


def test_a_few_steps_lower_the_loss(features) -> None:  # type: ignore[no-untyped-def]
    mentions, entities, _ = features
    torch.manual_seed(0)
    model = M3EL(M3ELConfig(hidden=16, heads=2), DIM, DIM)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    targets = torch.tensor([0, 1, 2])
    first = float(model.loss(mentions, entities, targets).total.detach())
    for _ in range(20):
        opt.zero_grad()
        model.loss(mentions, entities, targets).total.backward()
        opt.step()
    assert float(model.loss(mentions, entities, targets).total.detach()) < first
    assert model.match(mentions, entities).final.argmax(1).tolist() == [0, 1, 2]


def test_package_round_trip(features, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mentions, entities, encoder_dir = features
    directory = linker_package(tmp_path / "pkg", encoder_dir, one_direction=True)
    model, meta = load_linker(directory)
    assert meta["kind"] == "concord-linker" and meta["embed_dim"] == model.embed_dim
    assert model.config.one_direction and (meta["text_dim"], meta["image_dim"]) == (DIM, DIM)
    assert encoder_uri(directory, meta) == str(encoder_dir)
    config, state, _ = read_linker_package(directory)
    again = M3EL(config, DIM, DIM)
    again.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(again(mentions, entities), model(mentions, entities))
    copied = write_linker_package(tmp_path / "self", model, config, "x", copy_encoder=encoder_dir)
    meta = json.loads((copied / "linker.json").read_text())
    assert meta["encoder"] == "encoder"
    assert encoder_uri(copied, meta) == str((copied / "encoder").resolve())


def test_broken_packages_say_what_is_wrong(features, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, encoder_dir = features
    with pytest.raises(FailedPrecondition, match="not a directory"):
        read_linker_package(tmp_path / "nope")
    directory = linker_package(tmp_path / "pkg", encoder_dir)
    (directory / "m3el.pt").unlink()
    with pytest.raises(FailedPrecondition, match=r"missing m3el\.pt"):
        read_linker_package(directory)
    directory = linker_package(tmp_path / "pkg2", encoder_dir)
    meta = json.loads((directory / "linker.json").read_text())
    del meta["image_dim"]
    (directory / "linker.json").write_text(json.dumps(meta))
    with pytest.raises(FailedPrecondition, match="lacks image_dim"):
        read_linker_package(directory)
    meta |= {"image_dim": DIM, "m3el": {**meta["m3el"], "bogus": 1}}
    (directory / "linker.json").write_text(json.dumps(meta))
    with pytest.raises(FailedPrecondition, match="bogus"):
        read_linker_package(directory)
    meta["m3el"].pop("bogus")
    meta["m3el"]["hidden"] = 32
    (directory / "linker.json").write_text(json.dumps(meta))
    with pytest.raises(FailedPrecondition, match="does not fit"):
        load_linker(directory)
    (directory / "m3el.pt").write_bytes(b"garbage")
    with pytest.raises(FailedPrecondition, match="not a state dict"):
        read_linker_package(directory)


def test_pipeline_trains_tests_and_packages_on_a_tiny_set(
    features,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    from pipelines.data.sets import BuildArgs, registry
    from pipelines.linker.m3el_pipeline import M3ELRunConfig, train_m3el
    from pipelines.linker.m3el_report import section
    from pipelines.linker.m3el_train import TrainSettings

    _, _, encoder_dir = features
    data = tmp_path / "entities"
    counts = {"entities": 14, "train": 14, "val": 7, "test": 14}
    registry()["entities"].build(BuildArgs(data, 0, counts, 64))
    cfg = M3ELRunConfig(
        encoder=str(encoder_dir),
        data=data,
        hidden=16,
        train=TrainSettings(steps=4, batch_size=8, candidates=10, eval_every=2),
        work_dir=tmp_path / "work",
    )
    directory, version, test = train_m3el(cfg, log=lambda _: None)
    assert version is None and {"Hits@1", "Hits@3", "Hits@10", "MRR"} <= set(test)
    assert 0.0 <= test["Hits@1"] <= test["Hits@10"] <= 1.0
    _, meta = load_linker(directory)
    assert meta["encoder"] == str(encoder_dir.resolve()) and meta["metrics"]["MRR"] == test["MRR"]
    assert list((tmp_path / "work").glob("m3el-features-*.pt"))  # featurised once, cached

    from pipelines.linker.m3el_pipeline import RunResult

    runs = [
        RunResult(v, s, f, {**test, "Hits@1": test["Hits@1"] + d}, 4, 0.5, 1.0)
        for v, d in (("full", 0.1), ("text_only", 0.0))
        for s in (0, 1)
        for f in (1.0, 0.2)
    ]
    sec = section(runs, tmp_path / "plots")
    assert "Full > every ablation" in sec.markdown and sec.plots[0].is_file()
    assert any(r.method == "full" and r.baseline is None for r in sec.rows)
