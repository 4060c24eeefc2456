"""The narrative of reports/bias.md, written from the run's numbers: each of the paper's claims
beside what this run measured, and whether it holds here."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipelines.bias.evaluate import ProbeScores, SpanScores

if TYPE_CHECKING:
    from pipelines.bias.pipeline import Bench, VariantResult
    from pipelines.bias.report import ReportConfig


def _mean(rs: list[VariantResult], attr: str = "accuracy", cue: str | None = None) -> float:
    if cue:
        return statistics.fmean(r.calibrated.by_cue.get(cue, float("nan")) for r in rs)
    return statistics.fmean(getattr(r.calibrated, attr) for r in rs)


def _ms(rs: list[VariantResult], attr: str = "accuracy") -> str:
    values = np.asarray([getattr(r.calibrated, attr) for r in rs], dtype=np.float64)
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def _holds(ok: bool) -> str:
    return "holds" if ok else "**does not hold**"


def notes(cfg: ReportConfig, bench: Bench, results: dict[str, list[VariantResult]],
          spans: dict[str, SpanScores], probes: dict[str, ProbeScores], aucs: dict[str, float],
          package: Path, registered: int | None, seconds: float) -> str:
    r = results
    train = bench.splits["train"]
    vote_err = sum(int(x["label"] != x["true_label"]) for x in train.records) / len(train)
    img = [x for x in train.records if x["cue"] == "image"]
    img_err = sum(int(x["label"] != x["true_label"]) for x in img) / max(1, len(img))
    d_lora = 100 * (_mean(r["both-concat-lora"]) - _mean(r["text-lora"]))
    d_frozen = 100 * (_mean(r["both-concat-frozen"]) - _mean(r["text-frozen"]))
    full, lora, frozen = r["both-concat-full"][0], r["both-concat-lora"][0], r["both-concat-frozen"][0]
    share = lora.calibrated.accuracy / full.calibrated.accuracy
    share_f1 = lora.calibrated.macro_f1 / full.calibrated.macro_f1
    trainable = lora.trainable / lora.total
    frozen_share = frozen.calibrated.accuracy / full.calibrated.accuracy
    d_align_frozen = 100 * (_mean(r["both-align-frozen"]) - _mean(r["both-concat-frozen"]))
    d_align_lora = 100 * (r["both-align-lora"][0].calibrated.accuracy - lora.calibrated.accuracy)
    d_gold_lora = 100 * (r["both-concat-lora-gold"][0].calibrated.accuracy - lora.calibrated.accuracy)
    d_gold_frozen = 100 * (r["both-concat-frozen-gold"][0].calibrated.accuracy - frozen.calibrated.accuracy)
    d_gold_img = 100 * (r["both-concat-lora-gold"][0].calibrated.by_cue.get("image", float("nan"))
                        - lora.calibrated.by_cue.get("image", float("nan")))
    main_span, main_probe = spans["both-concat-lora"], probes["both-concat-lora"]
    blind = [c for c, v in aucs.items() if c != "all" and v < 0.7]
    seen = [c for c, v in aucs.items() if c != "all" and v >= 0.9]
    ece_raw = statistics.fmean(x.raw.ece for x in r["both-concat-lora"])
    ece_cal = statistics.fmean(x.calibrated.ece for x in r["both-concat-lora"])
    lines = [
        "## Setup",
        "",
        f"- Encoder: `{bench.encoder_choice.uri}` ({bench.encoder_choice.note or 'given'}; "
        "image tower frozen in every variant; MiniLM frozen, LoRA r=8 on q/v, or fully "
        "fine-tuned). Its inconsistency cue is fitted on the train split's annotated contradictions.",
        f"- Data: ShapeNews `{cfg.data_size}` (seed {cfg.data_seed}): {len(train)} train / "
        f"{len(bench.splits['val'])} val / {len(bench.splits['test'])} gold-checked test pairs; "
        f"training labels are the majority vote of 3 simulated annotators ({100 * vote_err:.1f}% of "
        f"train votes wrong, {100 * img_err:.1f}% on image-cued items, where the 'text reader' misses "
        "the bias); all accuracies below are against gold on the test split.",
        f"- Budget: 1 CPU thread on a 2-core machine shared with other jobs. Frozen-text variants "
        f"train their heads on precomputed states (10 epochs, the lowest-val-loss epoch kept); the "
        f"LoRA runs ({cfg.tuned_steps} steps of batch 32) and the full fine-tune ({cfg.full_steps} "
        f"steps) start from their frozen twin's heads (LP-FT). Temperature fitted on val (votes). "
        f"Whole report: {seconds / 60:.1f} min.",
        f"- Package: `{package}` (the both-concat-lora seed-0 model)"
        + (f", registered as `concord-bias` version {registered} @production." if registered else "."),
        "",
        "## The paper's claims beside this run",
        "",
        "| claim (ViLBias, arXiv 2412.17052) | paper | here | verdict |",
        "|---|---|---|---|",
        f"| images add accuracy over text alone | +3 to +5 points | LoRA: {d_lora:+.1f} points "
        f"({_ms(r['both-concat-lora'])} vs {_ms(r['text-lora'])}); frozen MiniLM: {d_frozen:+.1f} "
        f"({_ms(r['both-concat-frozen'])} vs {_ms(r['text-frozen'])}) | "
        f"{_holds(max(d_lora, d_frozen) >= 3)} (LoRA: {_holds(d_lora >= 3)}) |",
        f"| LoRA recovers full fine-tuning with few parameters | 97-99% with < 5% trainable | "
        f"{100 * share:.1f}% of full FT accuracy ({100 * share_f1:.1f}% of macro-F1) with "
        f"{100 * trainable:.2f}% trainable; frozen MiniLM {100 * frozen_share:.1f}% "
        f"| {_holds(share >= 0.97 and trainable < 0.05)}"
        + (" (a low bar here: full fine-tuning is below the frozen MiniLM)" if frozen_share > 1 else "")
        + " |",
        f"| concat vs align fusion | both evaluated, no winner stated | align − concat: frozen "
        f"{d_align_frozen:+.1f} points ({len(r['both-align-frozen'])} seeds), "
        f"LoRA {d_align_lora:+.1f} (seed 0) | — |",
        f"| linguistic cues point at the loaded words | rationales, no span metric | span F1 "
        f"{main_span.f1:.3f} (P {main_span.precision:.3f}, R {main_span.recall:.3f}) vs random words "
        f"{main_span.random_f1:.3f} | {_holds(main_span.f1 > 2 * main_span.random_f1)} |",
        f"| calibrated P(biased) | — | ECE {ece_raw:.3f} → {ece_cal:.3f} after temperature scaling "
        f"(T = {lora.temperature:.2f} for seed 0, fitted on val votes) | {_holds(ece_cal <= ece_raw)} |",
        f"| blind faith in text (image-cued items) | VLMs follow the text | both-concat-lora flags "
        f"{100 * main_probe.detected:.0f}% of image-cued pairs, text reliance "
        f"{main_probe.text_reliance:.2f} (text-only: {probes['text-lora'].text_reliance:.2f}) | see below |",
        f"| majority-vote labels cost accuracy | hierarchical vote + human check | gold-trained − "
        f"vote-trained (seed 0): LoRA {d_gold_lora:+.1f} points (image-cued items {d_gold_img:+.1f}), "
        f"frozen {d_gold_frozen:+.1f} | — |",
        "",
        "## All variants (gold test)",
        "",
        "| variant | seeds | accuracy | macro-F1 | image-cued acc. | text-cued acc. | ECE raw → calibrated "
        "| trainable share | train s (seed 0) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rs in r.items():
        lines.append(
            f"| {name} | {len(rs)} | {_ms(rs)} | {_ms(rs, 'macro_f1')} | {_mean(rs, cue='image'):.3f} "
            f"| {_mean(rs, cue='text'):.3f} | {statistics.fmean(x.raw.ece for x in rs):.3f} → "
            f"{statistics.fmean(x.calibrated.ece for x in rs):.3f} | {rs[0].trainable / rs[0].total:.4f} "
            f"| {rs[0].seconds:.0f} |"
        )
    lines += [
        "",
        "## Why image-cued bias is mostly missed: the shared encoder cannot see it",
        "",
        "AUC of the encoder's calibrated image-text inconsistency (the package's inconsistency cue), "
        "image-cued vs neutral test pairs:",
        "",
        "| image cue | " + " | ".join(aucs) + " |",
        "|---|" + "---:|" * len(aucs),
        "| AUC | " + " | ".join(f"{v:.3f}" for v in aucs.values()) + " |",
        "",
        "The classifier reads the same frozen image tower, so what the encoder cannot tell apart "
        f"({', '.join(blind) or 'none here'}: AUC < 0.7) it cannot flag either; what the encoder "
        f"separates ({', '.join(seen) or 'none here'}: AUC >= 0.9) is where images add accuracy. A "
        "stronger encoder (the `small` preset, or LoRA on the image tower with more image-cued data) "
        "is the lever, not the fusion head.",
        "",
        "## Text-reliance probe (image-cued test items)",
        "",
        "Original: neutral text the image contradicts (gold: biased). Counterfactuals: the faithful "
        "description of the image (gold: neutral) and a loaded rewording of the claim (gold: biased). "
        "Text reliance = mean |ΔP| over the counterfactual texts / (that + |ΔP| when the image is "
        "replaced by grey).",
        "",
        "| variant | items | flagged | neutral once text matches | biased when reworded loaded | "
        "text reliance | image effect |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, p in probes.items():
        lines.append(f"| {name} | {p.items} | {p.detected:.3f} | {p.faithful_neutral:.3f} | "
                     f"{p.loaded_biased:.3f} | {p.text_reliance:.3f} | {p.image_effect:.3f} |")
    lines += [
        "",
        "## What was tried first",
        "",
        "- A LayerNorm at the fusion MLP's input: it subtracts the mean of the align product, i.e. "
        "exactly the image-text cosine / P; removed (features are rescaled instead).",
        "- Frozen heads for 30 epochs: align overfit (train loss 0.11, test accuracy 0.73 vs concat "
        "0.78); now the best val-loss epoch is kept.",
        "- LoRA from random heads, 282 steps (3 epochs): text-cued and neutral items near 1.00 but "
        "image-cued 0.01; LoRA and full fine-tuning from random heads for 80 steps: image-cued 0.00 "
        "(accuracy 0.75 / 0.77). With a trainable text tower the model fits the text and treats the "
        "image-cued items (whose votes are often wrong) as noise. Starting the tuned runs from the "
        "frozen twin's heads (LP-FT) keeps part of the image signal, which is what the table shows; "
        "the frozen MiniLM still keeps more.",
        "",
        "## Where the claims do not hold, and why",
        "",
        f"- Images add {d_frozen:+.1f} points (frozen MiniLM) and {d_lora:+.1f} (LoRA), "
        + ("below" if max(d_frozen, d_lora) < 3 else "against")
        + " the paper's 3-5: every point comes from image-cued items, and the shared encoder only sees "
        "colour contradictions (table above); objects, counts and relations are invisible to it, so "
        "no head on its pooled vector can flag them. Images do not hurt text-cued items.",
        f"- LoRA does recover full fine-tuning ({100 * share:.1f}%, {100 * trainable:.2f}% "
        "trainable), but on this data tuning MiniLM does not pay at all: the loaded words are "
        "lexical, the frozen sentence embedding already separates them, and a tuned text tower "
        "pulls the model towards the text (the blind-faith effect, measured by the probe).",
        f"- Blind faith in text: the LoRA model flags {100 * main_probe.detected:.0f}% of "
        "image-cued pairs, and its verdict moves with the text about "
        f"{main_probe.text_reliance / max(1e-6, 1 - main_probe.text_reliance):.1f}x as much as "
        "with the image; it does turn neutral when the text matches the image, but mostly because "
        "it was never flagged.",
        f"- The vote costs {d_gold_lora:+.1f} points (LoRA, seed 0), nearly all of it on image-cued "
        "items, where the text-reading annotator outvotes the truth.",
        "",
        "## Plots",
        "",
        "![modality](bias/modality_seeds.png) ![tuning](bias/tuning_tradeoff.png) "
        "![reliability](bias/reliability.png)",
        "",
        "Reproduce: `concord bias-model report --encoder DIR_OR_URI` (no `--encoder`: trains a small "
        "encoder first); `concord bias-model train --tracking-uri URI --register` writes and registers "
        "`concord-bias@production`. Per-metric tables follow.",
    ]
    return "\n".join(lines)
