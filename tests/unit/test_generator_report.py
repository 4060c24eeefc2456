"""The generator report's pieces on a tiny untrained generator: same seeds for every model,
rows the report writer accepts, the DECOR sweep's prompts and settings, plots and sheets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from concord.checkpoints import build_generator
from concord.models.diffusion.config import load_preset
from concord.models.diffusion.pipeline import TextToImage
from concord.models.diffusion.unet import UNet
from pipelines.evaluate.report import check_rows, write_report
from pipelines.generator import decor_eval, gcdp_eval
from pipelines.generator.data import DataConfig
from pipelines.generator.evaluate import parse_prompt
from pipelines.generator.judges import JudgeNet, read
from pipelines.generator.report import decor_rows, decor_sheet, gcdp_rows, gcdp_sheet, pareto_plot

DATA = DataConfig(size=16, count=10)


@pytest.fixture(scope="module")
def pipes():
    torch.set_num_threads(1)
    cfg = load_preset("tiny").replace(
        image_size=16, base_channels=8, channel_mult=(1, 2), attn_resolutions=(4,), patch=2
    )
    gcdp = build_generator(cfg, seed=0)
    image_cfg = cfg.replace(layout=False)  # the same U-Net without the layout input and head
    image = TextToImage(UNet(image_cfg), gcdp.text_backbone, gcdp.hf_tokenizer, image_cfg)
    return {"gcdp": gcdp, "image-only": image}


def test_held_out_prompts_name_objects_of_the_domain_and_make_the_rare_class_common():
    ps = gcdp_eval.held_out_prompts(DATA, 60)
    assert len(ps.prompts) == len(ps.renders) == 60 and ps.renders.shape[1:] == (16, 16, 3)
    named = [o for p in ps.prompts for o in parse_prompt(p)]
    assert all(o.shape in DATA.shapes and o.colour in DATA.colours for o in named)
    assert sum(o.shape == DATA.rare_shape for o in named) / len(named) > 0.1  # 3% in training
    assert gcdp_eval.held_out_prompts(DATA, 5).prompts == ps.prompts[:5]


def test_both_models_get_the_same_seeds_and_the_rows_pass_the_writer(pipes, tmp_path):
    judge = JudgeNet(8)
    ps = gcdp_eval.held_out_prompts(DATA, 3)
    ref = read(judge, gcdp_eval.held_out_prompts(DATA, 20, seed=5).renders).features
    evals = {
        m: gcdp_eval.evaluate_model(m, p, judge, ps, ref, seeds=2, steps=2, guidance=2.0)
        for m, p in pipes.items()
    }
    for ev in evals.values():
        assert [s.seed for s in ev.samples] == [1000 * s + p for p in range(3) for s in range(2)]
        assert ev.prompts == [p for p in ps.prompts for _ in range(2)]
    assert evals["gcdp"].layout_miou is not None and evals["image-only"].layout_miou is None
    assert evals["gcdp"].samples[0].layout.shape == (16, 16)
    rows = check_rows(gcdp_rows(list(evals.values()), "cross", DATA.shapes))
    assert {r.baseline for r in rows if r.method == "gcdp"} <= {"image-only", None}
    files = write_report("gen", rows, tmp_path)
    assert "semantic recall" in files.markdown.read_text()
    assert gcdp_sheet(evals, ps, 2, tmp_path / "sheet.png").stat().st_size > 0


def test_decor_prompts_never_ask_for_the_unwanted_object_or_the_concept():
    task = decor_eval.ConceptTask()
    prompts = decor_eval.test_prompts(task, DATA)
    assert prompts
    for text, (colour, shape) in prompts:
        assert task.token in text
        assert task.unwanted[0] not in text and task.unwanted[1] not in text
        assert (colour, shape) != task.concept
        assert parse_prompt(text) == parse_prompt(f"a {colour} {shape}")
    # the references all show the unwanted object, the training prompt never names it
    assert task.token in decor_eval.train_prompt(task)
    assert task.unwanted[0] not in decor_eval.train_prompt(task)
    refs = decor_eval.reference_images(task, DATA)
    assert refs.shape == (task.references, 16, 16, 3) and len({r.tobytes() for r in refs}) == 4


def test_decor_sweep_rows_plot_and_sheet(pipes, tmp_path):
    task = decor_eval.ConceptTask()
    refs = decor_eval.reference_images(task, DATA)
    concept = decor_eval.learn_concept(pipes["gcdp"], task, refs, steps=2, lr=1e-3)
    sweep = decor_eval.settings(alphas=(0.5, 1.0), directions=(1,), scales=(0.5,))
    assert [s.method for s in sweep] == [
        "base (no concept)",
        "lora",
        "lora scale 0.5",
        "decor(a=0.50,k=1)",
        "decor(a=1.00,k=1)",
    ]
    prompts = decor_eval.test_prompts(task, DATA)[:2]
    results = decor_eval.evaluate_settings(
        pipes["gcdp"], JudgeNet(8), concept, task, prompts, sweep, seeds=1, steps=2, guidance=2.0
    )
    assert all(0.0 <= r.leakage <= 1.0 and len(r.samples) == 2 for r in results)
    # alpha 0 with the concept at scale 1 is LoRA alone: same seeds, same pictures.
    again = decor_eval.evaluate_settings(
        pipes["gcdp"],
        JudgeNet(8),
        concept,
        task,
        prompts,
        [sweep[1]],
        seeds=1,
        steps=2,
        guidance=2.0,
    )
    assert np.array_equal(again[0].samples[0].image, results[1].samples[0].image)
    rows = check_rows(decor_rows(results, task.token))
    assert len(rows) == 3 * len(sweep)
    assert pareto_plot(results, tmp_path / "p.png").stat().st_size > 0
    assert decor_sheet(results, refs, "x", 1, tmp_path / "d.png", n=2).stat().st_size > 0
