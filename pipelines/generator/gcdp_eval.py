"""GCDP vs the image-only baseline: held-out prompts (every shape equally likely, so the rare
training class is well represented), one image per prompt per seed from each model with the same
seeds, read by the judge -> semantic recall (overall, rare class, per shape), layout mIoU of GCDP's
own layout against the judge's segmentation, and a Fréchet distance to ground-truth renders."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from concord.models.diffusion.pipeline import Sample, TextToImage
from pipelines.data.render import render
from pipelines.generator.data import DataConfig, describe, simple_scene
from pipelines.generator.evaluate import Recall, frechet_distance, layout_miou, semantic_recall
from pipelines.generator.judges import JudgeNet, Reading, detections, read


@dataclass(frozen=True)
class PromptSet:
    prompts: list[str]
    renders: np.ndarray  # (N,S,S,3) uint8 ground-truth renders of the prompts' scenes
    layouts: np.ndarray  # (N,S,S) their true layouts


def held_out_prompts(data: DataConfig, n: int, seed: int = 12345) -> PromptSet:
    """`n` prompts from scenes of the generator's domain with the rare shape made common
    (uniform shapes), seeded apart from training; the most specific caption of each."""
    cfg = replace(data, rare_shape=None)
    rng = np.random.default_rng([seed, 777])
    prompts, images, layouts = [], [], []
    for _ in range(n):
        scene = simple_scene(rng, cfg)
        prompts.append(describe(scene, rng, 1)[0])
        r = render(scene, cfg.size)
        images.append(r.image)
        layouts.append(r.layout)
    return PromptSet(prompts, np.stack(images), np.stack(layouts))


@dataclass(frozen=True)
class ModelEval:
    method: str
    samples: list[Sample]  # prompt-major: prompt p, seed s at p * seeds + s
    prompts: list[str]  # per sample
    reading: Reading
    recall: Recall
    frechet: float
    layout_miou: float | None  # GCDP only: its layout vs the judge's segmentation
    seconds: float


def generate_all(pipe: TextToImage, prompts: list[str], seeds: int, *, steps: int,
                 guidance: float, batch: int = 32, **kw: object) -> tuple[list[Sample], list[str]]:
    """Every prompt with seeds 1000*s + p (s < seeds): the same seeds for every model."""
    out: list[Sample | None] = [None] * (len(prompts) * seeds)
    for s in range(seeds):
        for i in range(0, len(prompts), batch):
            chunk = prompts[i : i + batch]
            got = pipe.generate(chunk, seed=1000 * s + i, steps=steps, guidance_scale=guidance,
                                **kw)  # type: ignore[arg-type]
            for j, smp in enumerate(got):
                out[(i + j) * seeds + s] = smp
    per = [p for p in prompts for _ in range(seeds)]
    return [o for o in out if o is not None], per


def evaluate_model(method: str, pipe: TextToImage, judge: JudgeNet, ps: PromptSet,
                   reference: np.ndarray, *, seeds: int, steps: int, guidance: float) -> ModelEval:
    """Generate for the held-out prompts and measure with the judge.

    Args:
        reference: (M,F) judge features of ground-truth renders (Fréchet reference).
    """
    import time

    t0 = time.perf_counter()
    samples, prompts = generate_all(pipe, ps.prompts, seeds, steps=steps, guidance=guidance)
    seconds = time.perf_counter() - t0
    reading = read(judge, np.stack([s.image for s in samples]))
    dets = [detections(reading, i) for i in range(len(samples))]
    miou = None
    if samples[0].layout is not None:
        miou = layout_miou(np.stack([s.layout for s in samples]), reading.shapes)
    return ModelEval(method, samples, prompts, reading, semantic_recall(prompts, dets),
                     frechet_distance(reading.features, reference), miou, seconds)
