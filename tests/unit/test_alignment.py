"""Tests of concord.models.alignment on a tiny random DualEncoder (and a tiny random CLIP saved
locally): shapes, word spans in the original text, attribution signs on a constructed case,
RefCLIPScore and the fine-grained score against hand / library computations, calibration, and
CLIPScore against torchmetrics' implementation on the same CLIP."""

from __future__ import annotations

import math
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from concord.checkpoints import build_encoder, load_clip_checkpoint
from concord.models import load_config
from concord.models.alignment import (
    CALIBRATION_FEATURES,
    AlignmentScorer,
    PairScores,
    aligned_probability,
    f_clip_score,
    group_words,
    word_spans,
)
from concord.models.dual_encoder import Encoded
from concord.models.losses import filip_similarity
from tests.fixtures.models import write_tiny_clip

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def tiny() -> tuple[AlignmentScorer, torch.nn.Module]:
    model, tokenizer = build_encoder(load_config("tiny"), seed=3)
    model.eval()
    return AlignmentScorer(model, tokenizer), model


def _pixels(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_explain_shapes_and_scores(tiny: tuple[AlignmentScorer, torch.nn.Module]) -> None:
    scorer, _ = tiny
    text = "a red circle left of a blue square."
    e = scorer.explain(_pixels(1)[0], text)
    assert [w.word for w in e.words] == ["a", "red", "circle", "left", "of", "a", "blue", "square"]
    assert e.heatmap.shape == (8, 8, 8) and e.heatmap.dtype == np.float32
    for k, w in enumerate(e.words):
        assert 0 <= w.best_patch < 64
        assert w.similarity == pytest.approx(float(e.heatmap[k].max()), abs=1e-6)
        assert w.best_patch == int(e.heatmap[k].argmax())
        assert w.misaligned == (w.attribution < -5e-5)
    s = e.scores
    assert s.ref_clip_score is None
    assert s.clip_score == pytest.approx(2.5 * max(e.cosine, 0.0), abs=1e-6)
    assert all(math.isfinite(v) for v in (s.clip_score, s.fine_grained_score, s.f_clip_score))


def test_score_batch_equals_single_pairs(tiny: tuple[AlignmentScorer, torch.nn.Module]) -> None:
    scorer, _ = tiny
    texts = ["a red circle", "three small green triangles above a big striped square", "blue"]
    pixels = _pixels(3)
    batch = scorer.score(pixels, texts)
    for i, text in enumerate(texts):
        one = scorer.explain(pixels[i : i + 1], text).scores
        assert batch[i].clip_score == pytest.approx(one.clip_score, abs=1e-5)
        assert batch[i].fine_grained_score == pytest.approx(one.fine_grained_score, abs=1e-5)
        assert batch[i].f_clip_score == pytest.approx(one.f_clip_score, abs=1e-4)


def test_spans_point_into_the_original_text(tiny: tuple[AlignmentScorer, torch.nn.Module]) -> None:
    scorer, _ = tiny
    text = "Red, red — and RED!  A naïve café's über-blue 日本 square... don't"
    e = scorer.explain(_pixels(1), text)
    spans = [w.span for w in e.words]
    assert spans == word_spans(text)
    assert [text[a:b] for a, b in spans] == [w.word for w in e.words]
    words = [w.word for w in e.words]
    assert [words[0], words[1], words[3]] == ["Red", "red", "RED"]  # repeats keep own spans
    assert len(set(spans)) == len(spans)
    assert "naïve" in [w.word for w in e.words] and "don't" in [w.word for w in e.words]
    assert not any(set(w.word) & set(",.!—") for w in e.words)  # punctuation is no word
    # The template is scored but never reported: spans still index the text itself.
    templated = AlignmentScorer(scorer.model, scorer.tokenizer, template="A photo depicts ")
    t = templated.explain(_pixels(1), text)
    assert [w.span for w in t.words] == spans


def test_group_words_uses_token_offsets() -> None:
    text = "unbelievably red"
    # [CLS] un ##believ ##ably red [SEP], offsets into "T: " + text (prefix 3)
    offsets = [(0, 0), (0, 1), (3, 5), (5, 11), (11, 15), (16, 19), (0, 0)]
    groups = group_words(text, offsets, prefix=3)
    assert groups == [((0, 12), (2, 3, 4)), ((13, 16), (5,))]  # template token (0, 1) dropped


def test_attributions_flip_sign_with_the_image(
    tiny: tuple[AlignmentScorer, torch.nn.Module],
) -> None:
    """A constructed case: the image embedding points along "red minus blue". In "a blue circle"
    the contradicted colour is the most negative word; in "a red circle" the colour is the most
    positive; negating the image negates every attribution (ds/dA is linear in the image)."""
    scorer, model = tiny
    tok = scorer.tokenizer(["a red circle", "a blue circle"])
    with torch.no_grad():
        e = model.encode_text(tok.input_ids, tok.attention_mask).pooled
    u = F.normalize(e[0] - e[1], dim=-1)
    image = Encoded(
        torch.stack([u, u]), u.expand(2, 4, -1).clone(), torch.ones(2, 4, dtype=torch.bool)
    )
    red, blue = scorer.raw(None, ["a red circle", "a blue circle"], image=image)
    assert red.cosine > 0 > blue.cosine
    assert int(np.argmax(red.attributions)) == 1 and red.attributions[1] > 0
    assert int(np.argmin(blue.attributions)) == 1 and blue.attributions[1] < 0
    flagged = blue.explanation(threshold=0.0)
    assert flagged.words[1].misaligned and not flagged.words[2].misaligned
    neg = Encoded(-image.pooled, -image.tokens, image.mask)
    flipped = scorer.raw(None, ["a red circle", "a blue circle"], image=neg)
    for a, b in zip((red, blue), flipped, strict=True):
        assert b.cosine == pytest.approx(-a.cosine, abs=1e-6)
        np.testing.assert_allclose(b.attributions, -a.attributions, rtol=1e-3, atol=1e-9)
    # The Chefer-style ablation clamps G*A to >= 0: no word can be negative any more.
    assert (flipped[1].positive >= 0).all() and (blue.positive >= 0).all()


def test_ref_clip_score_matches_hand_computation(
    tiny: tuple[AlignmentScorer, torch.nn.Module],
) -> None:
    scorer, model = tiny
    pixels = _pixels(2, seed=1)
    texts = ["a red circle", "two squares"]
    refs = [["a red round shape", "red circle", "something else"], []]
    got = scorer.score(pixels, texts, refs)
    with torch.no_grad():
        img = model.encode_image(pixels).pooled
        tok = scorer.tokenizer(texts + refs[0])
        emb = model.encode_text(tok.input_ids, tok.attention_mask).pooled
    cos = float(img[0] @ emb[0])
    ref = max(float((emb[2:] @ emb[0]).max()), 0.0)
    clip = 2.5 * max(cos, 0.0)
    want = 2 * clip * ref / (clip + ref) if clip + ref else 0.0
    assert got[0].clip_score == pytest.approx(clip, abs=1e-5)
    assert got[0].ref_clip_score == pytest.approx(want, abs=1e-5)
    assert got[1].ref_clip_score is None


def test_fine_grained_equals_filip_text_to_image(
    tiny: tuple[AlignmentScorer, torch.nn.Module],
) -> None:
    scorer, model = tiny
    texts = ["a red circle, left of a blue square", "big green star"]
    pixels = _pixels(2, seed=2)
    got = scorer.score(pixels, texts)
    tok = scorer.tokenizer(texts)
    with torch.no_grad():
        image = model.encode_image(pixels)
        text = model.encode_text(tok.input_ids, tok.attention_mask)
    words = torch.zeros_like(text.mask)
    for i, t in enumerate(texts):
        for _, members in group_words(t, tok.offsets[i]):
            words[i, list(members)] = True
    text = Encoded(text.pooled, text.tokens * words.unsqueeze(-1), words)
    want = filip_similarity(image, text).text_to_image.diagonal()
    assert [g.fine_grained_score for g in got] == pytest.approx(want.tolist(), abs=1e-5)


def test_works_under_inference_mode_and_keeps_train_mode(
    tiny: tuple[AlignmentScorer, torch.nn.Module],
) -> None:
    scorer, model = tiny
    pixels = _pixels(1)
    plain = scorer.explain(pixels, "a red circle")
    model.train()
    try:
        with torch.inference_mode():
            again = scorer.explain(pixels.clone(), "a red circle")
        assert model.training  # restored
    finally:
        model.eval()
    assert [w.attribution for w in again.words] == pytest.approx(
        [w.attribution for w in plain.words], rel=1e-4, abs=1e-9
    )
    assert not any(p.grad is not None for p in model.parameters())  # no parameter gradients


def test_input_errors(tiny: tuple[AlignmentScorer, torch.nn.Module]) -> None:
    scorer, _ = tiny
    with pytest.raises(ValueError, match="texts"):
        scorer.score(_pixels(2), ["one text"])
    with pytest.raises(TypeError):
        scorer.score(_pixels(1), "a str")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one image"):
        scorer.explain(_pixels(2), "a red circle")
    with pytest.raises(ValueError, match="layers"):
        AlignmentScorer(scorer.model, scorer.tokenizer, layers=7)


def test_f_clip_score_form() -> None:
    assert f_clip_score(1.0, 0.4, [1e-3, -1e-6], 5e-5) == 1.0  # nothing below -threshold
    got = f_clip_score(1.0, 0.4, [3e-4, -1e-4, -2e-4], 5e-5)
    assert got == pytest.approx(1.0 + 1.0 * 0.6 * (-3e-4))  # default penalty 1
    got = f_clip_score(1.0, 0.4, [3e-4, -1e-4, -2e-4], 1.5e-4, penalty=50.0)
    assert got == pytest.approx(1.0 + 50.0 * 0.6 * (-2e-4))  # only -2e-4 is below -1.5e-4
    # a worse-matching pair (lower s) pays more for the same contradiction
    assert f_clip_score(0.5, 0.2, [-1e-3], 0.0, 10) < f_clip_score(0.5, 0.8, [-1e-3], 0.0, 10)
    assert f_clip_score(0.0, -0.2, [], 5e-5) == 0.0


def test_aligned_probability_is_the_stored_logistic() -> None:
    cal = {
        "form": "logistic",
        "features": list(CALIBRATION_FEATURES),
        "mean": [0.5, 0.2, 0.4],
        "scale": [0.1, 0.05, 0.2],
        "coef": [1.0, -0.5, 2.0],
        "intercept": -0.3,
    }
    s = PairScores(0.7, None, 0.25, 0.2)
    z = -0.3 + 1.0 * 2.0 - 0.5 * 1.0 + 2.0 * -1.0
    assert aligned_probability(s, cal) == pytest.approx(1 / (1 + math.exp(-z)))
    assert aligned_probability(PairScores(100.0, None, 0.2, 100.0), cal) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="form"):
        aligned_probability(s, {**cal, "form": "isotonic"})


def test_clip_score_equals_torchmetrics_on_a_local_clip(tmp_path: Path) -> None:
    """Cross-implementation check: our CLIPScore with weight 100 equals torchmetrics' CLIPScore
    on the same tiny random CLIP, both loaded from the same local directory.

    torchmetrics 1.9.0 loads a path with CLIPModel/CLIPProcessor.from_pretrained (only for names
    containing "openai") and then reads `get_image_features` / `get_text_features` as tensors,
    the transformers 4 API; transformers 5 returns an output object whose `pooler_output` is
    that tensor. So we hand torchmetrics the same from_pretrained objects through its callable
    form, with those two methods returning `pooler_output`; the scoring (L2 norm, 100 * cos,
    clamp at 0) is torchmetrics' own."""
    from torchmetrics.multimodal import CLIPScore
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor

    root = tmp_path / "openai-tiny"
    root.mkdir()
    write_tiny_clip(root)
    clip_dir = root / "clip"
    CLIPImageProcessor(
        do_resize=False,
        do_center_crop=False,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    ).save_pretrained(clip_dir)

    def load() -> tuple[CLIPModel, CLIPProcessor]:
        model = CLIPModel.from_pretrained(str(clip_dir), local_files_only=True).eval()
        image_features, text_features = model.get_image_features, model.get_text_features
        model.get_image_features = lambda *a, **k: image_features(*a, **k).pooler_output
        model.get_text_features = lambda *a, **k: text_features(*a, **k).pooler_output
        return model, CLIPProcessor.from_pretrained(str(clip_dir), local_files_only=True)

    adapter = load_clip_checkpoint(clip_dir)
    scorer = AlignmentScorer(adapter, adapter.tokenizer, weight=100.0, layers=2)
    metric = CLIPScore(model_name_or_path=load)
    images = torch.randint(
        0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    texts = ["a red circle", "red", "circle", "a circle red", "red red", "a"]
    ours = scorer.score(images.float() / 255.0, texts)
    positive = 0
    for image, text, got in zip(images, texts, ours, strict=True):
        metric.reset()
        metric.update(image, text)
        want = float(metric.compute())
        assert got.clip_score == pytest.approx(want, abs=1e-4)
        positive += want > 0
    assert positive >= 1  # not only clamped zeros
    # The CLIP text model is EOS-pooled: attributions come from the EOS row.
    e = scorer.explain(images[:1].float() / 255.0, "a red circle")
    assert [w.word for w in e.words] == ["a", "red", "circle"]
    assert e.heatmap.shape == (3, 4, 4)
