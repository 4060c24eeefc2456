"""XBT on two trained encoders: embed the text corpus, a few pairs and the test split under the old
and the new model, fit psi three ways (text only, text then pairs, pairs only) and return report rows."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.encoder.data import ImageTextSet, load_retrieval
from pipelines.encoder.xbt import (
    BACKFILL,
    DIRECTIONS,
    OLD_OLD,
    XbtConfig,
    XbtResult,
    backfill_share,
    evaluate_upgrade,
    make_projection,
    retrieval_rows,
    train_pair_stage,
    train_text_stage,
)
from pipelines.encoder.xbt_study import SHARE, embed_image_spaces, embed_text_spaces
from pipelines.evaluate.report import MetricRow
from pipelines.train_encoder import TrainResult

PREFIX = "XBT "  # the encoder report's metric names: "XBT R@1", "XBT share of backfill R@1 gain"


@dataclass(frozen=True)
class XbtRunConfig:
    pairs: int = 100  # image-caption pairs for stage 2 (and the pairs-only baseline)
    seed: int = 0
    xbt: XbtConfig = field(default_factory=XbtConfig)


def _share_rows(res: XbtResult, method: str) -> list[MetricRow]:
    return [
        MetricRow(f"{PREFIX}{SHARE}", f"test {short}", method, backfill_share(res, attr))
        for short, attr in DIRECTIONS
    ]


def run_xbt(
    old: TrainResult,
    new: TrainResult,
    retrieval_root: Path,
    test: ImageTextSet,
    cfg: XbtRunConfig,
) -> tuple[list[MetricRow], str]:
    """Upgrade `old` -> `new` without backfill. Returns: (rows, a markdown bullet on the outcome)."""
    for r in (old, new):
        r.model.eval()
    size = new.model.config.image.image_size
    train_set = load_retrieval(retrieval_root, "train", size)
    corpus = [c for caps in train_set.captions for c in caps]  # text only: no images needed
    old_enc, new_enc = (old.model, old.tokenizer), (new.model, new.tokenizer)
    text = embed_text_spaces(old_enc, new_enc, corpus)
    rng = np.random.default_rng(cfg.seed)
    pick = rng.choice(len(train_set), size=min(cfg.pairs, len(train_set)), replace=False)
    pairs = ImageTextSet(
        tuple(train_set.ids[i] for i in pick),
        train_set.pixels[pick],
        tuple(train_set.captions[i] for i in pick),
    )
    pair_caps = [caps[int(rng.integers(len(caps)))] for caps in pairs.captions]
    pair_img = embed_image_spaces(old_enc, new_enc, pairs.pixels)
    pair_txt = embed_text_spaces(old_enc, new_enc, pair_caps)
    test_texts, owner = test.flat_captions()
    test_img = embed_image_spaces(old_enc, new_enc, test.pixels)
    test_txt = embed_text_spaces(old_enc, new_enc, test_texts)

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
    upgrades = ((res_pairs, m_pairs), (res_text, m_text), (res_both, m_both))
    rows = retrieval_rows(res_text.old_old, OLD_OLD, None, PREFIX)
    rows += retrieval_rows(res_text.new_new, BACKFILL, OLD_OLD, PREFIX)
    for res, m in upgrades:
        rows += retrieval_rows(res.new_old, m, OLD_OLD, PREFIX)
    for res, m in upgrades:
        rows += _share_rows(res, m)
    oo, nn, xb = res_both.old_old, res_both.new_new, res_both.new_old
    ok = xb.text_to_image.r1 > oo.text_to_image.r1 and xb.image_to_text.r1 > oo.image_to_text.r1
    share = backfill_share(res_both, "text_to_image")
    note = (
        f"- XBT compatibility (new->old R@1 above old->old in both directions; text+pairs psi): "
        f"t2i {xb.text_to_image.r1:.3f} vs {oo.text_to_image.r1:.3f}, i2t {xb.image_to_text.r1:.3f} vs "
        f"{oo.image_to_text.r1:.3f}: {'**holds**' if ok else '**does not hold**'}; "
        f"it recovers {'n/a (no gain)' if math.isnan(share) else f'{share:.0%}'} of "
        f"the backfill's t2i R@1 gain (backfill {nn.text_to_image.r1:.3f}). Text corpus: {len(corpus)} train "
        f"captions; {n} image pairs."
    )
    return rows, note
