"""XBT on two trained encoders: embed the text corpus, a few pairs and the test split under the old
and the new model, fit psi three ways (text only, text then pairs, pairs only) and return report rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.encoder.data import ImageTextSet, load_retrieval
from pipelines.encoder.embed import TextStateCache, embed_images, embed_texts
from pipelines.encoder.evaluate import Retrieval
from pipelines.encoder.xbt import (
    Spaces,
    XbtConfig,
    evaluate_upgrade,
    make_projection,
    train_pair_stage,
    train_text_stage,
)
from pipelines.evaluate.report import MetricRow
from pipelines.train_encoder import TrainResult

OLD_OLD, BACKFILL = "old->old", "new->new (full backfill)"


@dataclass(frozen=True)
class XbtRunConfig:
    pairs: int = 100  # image-caption pairs for stage 2 (and the pairs-only baseline)
    seed: int = 0
    xbt: XbtConfig = field(default_factory=XbtConfig)


def _texts(res: TrainResult, texts: list[str], cache: TextStateCache):
    c = cache if res.model.config.text.unfrozen_layers == 0 else None
    return embed_texts(res.model, res.tokenizer, texts, cache=c).pooled


def _spaces_text(
    old: TrainResult, new: TrainResult, texts: list[str], cache: TextStateCache
) -> Spaces:
    return Spaces(_texts(old, texts, cache), _texts(new, texts, cache))


def _spaces_image(old: TrainResult, new: TrainResult, data: ImageTextSet) -> Spaces:
    return Spaces(
        embed_images(old.model, data.pixels).pooled, embed_images(new.model, data.pixels).pooled
    )


def _rows(r: Retrieval, method: str, baseline: str | None) -> list[MetricRow]:
    out = []
    for d, res in (("t2i", r.text_to_image), ("i2t", r.image_to_text)):
        out += [
            MetricRow("XBT R@1", f"test {d}", method, res.r1, baseline),
            MetricRow("XBT R@5", f"test {d}", method, res.r5, baseline),
        ]
    return out


def _share(
    new_old: Retrieval, old_old: Retrieval, new_new: Retrieval, method: str
) -> list[MetricRow]:
    out = []
    for d in ("text_to_image", "image_to_text"):
        gain = getattr(new_new, d).r1 - getattr(old_old, d).r1
        got = getattr(new_old, d).r1 - getattr(old_old, d).r1
        share = got / gain if abs(gain) > 1e-9 else float("nan")
        out.append(
            MetricRow(
                "XBT share of backfill R@1 gain",
                "test " + ("t2i" if d[0] == "t" else "i2t"),
                method,
                share,
            )
        )
    return out


def run_xbt(
    old: TrainResult,
    new: TrainResult,
    retrieval_root: Path,
    test: ImageTextSet,
    cache: TextStateCache,
    cfg: XbtRunConfig,
) -> tuple[list[MetricRow], str]:
    """Upgrade `old` -> `new` without backfill. Returns: (rows, a markdown bullet on the outcome)."""
    for r in (old, new):
        r.model.eval()
    size = new.model.config.image.image_size
    train_set = load_retrieval(retrieval_root, "train", size)
    corpus = [c for caps in train_set.captions for c in caps]  # text only: no images needed
    text = _spaces_text(old, new, corpus, cache)
    rng = np.random.default_rng(cfg.seed)
    pick = rng.choice(len(train_set), size=min(cfg.pairs, len(train_set)), replace=False)
    pairs = ImageTextSet(
        tuple(train_set.ids[i] for i in pick),
        train_set.pixels[pick],
        tuple(train_set.captions[i] for i in pick),
    )
    pair_caps = [caps[int(rng.integers(len(caps)))] for caps in pairs.captions]
    pair_img, pair_txt = _spaces_image(old, new, pairs), _spaces_text(old, new, pair_caps, cache)
    test_texts, owner = test.flat_captions()
    test_img, test_txt = _spaces_image(old, new, test), _spaces_text(old, new, test_texts, cache)

    new_dim, old_dim = new.model.config.embed_dim, old.model.config.embed_dim
    psi_text = make_projection(new_dim, old_dim, cfg.seed)
    train_text_stage(psi_text, text, cfg.xbt)
    res_text = evaluate_upgrade(test_img, test_txt, owner, psi_text)
    psi_both = make_projection(new_dim, old_dim, cfg.seed)
    psi_both.load_state_dict(psi_text.state_dict())
    train_pair_stage(psi_both, text, pair_img, pair_txt, cfg.xbt)
    res_both = evaluate_upgrade(test_img, test_txt, owner, psi_both)
    psi_pairs = make_projection(new_dim, old_dim, cfg.seed)
    train_pair_stage(psi_pairs, None, pair_img, pair_txt, cfg.xbt)
    res_pairs = evaluate_upgrade(test_img, test_txt, owner, psi_pairs)

    n = len(pairs)
    m_text, m_both, m_pairs = (
        "XBT text only: new->old",
        f"XBT text + {n} pairs: new->old",
        f"psi on {n} pairs only",
    )
    rows = _rows(res_text.old_old, OLD_OLD, None) + _rows(res_text.new_new, BACKFILL, OLD_OLD)
    rows += _rows(res_pairs.new_old, m_pairs, OLD_OLD) + _rows(res_text.new_old, m_text, OLD_OLD)
    rows += _rows(res_both.new_old, m_both, OLD_OLD)
    for res, m in ((res_pairs, m_pairs), (res_text, m_text), (res_both, m_both)):
        rows += _share(res.new_old, res.old_old, res.new_new, m)
    oo, nn, xb = res_both.old_old, res_both.new_new, res_both.new_old
    ok = xb.text_to_image.r1 > oo.text_to_image.r1 and xb.image_to_text.r1 > oo.image_to_text.r1
    gain = nn.text_to_image.r1 - oo.text_to_image.r1
    share = (xb.text_to_image.r1 - oo.text_to_image.r1) / gain if abs(gain) > 1e-9 else float("nan")
    note = (
        f"- XBT compatibility (new->old R@1 above old->old in both directions; text+pairs psi): "
        f"t2i {xb.text_to_image.r1:.3f} vs {oo.text_to_image.r1:.3f}, i2t {xb.image_to_text.r1:.3f} vs "
        f"{oo.image_to_text.r1:.3f}: {'**holds**' if ok else '**does not hold**'}; "
        f"it recovers {share:.0%} of "
        f"the backfill's t2i R@1 gain (backfill {nn.text_to_image.r1:.3f}). Text corpus: {len(corpus)} train "
        f"captions; {n} image pairs."
    )
    return rows, note
