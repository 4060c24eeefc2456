"""One command for the generator report: `python -m pipelines.generator.report`.

Trains (or reuses) the judge, the GCDP tiny model and the image-only baseline of the same size and
budget on the same data, measures both on the same held-out prompts and seeds, runs the DECOR
sweep, and writes reports/generator.{md,json} (+ plots) and contact sheets under docs/generator/.
Everything trained is cached under --work-dir, so a rerun only measures.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import typer

from concord.checkpoints import load_generator, load_text_encoder
from concord.config import load_settings
from concord.media import colour_layout
from concord.models.diffusion.config import GeneratorConfig, load_preset
from concord.models.diffusion.pipeline import TextToImage
from concord.models.diffusion.unet import UNet
from pipelines.data.sheet import SheetRow, render_sheet
from pipelines.evaluate.report import MetricRow, write_report
from pipelines.generator import decor_eval, gcdp_eval
from pipelines.generator.data import DataConfig
from pipelines.generator.evaluate import frechet_distance, semantic_recall
from pipelines.generator.judge_train import JudgeAccuracy, JudgeSpec, load_or_train
from pipelines.generator.judges import detections, read
from pipelines.train_generator import TRAIN_PRESETS, TrainConfig, train

NAME = "generator"
app = typer.Typer(add_completion=False, help=__doc__)


def model_from_checkpoint(path: Path) -> tuple[TextToImage, dict[str, object]]:
    """The EMA weights of a training checkpoint (train_generator's train_state.pt), so two runs
    can be compared at the same step before either has finished."""
    state = torch.load(path, weights_only=False, map_location="cpu")
    config = GeneratorConfig.from_dict(state["config"])
    unet = UNet(config)
    unet.load_state_dict(state["ema"]["module"])
    backbone, tokenizer = load_text_encoder()
    return TextToImage(unet, backbone, tokenizer, config), {
        "source": str(path),
        "steps": int(state["step"]),
    }


def trained_model(
    preset: str, layout: bool, steps: int, work: Path, threads: int, given: Path | None
) -> tuple[TextToImage, dict[str, object]]:
    """A given model dir or checkpoint file, a cached model from an earlier run, or a freshly
    trained one."""
    if given is not None and Path(given).is_file():
        return model_from_checkpoint(Path(given))
    if given is not None:
        done = Path(given) / "done.json"  # written beside models this command trained
        info = json.loads(done.read_text()) if done.is_file() else {}
        state = Path(given) / "checkpoint" / "train_state.pt"  # train_generator's last state
        if "steps" not in info and state.is_file():
            info["steps"] = int(torch.load(state, weights_only=False, map_location="cpu")["step"])
        return load_generator(given), {**info, "source": str(given)}
    arch = hashlib.sha1(json.dumps(load_preset(preset).to_dict(), sort_keys=True).encode())
    out = work / f"{'gcdp' if layout else 'image'}-{preset}-{arch.hexdigest()[:8]}-{steps}"
    done = out / "done.json"
    if done.is_file():
        return load_generator(out), json.loads(done.read_text())
    resume = out if (out / "checkpoint").is_dir() else None
    cfg = TrainConfig(
        preset=preset,
        layout=layout,
        steps=steps,
        out=out,
        resume=resume,
        data_dir=work / "data",
        threads=threads,
        progress=False,
        sample_every=10**9,
        checkpoint_every=max(100, steps // 4),
    )
    res = train(cfg)
    info = {
        "source": "trained",
        "steps": res.step,
        "seconds": round(res.seconds, 1),
        "final_eps_loss": res.losses[-1][1] if res.losses else None,
        "final_layout_loss": res.losses[-1][2] if res.losses else None,
    }
    done.write_text(json.dumps(info, indent=1))
    return res.pipe, info


def judge_rows(acc: JudgeAccuracy) -> list[MetricRow]:
    split = "judge on held-out renders"
    rows = [
        MetricRow(f"judge {k.replace('_', ' ')}", split, "judge", float(v))
        for k, v in asdict(acc).items()
        if isinstance(v, float)
    ]
    return rows


def per_image(ev: gcdp_eval.ModelEval) -> float:
    """How many objects the judge sees per picture (renders: 1-2); far more means it is
    hallucinating objects in noise, and recall is inflated."""
    n = len(ev.reading.shapes)
    return float(np.mean([len(detections(ev.reading, i)) for i in range(n)]))


def gcdp_rows(
    evals: list[gcdp_eval.ModelEval], rare: str, shapes: tuple[str, ...]
) -> list[MetricRow]:
    rows = []
    base = "image-only"
    for ev in evals:
        b = None if ev.method in (base, "ground-truth renders") else base
        r = ev.recall
        rows.append(MetricRow("semantic recall", "all objects", ev.method, r.recall, b))
        rows.append(
            MetricRow("semantic recall", f"rare: {rare}", ev.method, r.shape_recall(rare), b)
        )
        for s in shapes:
            if s != rare:
                rows.append(
                    MetricRow("semantic recall", f"shape: {s}", ev.method, r.shape_recall(s), b)
                )
        rows.append(
            MetricRow("prompts fully recalled", "all prompts", ev.method, r.prompt_accuracy, b)
        )
        rows.append(MetricRow("judge detections per image", "all", ev.method, per_image(ev), b))
        rows.append(
            MetricRow("frechet distance (judge features)", "vs renders", ev.method, ev.frechet, b)
        )
        if ev.layout_miou is not None:
            rows.append(
                MetricRow("layout mIoU vs judge segmentation", "all", ev.method, ev.layout_miou)
            )
    return rows


def decor_rows(results: list[decor_eval.SettingResult], token: str) -> list[MetricRow]:
    rows = []
    for r in results:
        b = None if r.setting.method == "lora" else "lora"
        for metric, v in (
            ("text alignment", r.alignment),
            ("leakage rate", r.leakage),
            ("reference fidelity", r.fidelity),
        ):
            rows.append(MetricRow(metric, f"concept {token}", r.setting.method, v, b))
    return rows


def pareto_plot(results: list[decor_eval.SettingResult], path: Path) -> Path:
    """Alignment and (1 - leakage) against fidelity, one marker family per method kind."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, label in (
        (axes[0], "alignment", "text alignment"),
        (axes[1], "leakage", "leakage rate (lower is better)"),
    ):
        for kind, marker in (("decor(a=", "o"), ("lora", "s"), ("base", "x")):
            pts = [r for r in results if r.setting.method.startswith(kind)]
            for k in sorted({r.setting.directions for r in pts}):
                sel = [r for r in pts if r.setting.directions == k] if kind == "decor(a=" else pts
                xs = [r.fidelity for r in sel]
                ys = [getattr(r, key) for r in sel]
                name = f"DECOR k={k}" if kind == "decor(a=" else kind
                ax.plot(
                    xs,
                    ys,
                    marker=marker,
                    linestyle="-" if kind == "decor(a=" else "none",
                    label=name,
                )
                for r in sel:
                    tag = (
                        f"a={r.setting.alpha:g}"
                        if kind == "decor(a="
                        else r.setting.method.replace("lora scale ", "s=")
                    )
                    ax.annotate(
                        tag,
                        (r.fidelity, getattr(r, key)),
                        fontsize=6,
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
                if kind != "decor(a=":
                    break
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("reference fidelity (concept present)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def gcdp_sheet(
    evals: dict[str, gcdp_eval.ModelEval],
    ps: gcdp_eval.PromptSet,
    seeds: int,
    out: Path,
    n: int = 10,
) -> Path:
    g, b = evals["gcdp"], evals["image-only"]
    rows = []
    for p in range(min(n, len(ps.prompts))):
        i = p * seeds
        dg, db = detections(g.reading, i), detections(b.reading, i)
        panels = [("GCDP", g.samples[i].image)]
        if g.samples[i].layout is not None:
            panels.append(("GCDP layout", colour_layout(g.samples[i].layout)))
        panels += [
            ("judge: GCDP", colour_layout(g.reading.shapes[i])),
            ("image-only", b.samples[i].image),
            ("judge: image-only", colour_layout(b.reading.shapes[i])),
            ("ground truth", ps.renders[p]),
        ]
        text = (
            f"{ps.prompts[p]}\nGCDP judge: {', '.join(f'{d.colour} {d.shape}' for d in dg) or '-'}"
            f"\nimage-only judge: {', '.join(f'{d.colour} {d.shape}' for d in db) or '-'}"
        )
        rows.append(SheetRow(panels, text))
    return render_sheet(rows, "GCDP vs image-only (same prompt, same seed)", out, text_width=48)


def decor_sheet(
    results: list[decor_eval.SettingResult],
    refs: np.ndarray,
    train_prompt: str,
    seeds: int,
    out: Path,
    n: int = 5,
) -> Path:
    rows = [
        SheetRow(
            [(f"ref {j}", r) for j, r in enumerate(refs)][:n],
            f"references, tuned with: {train_prompt}",
        )
    ]
    keep = {
        "base (no concept)",
        "lora",
        "lora scale 0.5",
        "decor(a=0.50,k=1)",
        "decor(a=1.00,k=1)",
        "decor(a=1.00,k=2)",
    }
    for r in results:
        if r.setting.method not in keep:
            continue
        idx = [p * seeds for p in range(n) if p * seeds < len(r.samples)]
        panels = [(r.prompts[i].split(" and ")[-1], r.samples[i].image) for i in idx]
        rows.append(
            SheetRow(
                panels,
                f"{r.setting.method}\nalignment {r.alignment:.2f}  "
                f"leakage {r.leakage:.2f}  fidelity {r.fidelity:.2f}",
            )
        )
    return render_sheet(rows, "DECOR sweep (prompt: 'a zorv and a <object>')", out, text_width=40)


def summary(
    evals: dict[str, gcdp_eval.ModelEval],
    results: list[decor_eval.SettingResult],
    acc: JudgeAccuracy,
    rare: str,
    info: dict[str, dict[str, object]],
    params: dict[str, object],
) -> str:
    """Plain statements of what the numbers show, written from the numbers."""
    g, b = evals["gcdp"].recall, evals["image-only"].recall
    gap, rare_gap = g.recall - b.recall, g.shape_recall(rare) - b.shape_recall(rare)
    by = {r.setting.method: r for r in results}
    lora, base = by["lora"], by["base (no concept)"]
    best = min(
        (r for r in results if r.setting.method.startswith("decor")),
        key=lambda r: (r.leakage - r.fidelity, -r.alignment),
    )
    lines = [
        "## Summary (generated from the numbers below)",
        "",
        f"- Models: `{params['preset']}` GCDP and image-only U-Nets, same data, seed, batch and "
        f"learning-rate schedule; optimiser steps GCDP {info['gcdp'].get('steps', '?')}, "
        f"image-only {info['image-only'].get('steps', '?')}; {params['held_out_prompts']} held-out "
        f"prompts x {params['seeds']} seeds, same seeds for both, DDIM {params['sample_steps']} "
        f"steps, guidance {params['guidance']}.",
        f"- Judge (trained on ground-truth renders only): object recall {acc.object_recall:.3f}, "
        f"precision {acc.object_precision:.3f}, layout mIoU {acc.miou:.3f} on "
        f"{acc.images} held-out renders (colour from the colour head; from the mean pixel "
        f"colour: recall {acc.object_recall_mean_colour:.3f}). Numbers below are at most this "
        "trustworthy, and generated pictures are blurrier than renders.",
        f"- Semantic recall, all objects (n={g.objects}): GCDP {g.recall:.3f} vs image-only "
        f"{b.recall:.3f} ({gap:+.3f}); rare class `{rare}` (n={g.by_shape.get(rare, (0, 0))[1]}): "
        f"GCDP {g.shape_recall(rare):.3f} vs {b.shape_recall(rare):.3f} ({rare_gap:+.3f}). "
        + ("GCDP is ahead overall. " if gap > 0 else "GCDP is NOT ahead overall at this budget. ")
        + (
            "The gap is larger on the rare class, as the paper claims."
            if rare_gap > max(gap, 0)
            else "GCDP is ahead on the rare class too, but by no more than overall."
            if rare_gap > 0
            else "GCDP is not ahead on the rare class: the paper's claim is not reproduced here."
        ),
        f"- The judge sees {per_image(evals['gcdp']):.2f} objects per GCDP picture, "
        f"{per_image(evals['image-only']):.2f} per image-only picture and "
        f"{per_image(evals['ground-truth renders']):.2f} per ground-truth render. "
        + (
            "WARNING: far more objects than the renders hold means the judge is reading objects "
            "into noise, so the recall above is inflated by false detections."
            if max(per_image(evals["gcdp"]), per_image(evals["image-only"]))
            > 1.5 * per_image(evals["ground-truth renders"])
            else ""
        ),
        f"- Fréchet distance on judge features (lower is closer to renders): GCDP "
        f"{evals['gcdp'].frechet:.2f}, image-only {evals['image-only'].frechet:.2f}, "
        f"fresh renders of as many scenes (noise floor) {evals['ground-truth renders'].frechet:.2f}.",
        f"- GCDP's own layout vs the judge's segmentation of its image: mIoU "
        f"{evals['gcdp'].layout_miou:.3f}.",
        f"- DECOR: LoRA alone leaks the reference's red circle in {lora.leakage:.2f} of images "
        f"(base model {base.leakage:.2f}), with fidelity {lora.fidelity:.2f} (base "
        f"{base.fidelity:.2f}) and alignment {lora.alignment:.2f}. Best DECOR point "
        f"({best.setting.method}): leakage {best.leakage:.2f}, fidelity {best.fidelity:.2f}, "
        f"alignment {best.alignment:.2f}. "
        + (
            "DECOR does not lower leakage here."
            if best.leakage >= lora.leakage
            else "DECOR lowers leakage at small fidelity cost (<= 0.1)."
            if best.fidelity >= lora.fidelity - 0.1
            else "DECOR lowers leakage, but fidelity drops by more than 0.1."
        )
        + (
            " Caveat: LoRA alone barely shows the concept (fidelity < 0.2): the customization did"
            " not take at this budget, so the fidelity axis says little."
            if lora.fidelity < 0.2
            else ""
        )
        + (
            " Caveat: LoRA alone leaks no more than the base model, so there is little leakage"
            " for DECOR to remove."
            if lora.leakage <= base.leakage
            else ""
        ),
        "",
        "![DECOR Pareto](generator/decor_pareto.png)",
        "",
        "Contact sheets: `docs/generator/gcdp_vs_image_only.png`, `docs/generator/decor_sweep.png`.",
        "",
        "## Setup",
        "",
        "```",
        json.dumps({"models": info, **params}, indent=1, default=str),
        "```",
    ]
    return "\n".join(lines)


@app.command()
def main(
    out_dir: Annotated[Path, typer.Option(help="where generator.md/json go")] = Path("reports"),
    docs_dir: Annotated[Path, typer.Option(help="contact sheets")] = Path("docs/generator"),
    work_dir: Annotated[
        Path | None, typer.Option(help="cache; default CONCORD_HOME/generator-eval")
    ] = None,
    preset: str = "tiny",
    train_steps: Annotated[
        int | None,
        typer.Option(help="optimiser steps per model (same for both); default: the preset's"),
    ] = None,
    gcdp_dir: Annotated[
        Path | None,
        typer.Option(help="reuse a trained GCDP model dir (or a train_state.pt checkpoint)"),
    ] = None,
    baseline_dir: Annotated[
        Path | None,
        typer.Option(help="reuse a trained image-only model dir (or a train_state.pt checkpoint)"),
    ] = None,
    prompts: int = 40,
    seeds: int = 2,
    sample_steps: int = 20,
    guidance: float = 3.0,
    finetune_steps: int = 300,
    finetune_lr: float = 2e-3,
    decor_seeds: int = 2,
    threads: Annotated[int, typer.Option(help="torch threads (1 is faster on a shared box)")] = 1,
    note: Annotated[str, typer.Option(help="a paragraph put first in the summary")] = "",
) -> None:
    """Regenerate reports/generator.* and docs/generator/*."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    work = Path(work_dir) if work_dir else load_settings().home / "generator-eval"
    arch = load_preset(preset)
    if train_steps is None:
        train_steps = int(TRAIN_PRESETS.get(preset, {}).get("steps", 2000))
    data = DataConfig(
        size=arch.image_size, count=int(TRAIN_PRESETS.get(preset, {}).get("data_count", 6000))
    )
    rare = str(data.rare_shape)
    judge, acc, cached = load_or_train(JudgeSpec(data=data), work / "judges")
    typer.echo(f"judge ready ({'cached' if cached else 'trained'}): {acc}")
    info: dict[str, dict[str, object]] = {}
    pipes = {}
    for method, layout, given in (("gcdp", True, gcdp_dir), ("image-only", False, baseline_dir)):
        pipes[method], info[method] = trained_model(
            preset, layout, train_steps, work, threads, given
        )
        c = pipes[method].config
        info[method]["arch"] = {
            k: getattr(c, k)
            for k in ("image_size", "patch", "base_channels", "channel_mult", "layout")
        }
        info[method]["arch"]["prediction"] = getattr(c, "prediction", "eps")
        typer.echo(f"{method}: {info[method]}")
    ps = gcdp_eval.held_out_prompts(data, prompts)
    truth = read(judge, ps.renders)
    reference = read(judge, gcdp_eval.held_out_prompts(data, 400, seed=999).renders).features
    evals = {
        m: gcdp_eval.evaluate_model(
            m, p, judge, ps, reference, seeds=seeds, steps=sample_steps, guidance=guidance
        )
        for m, p in pipes.items()
    }
    evals["ground-truth renders"] = gcdp_eval.ModelEval(
        "ground-truth renders",
        [],
        ps.prompts,
        truth,
        semantic_recall(ps.prompts, [detections(truth, i) for i in range(len(ps.prompts))]),
        # The noise floor: a fresh set of renders as large as each model's sample set.
        frechet_distance(
            read(
                judge, gcdp_eval.held_out_prompts(data, prompts * seeds, seed=4321).renders
            ).features,
            reference,
        ),
        None,
        0.0,
    )
    typer.echo({m: (e.recall.recall, e.frechet) for m, e in evals.items()})
    task = decor_eval.ConceptTask()
    refs = decor_eval.reference_images(task, data)
    t1 = time.perf_counter()
    concept = decor_eval.learn_concept(
        pipes["gcdp"], task, refs, steps=finetune_steps, lr=finetune_lr
    )
    finetune_s = time.perf_counter() - t1
    results = decor_eval.evaluate_settings(
        pipes["gcdp"],
        judge,
        concept,
        task,
        decor_eval.test_prompts(task, data),
        decor_eval.settings(),
        seeds=decor_seeds,
        steps=sample_steps,
        guidance=guidance,
    )
    rows = judge_rows(acc) + gcdp_rows(list(evals.values()), rare, data.shapes)
    rows += decor_rows(results, task.token)
    pareto_plot(results, out_dir / NAME / "decor_pareto.png")
    gcdp_sheet(evals, ps, seeds, docs_dir / "gcdp_vs_image_only.png")
    decor_sheet(
        results, refs, decor_eval.train_prompt(task), decor_seeds, docs_dir / "decor_sweep.png"
    )
    steps_run = {m: i.get("steps", train_steps) for m, i in info.items()}
    params = {
        "preset": preset,
        "train_steps": steps_run,
        "held_out_prompts": prompts,
        "seeds": seeds,
        "sample_steps": sample_steps,
        "sampler": "ddim",
        "guidance": guidance,
        "decor_task": asdict(task),
        "finetune_steps": finetune_steps,
        "finetune_lr": finetune_lr,
        "finetune_seconds": round(finetune_s, 1),
        "decor_seeds": decor_seeds,
        "threads": threads,
        "generation_seconds": {m: round(e.seconds, 1) for m, e in evals.items()},
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    notes = summary(evals, results, acc, rare, info, params)
    if note:
        notes = notes.replace("\n\n", f"\n\n> {note}\n\n", 1)
    files = write_report(
        NAME,
        rows,
        out_dir,
        data_seed=data.seed,
        title="Generator: GCDP vs image-only, DECOR vs LoRA",
        notes=notes,
    )
    typer.echo(f"wrote {files.markdown} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    app()
