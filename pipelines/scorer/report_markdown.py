"""The markdown notes of the scorer report: method, encoders, fitted values, claims, caveats."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from concord.checkpoints import read_encoder_config
from pipelines.evaluate.report import MetricRow
from pipelines.scorer import evaluate as ev
from pipelines.scorer.config import GIVEN, HARDNEG, SHARED, ScorerConfig
from pipelines.scorer.data import KINDS
from pipelines.scorer.encoders import EncoderRun
from pipelines.scorer.measure import Measured


def _value(rows: list[MetricRow], metric: str, split: str, method: str) -> float:
    for r in rows:
        if (r.metric, r.split, r.method) == (metric, split, method):
            return r.value
    return float("nan")


def _image_tower(directory: Path) -> str:
    """What the (shared) encoder's image tower is, from its saved config."""
    config = read_encoder_config(directory)
    image = config.image
    if image.depth == 0:  # no transformer block: the stem is the tower (only `cnn` allows it)
        return f"{config.name}: CNN, {image.width} channels out, {image.pool}-pooled"
    stem = {"conv": ", convolutional stem", "cnn": ", CNN stem"}.get(image.stem, "")
    return f"{config.name}: ViT {image.depth} x {image.width}{stem}, {image.pool}-pooled"


def _verdict(ok: bool) -> str:
    return "**holds**" if ok else "**does not hold**"


def _text_tower(directory: Path) -> str:
    unfrozen = read_encoder_config(directory).text.unfrozen_layers
    trained = f"top {unfrozen} layer(s) trained" if unfrozen else "frozen"
    return f"all-MiniLM-L6-v2 ({trained})"


def markdown_notes(
    cfg: ScorerConfig,
    encoders: list[EncoderRun],
    measured: list[Measured],
    chosen: Measured,
    rows: list[MetricRow],
    phases: dict[str, float],
    n_val: int,
    n_test: int,
    version: int | None,
) -> str:
    """The markdown notes above the scorer report's tables (`ScorerResult.notes`)."""
    lines = [
        f"Encoder `{_image_tower(encoders[0].directory)}` from scratch + "
        f"{_text_tower(encoders[0].directory)}, Concord Scenes "
        f"misalignment `{cfg.misalignment_size}` (seed {cfg.seed}): val {n_val} pairs, test {n_test} "
        "pairs (every caption, aligned, plus its one-word-false variants). Regenerate: "
        "`python -m pipelines.scorer.report`.",
        "",
        "Methods: CLIPScore = 2.5 max(cos, 0); fine-grained = FILIP text->image late interaction "
        "over word tokens; CLIP4DM = sum over the last "
        f"{cfg.layers} MiniLM layers of mean-over-heads(dS/dA * A), read as each token's relevance "
        "to the mean-pooled text embedding (sum over real query rows), sub-words averaged into "
        "words; F-CLIPScore = CLIPScore + penalty (1 - max(cos, 0)) * (sum of flagged words' "
        "attributions) (naver-ai/CLIP4DM's (1 - s)-weighted negative sum, added to CLIPScore). "
        "Word thresholds (CLIP4DM epsilon and the low-similarity cut, for word F1), "
        "F-CLIPScore's own epsilon and penalty (best val pair AUC over epsilon in {0, the word "
        "epsilon, quartiles of |negative attributions|} x penalty in "
        f"{{{', '.join(f'{k:g}' for k in ev.PENALTY_GRID)}}} x std(CLIPScore) / std(attribution "
        "term); zero penalty is not a candidate) and the calibration (logistic on "
        "CLIPScore, fine-grained, F-CLIPScore) are fitted on val; everything below is test "
        "unless the split says val. "
        "Per-type splits hold that type's misaligned captions and their own aligned originals.",
        "",
        "### Encoders",
        "",
        "| encoder | what | seconds | notes | scorer.json encoder |",
        "|---|---|---:|---|---|",
    ]
    what = {
        SHARED: f"the shared concord-encoder, trained by pipelines.train_encoder (recipe "
        f"`{cfg.recipe}`, retrieval `{cfg.retrieval_size}`)",
        HARDNEG: f"shared + NegCLIP-style fine-tuning, {cfg.hard_neg.epochs} epochs on the "
        "misalignment train split, the caption's variants as extra negatives (global + FILIP)",
        GIVEN: f"given: {cfg.encoder}",
    }
    for e in encoders:
        lines.append(f"| {e.label} | {what[e.label]} | {e.seconds:.0f} | {e.note} | `{e.uri}` |")
    lines += [
        "",
        "| encoder | CLIP4DM epsilon (val) | F-CLIPScore epsilon, penalty (val) "
        "| low-similarity cut (val) | calibrated AUC (val) |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in measured:
        lines.append(
            f"| {m.label} | {m.threshold:.3g} | {m.f_threshold:.3g}, {m.penalty:.4g} "
            f"| {m.sim_cut:.3f} | {m.val_auc:.3f} |"
        )
    lines += [
        "",
        f"Packaged encoder: **{chosen.label}** (higher calibrated AUC on val)"
        + (
            f"; registered `concord-scorer` v{version} @{cfg.alias}."
            if version
            else "; not registered (no tracking URI)."
        ),
        "",
        "Wall time by phase (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in phases.items())
        + f"; total {sum(phases.values()):.0f}.",
        "",
        "### Claims (per encoder, test)",
        "",
    ]
    for m in measured:
        enc = f"[{m.label}]"
        for kind in (None, *KINDS):
            split = "test" if kind is None else f"test {kind}"
            f = _value(rows, "pair AUC", split, f"F-CLIPScore {enc}")
            c = _value(rows, "pair AUC", split, f"CLIPScore {enc}")
            loc = _value(rows, "localisation accuracy", split, f"CLIP4DM {enc}")
            ch = _value(rows, "localisation accuracy", split, f"chance {enc}")
            ls = _value(rows, "localisation accuracy", split, f"low similarity {enc}")
            f1 = _value(rows, "word F1", split, f"CLIP4DM {enc}")
            bf1 = _value(rows, "word F1", split, f"low similarity {enc}")
            if np.isnan(c):
                continue
            what_kind = kind or "all types"
            low, high = ev.auc_difference_ci(
                m.test, m.test_scores["f_clip_score"], m.test_scores["clip_score"], kind
            )
            noise = "beyond noise" if low > 0 or high < 0 else "within noise"
            lines.append(
                f"- {m.label}, {what_kind}: F-CLIPScore AUC {f:.3f} vs CLIPScore {c:.3f} "
                f"({_verdict(f > c)} above; difference {f - c:+.3f}, 95% CI [{low:+.3f}, "
                f"{high:+.3f}] over resampled captions: {noise}); "
                f"CLIP4DM localisation {loc:.3f} vs chance {ch:.3f} "
                f"(low-similarity baseline {ls:.3f}; {_verdict(loc > ch + 0.05)} well above chance); "
                f"word F1 {f1:.3f} vs baseline {bf1:.3f}."
            )
        clamp = _value(rows, "localisation accuracy", "test", f"CLIP4DM clamped (ablation) {enc}")
        loc = _value(rows, "localisation accuracy", "test", f"CLIP4DM {enc}")
        lines.append(
            f"- {m.label}, ablation: positive-clamped (Chefer-style) attributions localise "
            f"{clamp:.3f} vs {loc:.3f} signed: collapse {_verdict(clamp < loc - 0.05)}."
        )
        e0 = _value(rows, "ECE", "test", f"CLIPScore as probability {enc}")
        e1 = _value(rows, "ECE", "test", f"calibrated {enc}")
        lines.append(
            f"- {m.label}, calibration: ECE {e0:.3f} (CLIPScore read as a probability) -> "
            f"{e1:.3f} calibrated."
        )
    lines += [
        "",
        "![reliability](scorer/reliability.png)",
        "",
        "### Caveats",
        "",
        "- A tiny encoder and small data: differences of a few points are within noise.",
        "- Thresholds are fitted on val; the paper's fixed epsilon (5e-5) is for OpenAI CLIP's "
        "attribution scale and does not transfer to another encoder.",
        "- Relation and count variants are few (they need a relation or count slot in the caption).",
        "",
    ]
    return "\n".join(lines)
