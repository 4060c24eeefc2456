"""Public CLIPs through Concord's one loader (`concord.checkpoints.load_model`), on a tiny random
CLIP saved the way `save_pretrained` saves it (no download): transformers directories and
open_clip checkpoints of the same weights give CLIPModel's own features; the encoder gRPC
service, the registry, the scorer and the Triton export take them like Concord's own encoder;
a directory of no known kind is refused naming what each kind lacks."""

from __future__ import annotations

import importlib.util
import io
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from concord.checkpoints import LoadedModel, load_model, weights_digest
from concord.clients import Concord, Connection
from concord.config import Settings
from concord.errors import FailedPrecondition
from concord.models.clip import ClipAdapter
from concord.models.open_clip_convert import from_transformers_state_dict
from concord.models.preprocess import images_to_tensor
from concord.proto.v1 import encoder_pb2, encoder_pb2_grpc
from concord.registry import Registry
from tests.fixtures.models import write_clip_tokenizer
from tests.fixtures.serving import InProcessDeployment, encoder_settings

MEAN = (0.5, 0.45, 0.4)  # not OpenAI's: proves the directory's own normalisation is used
STD = (0.25, 0.3, 0.35)
TEXTS = ["a red circle", "red", "circle red a red"]
EMBED_DIM, IMAGE_SIZE, CONTEXT = 16, 32, 16
VOCAB_SIZE = 58  # 26 letters, 26 word ends, 4 merges, 2 specials (write_tokenizer)


def no_registry() -> Registry:
    raise AssertionError("a local directory must not touch the registry")


def write_tokenizer(directory: Path) -> CLIPTokenizer:
    """A byte-level BPE CLIP tokenizer over a tiny vocabulary (<|endoftext|> is the last id,
    as in every CLIP vocabulary)."""
    tokenizer, _ = write_clip_tokenizer(directory)
    tokenizer.save_pretrained(str(directory))
    assert len(tokenizer) == VOCAB_SIZE
    return tokenizer


def write_clip(directory: Path, hidden_act: str = "quick_gelu") -> CLIPModel:
    """A tiny random transformers CLIP: model, tokenizer and preprocessor config, saved."""
    tokenizer = write_tokenizer(directory)
    config = CLIPConfig(
        text_config={
            "vocab_size": VOCAB_SIZE,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": CONTEXT,
            "hidden_act": hidden_act,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
            "hidden_act": hidden_act,
        },
        projection_dim=EMBED_DIM,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIPModel(config).eval()
    model.save_pretrained(str(directory))
    (directory / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": list(MEAN), "image_std": list(STD), "crop_size": IMAGE_SIZE})
    )
    return model


def open_clip_config(quick_gelu: bool = True, **vision: object) -> dict[str, object]:
    """open_clip_config.json as open_clip's hub export writes it, for `write_clip`'s network."""
    return {
        "model_cfg": {
            "embed_dim": EMBED_DIM,
            "quick_gelu": quick_gelu,
            "vision_cfg": {
                "image_size": IMAGE_SIZE,
                "layers": 2,
                "width": 32,
                "head_width": 16,
                "mlp_ratio": 2.0,
                "patch_size": 8,
                **vision,
            },
            "text_cfg": {
                "context_length": CONTEXT,
                "vocab_size": VOCAB_SIZE,
                "width": 32,
                "heads": 2,
                "layers": 2,
                "mlp_ratio": 2.0,
            },
        },
        "preprocess_cfg": {"mean": list(MEAN), "std": list(STD)},
    }


def write_open_clip(directory: Path, reference: CLIPModel, training_file: bool = False) -> Path:
    """The reference's weights as an open_clip checkpoint directory (hub layout, or a training
    checkpoint `epoch_1.pt` with DDP's `module.` prefixes)."""
    write_tokenizer(directory)
    state = from_transformers_state_dict(reference.state_dict())
    (directory / "open_clip_config.json").write_text(json.dumps(open_clip_config()))
    if training_file:
        wrapped = {
            "epoch": 1,
            "name": "tiny",
            "state_dict": {f"module.{k}": v for k, v in state.items()},
        }
        torch.save(wrapped, directory / "epoch_1.pt")
    else:
        save_file(state, str(directory / "open_clip_model.safetensors"))
    return directory


def reference_features(
    model: CLIPModel, pixels: torch.Tensor, texts: list[str], loaded: LoadedModel
):  # type: ignore[no-untyped-def]
    batch = loaded.tokenizer(texts)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        image = model.get_image_features(pixel_values=(pixels - mean) / std).pooler_output
        text = model.get_text_features(batch.input_ids, batch.attention_mask).pooler_output
    return F.normalize(image, dim=-1), F.normalize(text, dim=-1), batch


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CLIPModel]:
    directory = tmp_path_factory.mktemp("public") / "tiny-clip"
    return directory, write_clip(directory)


def assert_same_features(loaded: LoadedModel, reference: CLIPModel) -> None:
    pixels = torch.rand(3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(1))
    want_image, want_text, batch = reference_features(reference, pixels, TEXTS, loaded)
    model = loaded.torch_model()
    with torch.inference_mode():
        image = model.encode_image(pixels)
        text = model.encode_text(batch.input_ids, batch.attention_mask)
    assert torch.allclose(image.pooled, want_image, atol=1e-5)
    assert torch.allclose(text.pooled, want_text, atol=1e-5)
    assert image.tokens.shape == (3, (IMAGE_SIZE // 8) ** 2, EMBED_DIM)
    assert text.tokens.shape == (3, batch.input_ids.shape[1], EMBED_DIM)


# ------------------------------------------------------------------ transformers directories


def test_clip_directory_loads_through_load_model(clip_dir: tuple[Path, CLIPModel]) -> None:
    directory, reference = clip_dir
    loaded = load_model(str(directory), no_registry)
    assert isinstance(loaded.model, ClipAdapter) and not loaded.model.training
    assert (loaded.kind, loaded.image_size, loaded.embed_dim) == ("clip", IMAGE_SIZE, EMBED_DIM)
    assert loaded.config is None  # a public CLIP has no EncoderConfig
    digest = weights_digest([directory / "model.safetensors"])
    assert loaded.id.name == "tiny-clip" and loaded.id.version == f"local-{digest}"
    assert loaded.tokenizer.max_length == CONTEXT
    assert loaded.tokenizer(["a red circle"]).tokens[0] == [
        "<|startoftext|>",
        "a</w>",
        "red</w>",
        "cir",
        "c",
        "l",
        "e</w>",
        "<|endoftext|>",
    ]
    assert_same_features(loaded, reference)


def test_clip_directory_without_weights_loads_config_and_tokenizer(
    clip_dir: tuple[Path, CLIPModel],
) -> None:
    directory, _ = clip_dir
    remote = load_model(str(directory), no_registry, weights=False)
    local = load_model(str(directory), no_registry)
    assert remote.model is None and remote.id == local.id
    assert (remote.image_size, remote.embed_dim, remote.kind) == (IMAGE_SIZE, EMBED_DIM, "clip")
    assert torch.equal(remote.tokenizer(TEXTS).input_ids, local.tokenizer(TEXTS).input_ids)
    with pytest.raises(FailedPrecondition, match="without weights"):
        remote.torch_model()


def test_gelu_clip_keeps_its_activation(tmp_path: Path) -> None:
    reference = write_clip(tmp_path / "gelu-clip", hidden_act="gelu")
    assert_same_features(load_model(str(tmp_path / "gelu-clip"), no_registry), reference)


# ------------------------------------------------------------------ open_clip checkpoints


@pytest.mark.parametrize("training_file", [False, True], ids=["hub-layout", "training-pt"])
def test_open_clip_checkpoint_equals_the_same_weights_in_transformers(
    clip_dir: tuple[Path, CLIPModel], tmp_path: Path, training_file: bool
) -> None:
    _, reference = clip_dir
    directory = write_open_clip(tmp_path / "tiny-open-clip", reference, training_file)
    loaded = load_model(str(directory), no_registry)
    assert (loaded.kind, loaded.image_size, loaded.embed_dim) == (
        "open_clip",
        IMAGE_SIZE,
        EMBED_DIM,
    )
    weights = "epoch_1.pt" if training_file else "open_clip_model.safetensors"
    assert loaded.id.version == f"local-{weights_digest([directory / weights])}"
    assert_same_features(loaded, reference)
    remote = load_model(str(directory), no_registry, weights=False)
    assert remote.model is None and remote.id == loaded.id and remote.embed_dim == EMBED_DIM


@pytest.mark.parametrize("hidden_act", ["quick_gelu", "gelu"])
def test_open_clip_checkpoint_equals_open_clip_itself(tmp_path: Path, hidden_act: str) -> None:
    """Cross-implementation check: open_clip's own loader (`local-dir:`) reads the same
    directory, and its embeddings equal ours."""
    import open_clip  # type: ignore[import-untyped]

    reference = write_clip(tmp_path / "hf", hidden_act=hidden_act)
    directory = write_open_clip(tmp_path / "tiny-open-clip", reference)
    config = open_clip_config(quick_gelu=hidden_act == "quick_gelu")
    (directory / "open_clip_config.json").write_text(json.dumps(config))
    theirs = open_clip.create_model(f"local-dir:{directory}").eval()
    loaded = load_model(str(directory), no_registry)
    pixels = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(2))
    batch = loaded.tokenizer(TEXTS)
    ids = torch.zeros(len(TEXTS), CONTEXT, dtype=torch.long)  # open_clip pads with 0
    ids[:, : batch.input_ids.shape[1]] = batch.input_ids * batch.attention_mask
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        want_image = F.normalize(theirs.encode_image((pixels - mean) / std), dim=-1)
        want_text = F.normalize(theirs.encode_text(ids), dim=-1)
        ours = loaded.torch_model()
        image = ours.encode_image(pixels).pooled
        text = ours.encode_text(batch.input_ids, batch.attention_mask).pooled
        assert torch.allclose(ours.logit_scale, theirs.logit_scale.exp())
    assert torch.allclose(image, want_image, atol=1e-5)
    assert torch.allclose(text, want_text, atol=1e-5)


def test_unsupported_open_clip_architecture_is_refused(
    clip_dir: tuple[Path, CLIPModel], tmp_path: Path
) -> None:
    _, reference = clip_dir
    directory = write_open_clip(tmp_path / "attn-pool", reference)
    config = open_clip_config(attentional_pool=True)
    (directory / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(FailedPrecondition, match="attentional_pool"):
        load_model(str(directory), no_registry)
    (directory / "open_clip_config.json").write_text(json.dumps(open_clip_config(layers=[3, 4])))
    with pytest.raises(FailedPrecondition, match="only ViT"):
        load_model(str(directory), no_registry)


# ------------------------------------------------------------------ refusals


def test_a_directory_of_no_kind_names_what_each_kind_lacks(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "weights.safetensors").write_bytes(b"x")
    with pytest.raises(FailedPrecondition) as err:
        load_model(str(tmp_path / "junk"), no_registry)
    message = err.value.message
    assert "'" + str(tmp_path / "junk") + "'" in message
    for expected in (
        "as Concord's save_encoder directory it lacks config.json, model.safetensors, "
        "tokenizer/, backbone_config.json",
        'as a transformers CLIP save_pretrained directory it lacks config.json with model_type "clip"',
        "tokenizer.json or vocab.json + merges.txt",
        "as an open_clip checkpoint directory it lacks open_clip_config.json",
    ):
        assert expected in message


def test_a_clip_without_tokenizer_names_the_tokenizer(
    clip_dir: tuple[Path, CLIPModel], tmp_path: Path
) -> None:
    directory = tmp_path / "no-tokenizer"
    directory.mkdir()
    source, _ = clip_dir
    for name in ("config.json", "model.safetensors"):
        (directory / name).write_bytes((source / name).read_bytes())
    with pytest.raises(FailedPrecondition) as err:
        load_model(str(directory), no_registry)
    assert (
        "CLIP save_pretrained directory it lacks tokenizer.json or vocab.json" in err.value.message
    )
    assert "open_clip" not in err.value.message and "save_encoder" not in err.value.message


def test_another_transformers_model_is_refused_by_type(tmp_path: Path) -> None:
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(FailedPrecondition, match="'bert' model"):
        load_model(str(tmp_path / "bert"), no_registry)


# ------------------------------------------------------------------ the registry


def test_a_registered_clip_directory_resolves_to_the_same_model(
    clip_dir: tuple[Path, CLIPModel], tmp_path: Path
) -> None:
    directory, reference = clip_dir
    registry = Registry.from_settings(Settings(home=tmp_path / "home"))  # MLflow on sqlite
    with registry.start_run("register-public-clip") as run:
        artifact_path = run.log_model_dir(directory)
    version = registry.register_model("public-clip", run.run_id, artifact_path)
    registry.set_alias("public-clip", "production", version.version)
    loaded = load_model("models:/public-clip@production", lambda: registry)
    assert loaded.kind == "clip" and loaded.embed_dim == EMBED_DIM
    assert (loaded.id.name, loaded.id.version) == ("public-clip", str(version.version))
    assert_same_features(loaded, reference)


# ------------------------------------------------------------------ services and export


def png(colour: tuple[int, int, int], size: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served_clip(
    clip_dir: tuple[Path, CLIPModel], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    settings = encoder_settings(tmp_path_factory.mktemp("clip-service"), str(clip_dir[0]))
    server = InProcessDeployment(["encoder"], settings)
    yield settings
    server.close()


def test_encoder_service_serves_a_clip_directory(
    served_clip: Settings, clip_dir: tuple[Path, CLIPModel]
) -> None:
    directory, _ = clip_dir
    local = load_model(str(directory), no_registry)
    with Concord(served_clip) as sdk:
        texts = sdk.encode_texts(TEXTS, include_tokens=True)
        images = sdk.encode_images([png((200, 30, 30)), png((30, 30, 200))], include_tokens=True)
    assert texts.dim == EMBED_DIM and texts.matrix.shape == (3, EMBED_DIM)
    assert images.dim == EMBED_DIM and images.matrix.shape == (2, EMBED_DIM)
    assert texts.model.name == "tiny-clip" and texts.model.version == local.id.version
    assert images.model == texts.model
    batch = local.tokenizer(TEXTS)
    pixels = images_to_tensor(
        [Image.open(io.BytesIO(png(c))) for c in ((200, 30, 30), (30, 30, 200))], IMAGE_SIZE
    )
    with torch.inference_mode():
        want_text = local.torch_model().encode_text(batch.input_ids, batch.attention_mask)
        want_image = local.torch_model().encode_image(pixels)
    np.testing.assert_allclose(texts.matrix, want_text.pooled.numpy(), atol=1e-5)
    np.testing.assert_allclose(images.matrix, want_image.pooled.numpy(), atol=1e-5)
    first = texts.embeddings[0].tokens
    assert first is not None and first.tokens[:2] == ("<|startoftext|>", "a</w>")
    assert first.vectors.shape == (8, EMBED_DIM)
    patches = images.embeddings[0].tokens
    assert patches is not None and patches.vectors.shape == ((IMAGE_SIZE // 8) ** 2, EMBED_DIM)


def test_encoder_service_on_a_directory_of_no_kind_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "empty-model").mkdir()
    settings = encoder_settings(tmp_path, str(tmp_path / "empty-model"))
    server = InProcessDeployment(["encoder"], settings)
    try:
        with Connection(f"127.0.0.1:{settings.serving.port_for('encoder')}") as conn:
            stub = encoder_pb2_grpc.EncoderServiceStub(conn.channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.EncodeTexts(encoder_pb2.EncodeTextsRequest(texts=["a red circle"]), timeout=30)
    finally:
        server.close()
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = err.value.details() or ""
    assert (
        "save_encoder" in details and "model_type" in details and "open_clip_config.json" in details
    )


def test_scorer_package_can_score_with_a_clip(
    clip_dir: tuple[Path, CLIPModel], tmp_path: Path
) -> None:
    from services.scorer.loading import load_scorer

    package = tmp_path / "clip-scorer"
    package.mkdir()
    calibration = {
        "form": "logistic",
        "features": ["clip_score"],
        "mean": [0.5],
        "scale": [0.5],
        "coef": [1.0],
        "intercept": 0.0,
    }
    scorer_json = {"encoder": str(clip_dir[0]), "layers": 2, "calibration": calibration}
    (package / "scorer.json").write_text(json.dumps(scorer_json))
    loaded = load_scorer(str(package), no_registry)
    assert loaded.image_size == IMAGE_SIZE and loaded.encoder.kind == "clip"
    pixels = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    scores = loaded.scorer.score(pixels, ["a red circle", "red"])
    assert len(scores) == 2 and all(np.isfinite(s.clip_score) for s in scores)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime")
def test_triton_export_of_a_clip_matches_the_torch_model(
    clip_dir: tuple[Path, CLIPModel], tmp_path: Path
) -> None:
    import onnxruntime as ort

    from concord.runtimes.triton import export_triton_from

    directory, _ = clip_dir
    exported = export_triton_from(str(directory), tmp_path / "repo", name="tiny-clip")
    assert [m.name for m in exported] == ["tiny-clip-image", "tiny-clip-text"]
    assert f"dims: [ {EMBED_DIM} ]" in exported[0].config_file.read_text()
    local = load_model(str(directory), no_registry)
    images = np.random.default_rng(0).integers(0, 256, (3, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    batch = local.tokenizer([*TEXTS, "a"])
    image_session = ort.InferenceSession(str(exported[0].model_file))
    text_session = ort.InferenceSession(str(exported[1].model_file))
    got_image = image_session.run(None, {"IMAGE": images})
    got_text = text_session.run(
        None,
        {"INPUT_IDS": batch.input_ids.numpy(), "ATTENTION_MASK": batch.attention_mask.numpy()},
    )
    with torch.inference_mode():
        model = local.torch_model()
        want_image = model.encode_image(torch.from_numpy(images).permute(0, 3, 1, 2) / 255.0)
        want_text = model.encode_text(batch.input_ids, batch.attention_mask)
    np.testing.assert_allclose(got_image[0], want_image.pooled.numpy(), atol=1e-4)
    np.testing.assert_allclose(got_text[0], want_text.pooled.numpy(), atol=1e-4)
    np.testing.assert_allclose(got_text[1], want_text.tokens.numpy(), atol=1e-4)
