"""Generator model invariants on a random miniature model (a 1-layer BERT of width 32 with the
real MiniLM tokenizer): schedules, samplers, categorical diffusion, LoRA, DECOR projection, and
generate()'s seeding, batch independence and cancellation."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from concord.checkpoints import minilm_path
from concord.models.diffusion import (
    ConceptWeights,
    GenerationCancelled,
    GeneratorConfig,
    TextToImage,
    finetune_concept,
    load_preset,
)
from concord.models.diffusion.categorical import CategoricalDiffusion
from concord.models.diffusion.ddim import DDIMSampler
from concord.models.diffusion.ddpm import DDPMSampler
from concord.models.diffusion.decor import project_away, unwanted_directions
from concord.models.diffusion.lora import (
    inject_lora,
    load_lora_state,
    lora_state,
    remove_lora,
    set_lora_scale,
)
from concord.models.diffusion.sampling import timesteps
from concord.models.diffusion.schedule import NoiseSchedule
from concord.models.diffusion.unet import CrossAttention, UNet


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The machine is shared: one intra-op thread is faster than two oversubscribed ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


MINI = GeneratorConfig(
    name="mini",
    image_size=16,
    patch=2,
    base_channels=16,
    channel_mult=(1, 2),
    attn_resolutions=(4,),
    heads=2,
    train_timesteps=50,
    text_dim=32,
    max_text_tokens=8,
    class_names=("background", "circle", "square"),
)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(minilm_path())


def make_pipe(tokenizer, config: GeneratorConfig = MINI, seed: int = 0) -> TextToImage:
    torch.manual_seed(seed)
    bert = BertModel(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=config.text_dim,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        ),
        add_pooling_layer=False,
    )
    unet = UNet(config)
    with torch.no_grad():  # zero-initialised output convs would make every image identical
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return TextToImage(unet, bert, tokenizer, config)


@pytest.fixture(scope="module")
def pipe(tokenizer) -> TextToImage:
    return make_pipe(tokenizer)


# -- schedule and samplers


def test_presets_load_and_round_trip() -> None:
    for name in ("tiny", "small"):
        cfg = load_preset(name)
        assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        load_preset("huge")


def test_cosine_alpha_bar_decreases_from_one_to_zero() -> None:
    ab = NoiseSchedule("cosine", 1000).alpha_bar
    assert ab[0] > 0.999 and ab[-1] < 1e-3
    assert bool((ab[1:] < ab[:-1]).all())


def test_q_sample_has_the_forward_marginal_statistics() -> None:
    sch = NoiseSchedule("cosine", 100)
    t = torch.full((40000,), 30)
    x0 = torch.full((40000, 1), 0.7)
    xt = sch.q_sample(x0, t, torch.randn(40000, 1, generator=torch.Generator().manual_seed(0)))
    ab = float(sch.alpha_bar[30])
    assert float(xt.mean()) == pytest.approx(math.sqrt(ab) * 0.7, abs=0.02)
    assert float(xt.var()) == pytest.approx(1 - ab, abs=0.02)
    eps = torch.randn(4, 3, 2, 2)
    x0b = torch.randn(4, 3, 2, 2)
    tt = torch.tensor([0, 10, 50, 99])
    xtb = sch.q_sample(x0b, tt, eps)
    torch.testing.assert_close(sch.predict_x0(xtb, tt, eps), x0b, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(sch.predict_eps(xtb, tt, x0b), eps, atol=1e-3, rtol=1e-3)
    v = sch.v_target(x0b, tt, eps)
    torch.testing.assert_close(sch.eps_from_v(xtb, tt, v), eps, atol=1e-4, rtol=1e-4)


def test_timesteps_descend_to_the_clean_image() -> None:
    pairs = timesteps(1000, 25)
    assert len(pairs) == 25 and pairs[0][0] == 999 and pairs[-1] == (0, -1)
    assert all(s < t for t, s in pairs)
    with pytest.raises(ValueError):
        timesteps(10, 11)


def test_ddim_eta0_is_deterministic_and_ddpm_is_not() -> None:
    sch = NoiseSchedule("cosine", 100)
    x, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4) * 0.1

    def gens(seed: int) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(seed + i) for i in range(2)]

    a, _ = DDIMSampler(0.0).step(sch, x, 60, 40, eps, gens(0))
    b, _ = DDIMSampler(0.0).step(sch, x, 60, 40, eps, gens(7))
    torch.testing.assert_close(a, b)
    c, _ = DDPMSampler().step(sch, x, 60, 40, eps, gens(0))
    d, _ = DDPMSampler().step(sch, x, 60, 40, eps, gens(7))
    assert not torch.allclose(c, d)
    final, x0 = DDIMSampler(0.0).step(sch, x, 0, -1, eps, gens(0))
    torch.testing.assert_close(final, x0)
    assert float(final.abs().max()) <= 1.0


# -- categorical (layout) diffusion


def test_categorical_posterior_is_a_distribution_and_kl_vanishes_at_the_truth() -> None:
    cat = CategoricalDiffusion(5, "cosine", 100)
    g = torch.Generator().manual_seed(0)
    y0 = torch.randint(0, 5, (3, 6, 6), generator=g)
    t = torch.tensor([1, 40, 99])
    y_t = cat.q_sample(y0, t, g)
    logits = torch.randn(3, 5, 6, 6, generator=g)
    post = cat.log_posterior(torch.log_softmax(logits, 1), y_t, t)
    torch.testing.assert_close(post.exp().sum(1), torch.ones(3, 6, 6))
    perfect = torch.nn.functional.one_hot(y0, 5).permute(0, 3, 1, 2).float() * 60.0
    assert float(cat.loss(y0, y_t, t, perfect).abs().max()) < 1e-4
    assert bool((cat.loss(y0, y_t, t, logits) > 1e-4).any())
    # at t = 0 the loss is the decoder NLL of y0
    t0 = torch.zeros(3, dtype=torch.long)
    nll = cat.loss(y0, y0, t0, logits)
    expected = torch.nn.functional.cross_entropy(logits, y0, reduction="none").mean((1, 2))
    torch.testing.assert_close(nll, expected / math.log(2))


def test_categorical_forward_process_ends_uniform() -> None:
    cat = CategoricalDiffusion(4, "cosine", 100)
    y0 = torch.zeros(1, 100, 100, dtype=torch.long)
    y_end = cat.q_sample(y0, torch.tensor([99]), torch.Generator().manual_seed(1))
    freq = torch.bincount(y_end.flatten(), minlength=4).float() / y_end.numel()
    assert float((freq - 0.25).abs().max()) < 0.02
    assert float(cat.prior_kl(y0).max()) < 1e-3


# -- LoRA and DECOR


def test_lora_zero_init_merge_scale_and_state_round_trip(pipe: TextToImage) -> None:
    unet = UNet(MINI)
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([10])
    text, mask = torch.randn(1, 8, 32), torch.ones(1, 8, dtype=torch.bool)
    y = torch.zeros(1, 16, 16, dtype=torch.long)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        base = unet(x, t, text, mask, y)[0]
        params = inject_lora(unet, rank=2)
        n_cross = sum(isinstance(m, CrossAttention) for m in unet.modules())
        assert n_cross == 4 and len(params) == n_cross * 2 * 2  # x (K, V) x (A, B)
        torch.testing.assert_close(unet(x, t, text, mask, y)[0], base)
        for p in params:
            p.add_(torch.randn_like(p) * 0.5)
        tuned = unet(x, t, text, mask, y)[0]
        assert not torch.allclose(tuned, base)
        set_lora_scale(unet, 0.0)
        torch.testing.assert_close(unet(x, t, text, mask, y)[0], base)
        set_lora_scale(unet, 1.0)
        state = lora_state(unet)
        remove_lora(unet, merge=True)
        torch.testing.assert_close(unet(x, t, text, mask, y)[0], tuned, atol=1e-5, rtol=1e-4)
    fresh = UNet(MINI)
    fresh.load_state_dict({k: v for k, v in unet.state_dict().items()})
    with torch.no_grad():
        load_lora_state(fresh, state)
        assert lora_state(fresh).keys() == state.keys()
        with pytest.raises(ValueError, match="does not fit"):
            load_lora_state(UNet(MINI.replace(attn_resolutions=())), state)


def test_project_away_identity_at_zero_and_orthogonal_at_one() -> None:
    g = torch.Generator().manual_seed(0)
    x, unwanted = torch.randn(2, 7, 16, generator=g), torch.randn(3, 16, generator=g)
    assert torch.equal(project_away(x, unwanted, 0.0, 2), x)
    v = unwanted_directions(unwanted, 2).float()
    assert v.shape == (16, 2)
    out = project_away(x, unwanted, 1.0, 2)
    assert float((out @ v).abs().max()) < 1e-5
    half = project_away(x, unwanted, 0.5, 2)
    torch.testing.assert_close(half @ v, 0.5 * (x @ v), atol=1e-5, rtol=1e-5)
    assert unwanted_directions(unwanted, 10).shape == (16, 3)  # capped at the rank
    with pytest.raises(ValueError):
        project_away(x, unwanted, 1.5, 1)


# -- generation


def test_generate_is_reproducible_from_the_seed_and_independent_of_batch_mates(
    pipe: TextToImage,
) -> None:
    prompts = ["a red circle above a blue square", "a green square"]
    a = pipe.generate(prompts, seed=5, steps=4, guidance_scale=2.0)
    b = pipe.generate(prompts, seed=5, steps=4, guidance_scale=2.0)
    alone = pipe.generate(["a green square"], seed=6, steps=4, guidance_scale=2.0)
    assert [s.seed for s in a] == [5, 6] and alone[0].seed == 6
    for s, t in zip(a, b, strict=True):
        assert (s.image == t.image).all() and (s.layout == t.layout).all()
    assert a[0].image.shape == (16, 16, 3) and a[0].image.dtype.name == "uint8"
    assert a[0].layout.shape == (16, 16) and int(a[0].layout.max()) < 3
    diff = abs(a[1].image.astype(int) - alone[0].image.astype(int)).max()
    assert diff <= 1  # batched vs single matmuls may round one level apart
    assert (a[1].layout != alone[0].layout).mean() < 0.02
    other = pipe.generate(["a green square"], seed=7, steps=4, guidance_scale=2.0)
    assert not (other[0].image == alone[0].image).all()
    ddpm = pipe.generate(prompts, seed=5, steps=4, guidance_scale=2.0, sampler="ddpm")
    assert not (ddpm[0].image == a[0].image).all()


def test_on_step_reports_progress_and_cancels(pipe: TextToImage) -> None:
    seen: list[tuple[int, int, tuple[int, ...], float, float]] = []

    def watch(step: int, total: int, x0) -> bool:
        seen.append((step, total, tuple(x0.shape), float(x0.min()), float(x0.max())))
        return step < 2

    with pytest.raises(GenerationCancelled):
        pipe.generate(
            ["a red circle", "a blue square"], seed=0, steps=5, guidance_scale=1.0, on_step=watch
        )
    assert [s[:3] for s in seen] == [(1, 5, (2, 3, 16, 16)), (2, 5, (2, 3, 16, 16))]
    assert all(lo >= 0.0 and hi <= 1.0 for *_, lo, hi in seen)


def test_image_only_model_returns_no_layout(tokenizer) -> None:
    baseline = make_pipe(tokenizer, MINI.replace(layout=False, prediction="v"))
    out = baseline.generate(["a red circle"], seed=0, steps=2, guidance_scale=3.0)
    assert out[0].layout is None and out[0].image.shape == (16, 16, 3)
    gcdp = make_pipe(tokenizer)
    n_gcdp = sum(p.numel() for p in gcdp.unet.parameters())
    n_base = sum(p.numel() for p in baseline.unet.parameters())
    assert 0 < n_gcdp - n_base < 0.05 * n_base  # same U-Net; only the layout stem/head differ


def test_decor_projection_changes_only_when_asked(pipe: TextToImage) -> None:
    rows = pipe.unwanted_embeddings(["red circle", "square"])
    assert rows.shape == (3, 32)  # [CLS]/[SEP] dropped: red, circle, square
    base = pipe.generate(["a red circle"], seed=1, steps=3, guidance_scale=3.0)
    same = pipe.generate(
        ["a red circle"], seed=1, steps=3, guidance_scale=3.0, unwanted=["red circle"], alpha=0.0
    )
    moved = pipe.generate(
        ["a red circle"],
        seed=1,
        steps=3,
        guidance_scale=3.0,
        unwanted=["red circle"],
        alpha=1.0,
        directions=2,
    )
    assert (base[0].image == same[0].image).all()
    assert not (base[0].image == moved[0].image).all()


def test_finetune_concept_trains_lora_only_and_leaves_the_model_untouched(tokenizer) -> None:
    pipe = make_pipe(tokenizer, seed=3)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    base = pipe.generate(["a zorv shape"], seed=0, steps=3, guidance_scale=3.0)
    refs = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # resized to 16
    calls: list[int] = []
    concept = finetune_concept(
        pipe,
        refs,
        "a zorv shape",
        name="zorv",
        class_word="shape",
        steps=4,
        rank=2,
        lr=1e-2,
        on_step=lambda s, n: calls.append(s) or s < 3,
    )
    assert calls == [1, 2, 3] and isinstance(concept, ConceptWeights)
    assert concept.rank == 2 and concept.reference_count == 3
    assert any(float(v.abs().sum()) > 0 for k, v in concept.state.items() if ".up." in k)
    after = pipe.unet.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    tuned = pipe.generate(["a zorv shape"], seed=0, steps=3, guidance_scale=3.0, concept=concept)
    again = pipe.generate(["a zorv shape"], seed=0, steps=3, guidance_scale=3.0)
    assert not (tuned[0].image == base[0].image).all()
    assert (again[0].image == base[0].image).all()
    with pytest.raises(ValueError, match="concept name"):
        finetune_concept(pipe, refs, "a shape", name="zorv", class_word="shape", steps=1)
