"""DECOR vs LoRA alone (method card 1's small reproduction, adapted to the generator's domain).

A concept token is learned by `finetune_concept` from 4 references that all show the concept (a
fixed colour + shape) beside the same unwanted content (a red circle). The training prompt names
only the token ("a zorv"), as in DECOR's setting: what the references share but the prompt does
not name is what the token absorbs and leaks. (Naming the red circle in the prompt, our first
protocol, bound it to those words instead: LoRA alone never leaked, so DECOR had nothing to do.)
Test prompts ask for the concept beside other objects and never for the red circle; the judge
measures text alignment (the prompted other object present), leakage (a red circle present) and
fidelity (the concept present), for DECOR's alpha x directions sweep, LoRA alone (alpha 0),
lower LoRA scales, and the model before customization.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np
import torch

from concord.models.diffusion.pipeline import ConceptWeights, Sample, TextToImage, finetune_concept
from pipelines.data.render import render
from pipelines.generator.data import DataConfig, simple_scene
from pipelines.generator.gcdp_eval import generate_all
from pipelines.generator.judges import JudgeNet, detections, present, read


@dataclass(frozen=True)
class ConceptTask:
    token: str = "zorv"
    concept: tuple[str, str] = ("purple", "triangle")  # (colour, shape) the token stands for
    unwanted: tuple[str, str] = ("red", "circle")  # in every reference, never wanted after
    references: int = 4


@dataclass(frozen=True)
class Setting:
    method: str  # row name, e.g. "decor(a=0.50,k=1)"
    concept: bool = True  # apply the learned LoRA
    alpha: float = 0.0
    directions: int = 1
    lora_scale: float = 1.0


def settings(alphas: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0), directions: tuple[int, ...] = (1, 2),
             scales: tuple[float, ...] = (0.5, 0.25)) -> list[Setting]:
    """The sweep: base model, LoRA alone, lower LoRA scales, DECOR alpha x directions."""
    out = [Setting("base (no concept)", concept=False), Setting("lora")]
    out += [Setting(f"lora scale {s:g}", lora_scale=s) for s in scales]
    out += [Setting(f"decor(a={a:.2f},k={k})", alpha=a, directions=k)
            for k, a in itertools.product(directions, alphas)]
    return out


def reference_images(task: ConceptTask, data: DataConfig, seed: int = 31) -> np.ndarray:
    """(N,S,S,3) uint8 renders, each of the concept beside the unwanted object."""
    rng = np.random.default_rng([seed, 99])
    cfg = replace(data, rare_shape=None)
    return np.stack([render(simple_scene(rng, cfg, [task.concept, task.unwanted]), cfg.size).image
                     for _ in range(task.references)])


def train_prompt(task: ConceptTask) -> str:
    return f"a {task.token}"


def test_prompts(task: ConceptTask, data: DataConfig) -> list[tuple[str, tuple[str, str]]]:
    """(prompt, the other object it asks for): every colour x shape of the domain except the
    unwanted and the concept combos, and except the unwanted colour or shape (so that a red or
    circular object the judge sees is leakage, not the prompt)."""
    out = []
    for colour in data.colours:
        for shape in data.shapes:
            if colour in (task.unwanted[0],) or shape == task.unwanted[1]:
                continue
            if (colour, shape) == task.concept:
                continue
            out.append((f"a {task.token} and a {colour} {shape}", (colour, shape)))
    return out


def learn_concept(pipe: TextToImage, task: ConceptTask, refs: np.ndarray, *, steps: int,
                  lr: float, seed: int = 0) -> ConceptWeights:
    x = torch.from_numpy(refs).permute(0, 3, 1, 2).float() / 255.0
    return finetune_concept(pipe, x, train_prompt(task), name=task.token, class_word="shape",
                            steps=steps, lr=lr, seed=seed)


@dataclass(frozen=True)
class SettingResult:
    setting: Setting
    alignment: float  # P(prompted other object present)
    leakage: float  # P(unwanted object present)
    fidelity: float  # P(concept present)
    samples: list[Sample]
    prompts: list[str]


def evaluate_settings(pipe: TextToImage, judge: JudgeNet, concept: ConceptWeights,
                      task: ConceptTask, prompts: list[tuple[str, tuple[str, str]]],
                      sweep: list[Setting], *, seeds: int, steps: int,
                      guidance: float) -> list[SettingResult]:
    """Generate every prompt x seed under every setting (same seeds) and read with the judge."""
    texts = [p for p, _ in prompts]
    wanted = {p: o for p, o in prompts}
    unwanted = [" ".join(task.unwanted)]
    out = []
    for st in sweep:
        kw: dict[str, object] = {}
        if st.concept:
            kw = {"concept": concept, "lora_scale": st.lora_scale}
        if st.alpha > 0:
            kw |= {"unwanted": unwanted, "alpha": st.alpha, "directions": st.directions}
        samples, per = generate_all(pipe, texts, seeds, steps=steps, guidance=guidance, **kw)
        reading = read(judge, np.stack([s.image for s in samples]))
        dets = [detections(reading, i) for i in range(len(samples))]
        align = np.mean([present(d, *wanted[p]) for d, p in zip(dets, per, strict=True)])
        leak = np.mean([present(d, *task.unwanted) for d in dets])
        fid = np.mean([present(d, *task.concept) for d in dets])
        out.append(SettingResult(st, float(align), float(leak), float(fid), samples, per))
    return out
