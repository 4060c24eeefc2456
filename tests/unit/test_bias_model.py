"""The bias model API (concord.models.bias) and its package (concord.checkpoints.bias) on a tiny
random package around the tiny encoder: shapes, what each tuning trains, the package round
trip, detect / probe, cues and calibration maths."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from concord.checkpoints.bias import (
    PACKAGE_FILE,
    WEIGHTS_FILE,
    load_bias,
    read_bias_package,
    write_bias_package,
)
from concord.errors import FailedPrecondition
from concord.models.bias import (
    BiasClassifier,
    BiasConfig,
    InconsistencyCalibration,
    WordAttribution,
    biased_probability,
    expected_calibration_error,
    fit_temperature,
    linguistic_cues,
    occlusion_boxes,
    rationale,
    text_reliance,
)
from tests.fixtures.models import bias_package, tiny_encoder


def _no_registry():  # type: ignore[no-untyped-def]
    raise AssertionError("a local package needs no registry")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from concord.checkpoints import load_encoder

    directory = tiny_encoder(tmp_path_factory)
    model, tokenizer = load_encoder(directory)
    return directory, model, tokenizer


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory, encoder) -> Path:  # type: ignore[no-untyped-def]
    return bias_package(tmp_path_factory.mktemp("bias") / "pkg", encoder[0])


def _inputs(tokenizer, n: int = 2):  # type: ignore[no-untyped-def]
    texts = ["A sinister red circle bullies a blue square", "A red circle is next to a square"][:n]
    batch = tokenizer(texts)
    pixels = torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return texts, batch, pixels


@pytest.mark.parametrize(
    ("tuning", "fusion", "modality"),
    [("frozen", "concat", "both"), ("lora", "align", "both"), ("full", "concat", "text")],
)
def test_each_tuning_trains_what_it_says(encoder, tuning: str, fusion: str, modality: str) -> None:  # type: ignore[no-untyped-def]
    _, model, tokenizer = encoder
    config = BiasConfig(text_tuning=tuning, fusion=fusion, modality=modality, proj_dim=8, hidden=8)  # type: ignore[arg-type]
    classifier = BiasClassifier.from_encoder(config, model)
    _, batch, pixels = _inputs(tokenizer)
    logits = classifier(batch.input_ids, batch.attention_mask, pixels)
    assert logits.shape == (2,)
    trainable, total = classifier.parameter_counts()
    backbone = [p for p in classifier.text_backbone.parameters() if p.requires_grad]
    if tuning == "frozen":
        assert not backbone and trainable < 0.01 * total
        assert classifier.text_backbone is model.text_tower.backbone  # shared, not copied
    elif tuning == "lora":
        names = [n for n, p in classifier.text_backbone.named_parameters() if p.requires_grad]
        assert names and all("lora_" in n for n in names)
        assert any(".query." in n for n in names) and any(".value." in n for n in names)
        assert trainable < 0.05 * total
        assert not any("lora_" in n for n, _ in model.named_parameters())  # encoder untouched
    else:
        assert all(p.requires_grad for p in classifier.text_backbone.parameters())
    classifier.train()
    assert classifier.text_backbone.training == (tuning != "frozen")
    assert not classifier.image_tower.training  # frozen towers keep dropout off


def test_config_round_trips_and_rejects_bad_values() -> None:
    config = BiasConfig(fusion="align", text_tuning="full", lora_r=4)
    assert BiasConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="fusion"):
        BiasConfig(fusion="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown"):
        BiasConfig.from_dict({"fusoin": "concat"})


def test_package_round_trip_gives_the_same_probabilities(encoder, package: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, tokenizer = encoder
    loaded = load_bias(str(package), _no_registry)
    assert loaded.id.version.startswith("local-") and loaded.image_size == 64
    assert loaded.package.temperature == 1.5 and loaded.package.extra["created_by"] == "tests"
    texts, _, pixels = _inputs(tokenizer)
    first = loaded.detector.probabilities(pixels, texts)
    assert first.shape == (2,) and ((first > 0) & (first < 1)).all()
    # Only the classifier's own weights are stored: LoRA + heads, no frozen MiniLM / ViT.
    state = torch.load(package / WEIGHTS_FILE, weights_only=True)
    assert any("lora_" in k for k in state) and not any("base_layer" in k for k in state)
    assert not any(k.startswith("image_tower.") for k in state)
    again = write_bias_package(
        tmp_path / "copy",
        loaded.detector.classifier,
        encoder=loaded.package.encoder,
        temperature=1.5,
        inconsistency=loaded.package.inconsistency,
    )
    second = load_bias(str(again), _no_registry).detector.probabilities(pixels, texts)
    torch.testing.assert_close(first, second)


def test_missing_pieces_fail_with_their_name(package: Path, tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="is not a directory"):
        load_bias(str(tmp_path / "nowhere"), _no_registry)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FailedPrecondition, match=PACKAGE_FILE):
        load_bias(str(empty), _no_registry)
    body = json.loads((package / PACKAGE_FILE).read_text())
    for key in ("classifier", "encoder"):
        broken = tmp_path / f"no-{key}"
        broken.mkdir()
        (broken / PACKAGE_FILE).write_text(json.dumps({k: v for k, v in body.items() if k != key}))
        with pytest.raises(FailedPrecondition, match=repr(key)):
            read_bias_package(broken)
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / PACKAGE_FILE).write_text(json.dumps(body))
    with pytest.raises(FailedPrecondition, match=WEIGHTS_FILE):
        load_bias(str(no_weights), _no_registry)
    wrong_encoder = tmp_path / "wrong-encoder"
    wrong_encoder.mkdir()
    (wrong_encoder / PACKAGE_FILE).write_text(json.dumps({**body, "encoder": str(empty)}))
    (wrong_encoder / WEIGHTS_FILE).write_bytes((package / WEIGHTS_FILE).read_bytes())
    with pytest.raises(FailedPrecondition, match="encoder model"):
        load_bias(str(wrong_encoder), _no_registry)


def test_detect_gives_cues_spans_regions_and_a_rationale(encoder, package: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, tokenizer = encoder
    detector = load_bias(str(package), _no_registry).detector
    detector.min_delta = 0.0  # random weights: keep every cue, check their shapes
    texts, _, pixels = _inputs(tokenizer)
    verdicts = detector.detect(pixels, texts)
    assert len(verdicts) == 2
    for text, verdict in zip(texts, verdicts, strict=True):
        assert verdict.biased == (verdict.probability >= 0.5)
        assert 0 <= verdict.inconsistency <= 1
        words = [c for c in verdict.cues if c.kind == "linguistic"]
        assert 1 <= len(words) <= 3
        for cue in words:
            assert cue.span is not None and text[cue.span[0] : cue.span[1]].isalpha()
        (visual,) = [c for c in verdict.cues if c.kind == "visual"]
        assert visual.region is not None and 0 <= visual.region[0] < visual.region[2] <= 1
        assert verdict.rationale.startswith("biased" if verdict.biased else "neutral")
    fast = detector.detect(pixels, texts, explain=False)
    assert [v.probability for v in fast] == pytest.approx([v.probability for v in verdicts])
    assert all(not v.cues for v in fast)


def test_probe_measures_reliance_on_the_text(encoder, package: Path) -> None:  # type: ignore[no-untyped-def]
    detector = load_bias(str(package), _no_registry).detector
    pixels = torch.rand(1, 3, 64, 64)
    probe = detector.probe(pixels, "A red circle", ["A vile red circle", "A blue square"], explain=False)
    assert len(probe.counterfactuals) == 2 and 0.0 <= probe.text_reliance <= 1.0
    assert 0.0 <= probe.flip_rate <= 1.0
    assert text_reliance(0.5, [0.9, 0.1], 0.5) == 1.0  # image irrelevant: all text
    assert text_reliance(0.5, [0.5], 0.9) == 0.0  # text irrelevant: all image
    assert text_reliance(0.5, [0.7], 0.3) == pytest.approx(0.5)
    assert text_reliance(0.5, [0.5], 0.5) == 0.0


def test_calibration_maths() -> None:
    torch.manual_seed(0)
    true_logits = torch.randn(4000) * 2  # calibrated: labels drawn with these log-odds
    labels = (torch.rand(4000) < torch.sigmoid(true_logits)).float()
    overconfident = true_logits * 4
    t = fit_temperature(overconfident, labels)
    assert 3.0 < t < 5.5
    before = expected_calibration_error(biased_probability(overconfident), labels)
    after = expected_calibration_error(biased_probability(overconfident, t), labels)
    assert after < before / 2
    cos = torch.cat([torch.full((50,), 0.8), torch.full((50,), 0.2)]) + 0.05 * torch.randn(100)
    calibration = InconsistencyCalibration.fit(cos, torch.cat([torch.zeros(50), torch.ones(50)]))
    assert calibration.coef < 0
    p = calibration.probability(torch.tensor([0.8, 0.2]))
    assert p[0] < 0.1 and p[1] > 0.9
    again = InconsistencyCalibration.from_dict(json.loads(json.dumps(calibration.to_dict())))
    assert math.isclose(again.coef, calibration.coef)


def test_cue_selection_and_rationale() -> None:
    text = "A sinister circle bullies a square"
    words = [
        WordAttribution((2, 10), "sinister", 0.4),
        WordAttribution((18, 25), "bullies", 0.2),
        WordAttribution((11, 17), "circle", 0.005),
    ]
    cues = linguistic_cues(words, top_k=3, min_delta=0.02)
    assert [c.span for c in cues] == [(2, 10), (18, 25)]
    reason = rationale(text, True, 0.91, cues)
    assert "'sinister'" in reason and "'bullies'" in reason and "0.91" in reason
    assert "no word" in rationale(text, False, 0.1, [])
    boxes = occlusion_boxes(4)
    assert len(boxes) == 20 and all(0 <= b[0] < b[2] <= 1 for b in boxes)


def test_pipeline_trains_variants_into_a_loadable_package(encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from pipelines.bias.pipeline import (
        PipelineConfig,
        fit_inconsistency,
        prepare,
        run_variant,
        write_package,
    )
    from pipelines.bias.train import TrainSettings

    bench = prepare(PipelineConfig(encoder=str(encoder[0]), data_size="tiny", work_dir=tmp_path),
                    log=lambda _: None)
    assert set(bench.splits) == {"train", "val", "test"} and bench.frozen["train"].text_states is not None
    settings = TrainSettings(frozen_epochs=2, max_steps=2, batch_size=4)
    frozen = run_variant(bench, BiasConfig(text_tuning="frozen"), 0, settings)
    lora = run_variant(bench, BiasConfig(text_tuning="lora", fusion="align"), 1, settings, labels="gold")
    assert lora.steps == 2 and 0 <= lora.calibrated.accuracy <= 1 and lora.temperature > 0
    assert frozen.trainable < lora.trainable < lora.total
    calibration, _ = fit_inconsistency(bench)
    package = write_package(bench, frozen, calibration, tmp_path / "package")
    loaded = load_bias(str(package), _no_registry)
    assert loaded.package.extra["metrics"]["test_accuracy"] == frozen.calibrated.accuracy
    verdicts = loaded.detector.detect(bench.splits["test"].pixels[:2], bench.splits["test"].texts[:2])
    assert len(verdicts) == 2
