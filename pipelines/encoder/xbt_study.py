"""XBT study on two *stored* encoders (no encoder training): embed a text corpus, the train images
and captions and the test split once per model, then fit only psi over a grid -- linear vs MLP
psi, stage-1 noise sigma, stage-2 pair count N, psi seeds -- beside psi on pairs only, a
training-free Procrustes map fitted on text, old->old and new->new (full backfill), and write
`<out-dir>/<name>.md` + `.json` (method card 8's small reproduction, psi only: no LoRA).

    python -m pipelines.encoder.xbt_study --old DIR --new DIR [--data DIR] [--seeds 0,1,2]
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import typer
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from concord.checkpoints import load_encoder
from concord.models.dual_encoder import DualEncoder
from concord.models.preprocess import TextTokenizer
from pipelines.data.scene import Scene
from pipelines.data.store import Manifest, read_jsonl
from pipelines.encoder.data import load_retrieval
from pipelines.encoder.embed import embed_images, embed_texts
from pipelines.encoder.scenes import caption_pool
from pipelines.encoder.xbt import (
    BACKFILL,
    DIRECTIONS,
    MIN_GAIN,
    OLD_OLD,
    CompatibleProjection,
    Spaces,
    XbtConfig,
    XbtResult,
    backfill_share,
    evaluate_mapping,
    evaluate_upgrade,
    make_projection,
    procrustes,
    retrieval_rows,
    train_pair_stage,
    train_text_stage,
)
from pipelines.evaluate.report import MetricRow, mean_over_seeds, write_report

Encoder = tuple[DualEncoder, TextTokenizer]

PROCRUSTES = "Procrustes on text (training-free)"
R1, R5 = "R@1", "R@5"
SHARE = "share of backfill R@1 gain"
COMPAT = "compatible (new->old R@1 > old->old)"
GOAL = "new->old above old->old, at least half of the backfill gain"
MAX_DRAFT_ROUNDS = 20  # caption_pool passes over the train scenes before giving up on the target


# ---------------------------------------------------------------- embedding (once per model)


@dataclass(frozen=True)
class Embedded:
    """Everything the grid needs, under both models; psi never sees a model again."""

    corpus: Spaces  # stage-1 text corpus: train captions + captions drafted from train scenes
    train_image: Spaces  # every train image: stage-2 pairs are drawn from these
    train_caption: Spaces  # every train caption, flat
    train_owner: np.ndarray  # (C,) the train image of each train caption
    test_image: Spaces
    test_text: Spaces
    test_owner: np.ndarray  # (T,) the test image of each test caption
    drafted: int  # corpus texts drafted from the train scenes (the rest are dataset captions)
    seconds: float  # embedding wall time, both models


def text_corpus(root: Path, target: int, seed: int, exclude: set[str]) -> tuple[list[str], int]:
    """Stage 1's text-only corpus: every distinct train caption, then captions drafted from the
    train scenes (`scenes.caption_pool`, the recipe's caption pool) until `target` texts.

    Args:
        exclude: texts never to include (the test captions).
    Returns:
        (texts, how many of them were drafted).
    """
    recs = read_jsonl(Path(root) / "train.jsonl")
    out = dict.fromkeys(c for r in recs for c in r["captions"] if c not in exclude)
    given = len(out)
    scenes = [Scene.from_dict(r["scene"]) for r in recs]
    rng = np.random.default_rng([seed, 8])
    for _ in range(MAX_DRAFT_ROUNDS):
        for scene in scenes:
            if len(out) >= target:
                return list(out), len(out) - given
            out.update(
                dict.fromkeys(c.text for c in caption_pool(scene, rng, 1) if c.text not in exclude)
            )
    return list(out), len(out) - given


def embed_text_spaces(old: Encoder, new: Encoder, texts: Sequence[str]) -> Spaces:
    """Pooled text embeddings under both models (no text-state cache: the MiniLM top layer of
    these models is trained). Texts go through sorted by length, so batches carry little padding."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    back = torch.as_tensor(np.argsort(order))
    ordered = [texts[i] for i in order]

    def one(enc: Encoder) -> torch.Tensor:
        model, tokenizer = enc
        return embed_texts(model, tokenizer, ordered, batch_size=64, cache=None).pooled[back].cpu()

    return Spaces(one(old), one(new))


def embed_image_spaces(old: Encoder, new: Encoder, pixels: torch.Tensor) -> Spaces:
    return Spaces(
        embed_images(old[0], pixels).pooled.cpu(), embed_images(new[0], pixels).pooled.cpu()
    )


def embed_all(old: Encoder, new: Encoder, root: Path, corpus_size: int, seed: int = 0) -> Embedded:
    """Embed the corpus, the train split and the test split under both models, every text once."""
    start = time.perf_counter()
    for model, _ in (old, new):
        model.eval()
    size = new[0].config.image.image_size
    if old[0].config.image.image_size != size:
        raise ValueError("old and new encoders take different image sizes")
    train, test = load_retrieval(root, "train", size), load_retrieval(root, "test", size)
    test_texts, test_owner = test.flat_captions()
    train_texts, train_owner = train.flat_captions()
    corpus, drafted = text_corpus(root, corpus_size, seed, set(test_texts))
    texts = list(dict.fromkeys([*corpus, *train_texts, *test_texts]))
    row = {t: k for k, t in enumerate(texts)}
    spaces = embed_text_spaces(old, new, texts)

    def take(items: Sequence[str]) -> Spaces:
        idx = torch.as_tensor([row[t] for t in items], dtype=torch.long)
        return Spaces(spaces.old[idx], spaces.new[idx])

    return Embedded(
        corpus=take(corpus),
        train_image=embed_image_spaces(old, new, train.pixels),
        train_caption=take(train_texts),
        train_owner=train_owner,
        test_image=embed_image_spaces(old, new, test.pixels),
        test_text=take(test_texts),
        test_owner=test_owner,
        drafted=drafted,
        seconds=time.perf_counter() - start,
    )


# ---------------------------------------------------------------- the grid (psi only)


@dataclass(frozen=True)
class Grid:
    seeds: tuple[int, ...] = (0, 1, 2)  # psi init, noise, batches and the pair draw
    noises: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)  # stage-1 (and stage-2 text term) sigma
    pairs: tuple[int, ...] = (100, 300, 1000)  # stage-2 image-caption pairs (capped at train size)
    hidden: tuple[int, ...] = (0, 256)  # psi: 0 linear, else a 2-layer MLP of that width
    xbt: XbtConfig = field(default_factory=XbtConfig)


def arch_name(hidden: int) -> str:
    return "linear" if hidden == 0 else f"MLP-{hidden}"


def text_only_method(hidden: int, noise: float) -> str:
    return f"XBT {arch_name(hidden)} σ={noise:g}: text only"


def text_pairs_method(hidden: int, noise: float, n: int) -> str:
    return f"XBT {arch_name(hidden)} σ={noise:g}: text + {n} pairs"


def pairs_only_method(hidden: int, n: int) -> str:
    return f"psi {arch_name(hidden)}: {n} pairs only"


def pair_counts(grid: Grid, train_size: int) -> list[int]:
    return sorted({min(n, train_size) for n in grid.pairs})


def choose_pairs(emb: Embedded, n: int, seed: int) -> tuple[Spaces, Spaces]:
    """The first `n` of a seed's permutation of the train images (so N=100 is inside N=300),
    each with one of its captions. Returns: (images, captions), row-aligned."""
    rng = np.random.default_rng([seed, 31])
    order = rng.permutation(len(emb.train_image.old))
    caption = np.array([rng.choice(np.flatnonzero(emb.train_owner == i)) for i in order])
    img, cap = torch.as_tensor(order[:n]), torch.as_tensor(caption[:n])
    image = Spaces(emb.train_image.old[img], emb.train_image.new[img])
    return image, Spaces(emb.train_caption.old[cap], emb.train_caption.new[cap])


def upgrade_rows(res: XbtResult, method: str) -> list[MetricRow]:
    """new->old R@1/R@5 against old->old, the backfill share and the compatibility criterion."""
    rows = retrieval_rows(res.new_old, method, OLD_OLD)
    ok = []
    for short, attr in DIRECTIONS:
        ok.append(getattr(res.new_old, attr).r1 > getattr(res.old_old, attr).r1)
        rows += [
            MetricRow(SHARE, f"test {short}", method, backfill_share(res, attr)),
            MetricRow(COMPAT, f"test {short}", method, float(ok[-1])),
        ]
    rows.append(MetricRow(COMPAT, "test both", method, float(all(ok))))
    return rows


def fixed_rows(emb: Embedded) -> list[MetricRow]:
    """The seed-free rows: old->old, new->new and Procrustes fitted on the text corpus."""
    w = procrustes(emb.corpus.new, emb.corpus.old)
    res = evaluate_mapping(emb.test_image, emb.test_text, emb.test_owner, lambda x: x @ w)
    rows = retrieval_rows(res.old_old, OLD_OLD, None) + retrieval_rows(
        res.new_new, BACKFILL, OLD_OLD
    )
    return rows + upgrade_rows(res, PROCRUSTES)


def seed_rows(emb: Embedded, grid: Grid, seed: int) -> list[MetricRow]:
    """One psi seed over the whole grid: per psi architecture and sigma, stage 1 then stage 2 at
    every N (continuing from that stage-1 psi), and psi trained on N pairs only."""
    new_dim, old_dim = emb.corpus.new.shape[1], emb.corpus.old.shape[1]
    counts = pair_counts(grid, len(emb.train_image.old))
    pairs = {n: choose_pairs(emb, n, seed) for n in counts}

    def evaluate(psi: CompatibleProjection, method: str) -> list[MetricRow]:
        return upgrade_rows(
            evaluate_upgrade(emb.test_image, emb.test_text, emb.test_owner, psi), method
        )

    rows: list[MetricRow] = []
    for hidden in grid.hidden:
        for noise in grid.noises:
            cfg = replace(grid.xbt, noise=noise, seed=seed)
            psi = make_projection(new_dim, old_dim, seed, hidden)
            train_text_stage(psi, emb.corpus, cfg)
            rows += evaluate(psi, text_only_method(hidden, noise))
            for n in counts:
                both = copy.deepcopy(psi)
                train_pair_stage(both, emb.corpus, *pairs[n], cfg)
                rows += evaluate(both, text_pairs_method(hidden, noise, n))
        for n in counts:
            psi = make_projection(new_dim, old_dim, seed, hidden)
            train_pair_stage(psi, None, *pairs[n], replace(grid.xbt, seed=seed))
            rows += evaluate(psi, pairs_only_method(hidden, n))
    return rows


def run_grid(emb: Embedded, grid: Grid) -> list[MetricRow]:
    """Fixed rows, then every psi variant as mean ± std over the grid's seeds."""
    return fixed_rows(emb) + mean_over_seeds([seed_rows(emb, grid, s) for s in grid.seeds])


# ---------------------------------------------------------------- notes and plots


def _index(rows: Sequence[MetricRow]) -> dict[tuple[str, str, str], MetricRow]:
    return {(r.metric, r.split, r.method): r for r in rows}


def upgrade_methods(rows: Sequence[MetricRow]) -> list[str]:
    """Every method with new->old rows, in row order."""
    return list(dict.fromkeys(r.method for r in rows if r.metric == COMPAT))


@dataclass(frozen=True)
class Verdict:
    method: str
    r1: dict[str, float]  # direction -> mean new->old R@1
    share: dict[str, float]
    compatible_seeds: float  # share of seeds where the criterion holds in both directions
    above_old: bool  # mean new->old R@1 above old->old in both directions
    half_gain: bool  # mean share >= 0.5 in every direction where the backfill gains

    @property
    def holds(self) -> bool:
        return self.above_old and self.half_gain


def verdicts(rows: Sequence[MetricRow]) -> list[Verdict]:
    at = _index(rows)
    out = []
    for m in upgrade_methods(rows):
        r1 = {d: at[(R1, f"test {d}", m)].value for d, _ in DIRECTIONS}
        old = {d: at[(R1, f"test {d}", OLD_OLD)].value for d, _ in DIRECTIONS}
        share = {d: at[(SHARE, f"test {d}", m)].value for d, _ in DIRECTIONS}
        out.append(
            Verdict(
                m,
                r1,
                share,
                at[(COMPAT, "test both", m)].value,
                all(r1[d] > old[d] for d in r1),
                all(math.isnan(s) or s >= 0.5 for s in share.values()),
            )
        )
    return out


def _shown(at: dict[tuple[str, str, str], MetricRow], metric: str, split: str, method: str) -> str:
    r = at[(metric, split, method)]
    if r.spread is None:
        return f"{r.value:.3f}"
    return f"{r.value:.3f} ± {r.spread:.3f}"


def _share(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def verdict_table(rows: Sequence[MetricRow]) -> list[str]:
    at = _index(rows)
    lines = [
        "| variant | new->old t2i R@1 | new->old i2t R@1 | share t2i | share i2t | "
        "compatible (seeds, both dirs) | above old->old | ≥ half the gain | goal |",
        "|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for v in verdicts(rows):
        lines.append(
            f"| {v.method} | {_shown(at, R1, 'test t2i', v.method)} | {_shown(at, R1, 'test i2t', v.method)} "
            f"| {_share(v.share['t2i'])} | {_share(v.share['i2t'])} | {v.compatible_seeds:.0%} "
            f"| {_yes(v.above_old)} | {_yes(v.half_gain)} | **{'holds' if v.holds else 'fails'}** |"
        )
    return lines


def _mean_r1(v: Verdict) -> float:
    return 0.5 * (v.r1["t2i"] + v.r1["i2t"])


def findings(rows: Sequence[MetricRow], grid: Grid, train_size: int) -> list[str]:
    """The headline comparisons the card asks for, in words and numbers."""
    at = _index(rows)
    vs = {v.method: v for v in verdicts(rows)}
    counts = pair_counts(grid, train_size)

    def r1(method: str) -> str:
        return f"t2i {at[(R1, 'test t2i', method)].value:.3f} / i2t {at[(R1, 'test i2t', method)].value:.3f}"

    xbt = [v for m, v in vs.items() if m.startswith("XBT ")]
    best = max(xbt, key=_mean_r1)
    out = [
        f"- Reference points (R@1): {OLD_OLD} {r1(OLD_OLD)}; {BACKFILL} {r1(BACKFILL)}.",
        f"- Best XBT variant by mean R@1: `{best.method}`, {r1(best.method)} "
        f"(backfill share t2i {_share(best.share['t2i'])}, i2t {_share(best.share['i2t'])}); goal "
        f"**{'holds' if best.holds else 'fails'}**.",
        f"- {PROCRUSTES}: {r1(PROCRUSTES)}; goal **{'holds' if vs[PROCRUSTES].holds else 'fails'}**.",
    ]
    for hidden in grid.hidden:
        po = " / ".join(f"N={n} {_mean_r1(vs[pairs_only_method(hidden, n)]):.3f}" for n in counts)
        bn = max(grid.noises, key=lambda s: _mean_r1(vs[text_pairs_method(hidden, s, counts[0])]))
        tp = " / ".join(
            f"N={n} {_mean_r1(vs[text_pairs_method(hidden, bn, n)]):.3f}" for n in counts
        )
        out.append(
            f"- {arch_name(hidden)} psi, mean of t2i and i2t R@1 -- pairs only: {po}; text stage "
            f"(σ={bn:g}) then pairs: {tp}; text only: {_mean_r1(vs[text_only_method(hidden, bn)]):.3f}."
        )
    for hidden in grid.hidden:
        sweep = "; ".join(
            f"σ={s:g}: t2i {vs[text_only_method(hidden, s)].r1['t2i']:.3f}, "
            f"i2t {vs[text_only_method(hidden, s)].r1['i2t']:.3f}"
            for s in grid.noises
        )
        out.append(f"- Noise sweep, {arch_name(hidden)} psi, text only (new->old R@1): {sweep}.")
    if len(grid.hidden) > 1:
        means = {
            h: np.mean([_mean_r1(v) for m, v in vs.items() if m.startswith(f"XBT {arch_name(h)} ")])
            for h in grid.hidden
        }
        wins = ", ".join(f"{arch_name(h)} {means[h]:.3f}" for h in grid.hidden)
        out.append(
            f"- Linear vs MLP psi, mean R@1 over all their XBT cells (every σ and N): {wins}."
        )
    return out


def describe_encoder(directory: Path, about: str) -> str:
    """`about`, plus what the directory's config (and training record, if any) says."""
    facts = []
    config = Path(directory) / "config.json"
    if config.is_file():
        cfg = json.loads(config.read_text())
        facts.append(
            f"config `{cfg.get('name')}`, embed_dim {cfg.get('embed_dim')}, "
            f"{cfg.get('text', {}).get('unfrozen_layers', 0)} trainable MiniLM layer(s)"
        )
    record = Path(directory) / "training.json"
    if record.is_file():
        rec = json.loads(record.read_text())
        facts.append(f"training record: {json.dumps(rec.get('config', {}), sort_keys=True)[:300]}")
    head = f"`{directory}`" + (f": {about}" if about else "")
    return f"{head} ({'; '.join(facts)})" if facts else head


@dataclass(frozen=True)
class StudyInfo:
    old: Path
    new: Path
    old_about: str
    new_about: str
    data: Path
    corpus: int
    drafted: int
    train_images: int
    test_images: int
    test_captions: int
    times: dict[str, float]


def notes(rows: Sequence[MetricRow], grid: Grid, info: StudyInfo, plots: Sequence[str]) -> str:
    x = grid.xbt
    seeds = ",".join(map(str, grid.seeds))
    lines = [
        f"**Goal: {GOAL}** (new->old R@1 above old->old in both directions, and at least half of "
        "the R@1 gain a full backfill gets in each direction where it gains at least "
        f"{MIN_GAIN}; where it gains less, the share is n/a: nothing to recover). Per variant below: "
        "`above old->old` is the compatibility criterion on the seed means, `compatible (seeds)` the "
        "share of seeds where it holds in both directions, `goal` both parts together.",
        "",
        "### Setup",
        "",
        "- old encoder (its embeddings are the stored gallery): "
        f"{describe_encoder(info.old, info.old_about)}.",
        f"- new encoder (the queries): {describe_encoder(info.new, info.new_about)}.",
        "- Both are stored models: no encoder is trained here; each is run once over every text and "
        "image, then only psi (the new -> old projection) is fitted.",
        f"- Data: `{info.data}`. Test split: {info.test_images} images, {info.test_captions} "
        f"captions (t2i: caption -> image; i2t: image -> any of its captions). Stage-2 pairs come "
        f"from the {info.train_images} train images (one caption each; N capped at the train size; "
        "a seed's smaller N is a subset of its larger N).",
        f"- Stage-1 text corpus: {info.corpus} distinct texts, {info.corpus - info.drafted} train "
        f"captions plus {info.drafted} drafted from the train scenes with `scenes.caption_pool`; "
        "captions that occur verbatim in the test split are left out. No images in stage 1.",
        f"- Grid: psi {', '.join(arch_name(h) for h in grid.hidden)}; σ ∈ "
        f"{{{', '.join(f'{s:g}' for s in grid.noises)}}}; N ∈ {{{', '.join(map(str, grid.pairs))}}}; "
        f"psi seeds {seeds} (mean ± std; a seed sets psi's init, the noise, the batches and the pair "
        f"draw, never the encoders). psi training: stage 1 {x.text_steps} steps, stage 2 "
        f"{x.pair_steps} steps (its loss keeps the noisy text term), batch {x.batch_size}, AdamW lr "
        f"{x.lr:g}, temperature {x.temperature:g}. Pairs-only psi: stage 2 alone from a fresh psi.",
        f"- {PROCRUSTES}: orthogonal map fitted on the corpus's (new, old) text embeddings "
        "(thin SVD of newᵀold, i.e. zero-padding when the dimensions differ); new queries and new "
        "images are mapped with it.",
        "- Out of scope: the card's stage 2 also trains LoRA adapters (r=4) on the new model's "
        "encoders; here the new model stays frozen and only psi is trained (XBT-lite, psi only).",
        "- Wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in info.times.items()) + ".",
        "",
        "### Findings",
        "",
        *findings(rows, grid, info.train_images),
        "",
        "### Per variant: does the goal hold?",
        "",
        *verdict_table(rows),
        "",
        *[f"![{Path(p).stem}]({p})" for p in plots],
        "",
        "### Caveats",
        "",
        f"- One data seed and a small gallery ({info.test_images} images): one test image is "
        f"{1 / max(info.test_images, 1):.3f} of i2t R@1, one caption {1 / max(info.test_captions, 1):.4f} "
        "of t2i R@1.",
        "- A linear psi between equal dimensions starts at the identity (`CompatibleProjection`), "
        "an MLP psi at a random init; the two encoders are trained independently, so the identity "
        "is no head start beyond a well-conditioned init.",
        "- The share of the backfill gain is undefined (nan) when new->new does not beat old->old; "
        "it is negative when new->old falls below old->old.",
        "- The tables below give every row; `R@1`/`R@5` rows of upgrade variants are new->old "
        "(new queries through the map against the old index), compared with old->old.",
    ]
    return "\n".join(lines)


def _value(rows: Sequence[MetricRow], metric: str, split: str, method: str) -> float:
    return _index(rows)[(metric, split, method)].value


def plot_pairs_curve(rows: Sequence[MetricRow], grid: Grid, train_size: int, path: Path) -> Path:
    """new->old R@1 against N: text stage then pairs (each psi's best σ at the smallest N) and
    pairs only, beside old->old, new->new and Procrustes."""
    counts = pair_counts(grid, train_size)
    vs = {v.method: v for v in verdicts(rows)}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, (short, _) in zip(axes, DIRECTIONS, strict=True):
        split = f"test {short}"
        for hidden in grid.hidden:
            bn = max(
                grid.noises, key=lambda s: _mean_r1(vs[text_pairs_method(hidden, s, counts[0])])
            )
            y = [_value(rows, R1, split, text_pairs_method(hidden, bn, n)) for n in counts]
            ax.plot(counts, y, "o-", label=f"{arch_name(hidden)} text (σ={bn:g}) + N pairs")
            y = [_value(rows, R1, split, pairs_only_method(hidden, n)) for n in counts]
            ax.plot(counts, y, "s--", label=f"{arch_name(hidden)} N pairs only")
        for method, style in ((OLD_OLD, "-"), (BACKFILL, "--"), (PROCRUSTES, ":")):
            ax.axhline(_value(rows, R1, split, method), color="k", ls=style, lw=1, label=method)
        ax.set_xscale("log")
        _label(ax, "image-caption pairs N", short)
    return _save(fig, axes, path)


def plot_noise(rows: Sequence[MetricRow], grid: Grid, train_size: int, path: Path) -> Path:
    """new->old R@1 against stage-1 σ: text only, and text then the largest N."""
    n = pair_counts(grid, train_size)[-1]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, (short, _) in zip(axes, DIRECTIONS, strict=True):
        split = f"test {short}"
        for hidden in grid.hidden:
            for name, method in (
                ("text only", lambda s, h=hidden: text_only_method(h, s)),
                (f"text + {n} pairs", lambda s, h=hidden: text_pairs_method(h, s, n)),
            ):
                y = [_value(rows, R1, split, method(s)) for s in grid.noises]
                ax.plot(grid.noises, y, "o-", label=f"{arch_name(hidden)} {name}")
        ax.axhline(_value(rows, R1, split, OLD_OLD), color="k", lw=1, label=OLD_OLD)
        ax.axhline(_value(rows, R1, split, BACKFILL), color="k", ls="--", lw=1, label=BACKFILL)
        _label(ax, "stage-1 noise σ", short)
    return _save(fig, axes, path)


def _label(ax: Axes, xlabel: str, short: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"R@1 {short}")
    ax.set_title(f"new->old {short}")


def _save(fig: Figure, axes: Sequence[Axes], path: Path) -> Path:
    axes[-1].legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


# ---------------------------------------------------------------- CLI


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(s) for s in text.split(",") if s.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(s) for s in text.split(",") if s.strip())


def study(
    old_dir: Path,
    new_dir: Path,
    data: Path,
    grid: Grid,
    corpus_size: int,
    out_dir: Path,
    name: str,
    about: tuple[str, str] = ("", ""),
    log: Callable[[str], None] = print,
) -> Path:
    """Load, embed once, run the grid, write the report. Returns: the markdown path."""
    times: dict[str, float] = {}
    t = time.perf_counter()
    old, new = load_encoder(old_dir), load_encoder(new_dir)
    times["load"] = time.perf_counter() - t
    emb = embed_all(old, new, data, corpus_size)
    times["embed"] = emb.seconds
    log(f"embedded {len(emb.corpus.old)} corpus texts etc. in {emb.seconds:.0f}s")
    t = time.perf_counter()
    rows = run_grid(emb, grid)
    times["psi grid"] = time.perf_counter() - t
    log(f"grid: {len(rows)} rows in {times['psi grid']:.0f}s")
    train_size = len(emb.train_image.old)
    plot_dir = Path(out_dir) / name
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots = [
        plot_pairs_curve(rows, grid, train_size, plot_dir / "pairs_curve.png"),
        plot_noise(rows, grid, train_size, plot_dir / "noise_sweep.png"),
    ]
    info = StudyInfo(
        old_dir,
        new_dir,
        about[0],
        about[1],
        data,
        len(emb.corpus.old),
        emb.drafted,
        train_size,
        len(emb.test_image.old),
        len(emb.test_text.old),
        times,
    )
    text = notes(rows, grid, info, [f"{name}/{p.name}" for p in plots])
    files = write_report(
        name,
        rows,
        out_dir,
        data_seed=Manifest.load(Path(data)).seed,
        title="XBT on two stored encoders: psi from the new encoder into the old one's space",
        notes=text,
    )
    return files.markdown


def main(
    old: Annotated[
        Path, typer.Option(help="the old (shipped) encoder directory: its gallery stays")
    ],
    new: Annotated[Path, typer.Option(help="the new encoder directory: its queries are projected")],
    data: Annotated[Path, typer.Option(help="a retrieval dataset")] = Path(
        ".cache/encoder-data/retrieval-small-seed0"
    ),
    seeds: Annotated[str, typer.Option(help="comma-separated psi seeds")] = "0,1,2",
    noises: Annotated[str, typer.Option(help="stage-1 noise sigmas")] = "0,0.05,0.1,0.2",
    pairs: Annotated[str, typer.Option(help="stage-2 pair counts N")] = "100,300,1000",
    hidden: Annotated[str, typer.Option(help="psi widths: 0 linear, >0 a 2-layer MLP")] = "0,256",
    corpus: Annotated[int, typer.Option(help="target stage-1 corpus size (texts)")] = 10000,
    text_steps: Annotated[int, typer.Option(help="stage-1 steps")] = XbtConfig.text_steps,
    pair_steps: Annotated[int, typer.Option(help="stage-2 steps")] = XbtConfig.pair_steps,
    old_about: Annotated[str, typer.Option(help="what the old encoder is, for the notes")] = "",
    new_about: Annotated[str, typer.Option(help="what the new encoder is, for the notes")] = "",
    threads: Annotated[int, typer.Option(help="torch CPU threads")] = 1,
    out_dir: Annotated[Path, typer.Option(help="where the report goes")] = Path("reports"),
    name: Annotated[str, typer.Option(help="report file stem")] = "xbt",
) -> None:
    """Fit psi over the XBT grid between two stored encoders and write the report."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    grid = Grid(
        seeds=_ints(seeds),
        noises=_floats(noises),
        pairs=_ints(pairs),
        hidden=_ints(hidden),
        xbt=XbtConfig(text_steps=text_steps, pair_steps=pair_steps),
    )
    md = study(old, new, data, grid, corpus, out_dir, name, (old_about, new_about))
    print(f"wrote {md} and {md.with_suffix('.json')} in {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    typer.run(main)
