"""The encoder's held-out evaluation suite: one trained model -> R@1/5/10 both directions on test,
test_compositional and binding pairs (global and FILIP scorers), binding pair accuracy, object
recognition (shape told the colour, colour told the shape), relation probes (left/right,
above/below, bigger/smaller), as report rows beside their baselines."""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np
import torch

from concord.models.dual_encoder import DualEncoder, Encoded
from concord.models.preprocess import TextTokenizer
from pipelines.data.vocab import COLOURS, SHAPES, article
from pipelines.encoder.data import BindingPairs, ImageTextSet, SceneObjects
from pipelines.encoder.embed import TextStateCache, embed_images, embed_texts
from pipelines.encoder.evaluate import (
    Retrieval,
    Scores,
    binding_pair_accuracy,
    filip_scores,
    global_scores,
    retrieval,
)
from pipelines.encoder.relations import FRONTED, PROBE_FRAMES, PROBE_WORDS, RelationProbes
from pipelines.encoder.wording import FRAMES
from pipelines.evaluate.report import MetricRow

KS = (1, 5, 10)
CHANCE = "chance"


@dataclass(frozen=True)
class EvalSets:
    """The held-out data every model is measured on."""

    test: ImageTextSet
    test_compositional: ImageTextSet
    binding: BindingPairs
    unseen_wording: ImageTextSet | None = None  # test images, captions in frames never trained on
    objects: SceneObjects | None = None  # the test scenes' objects (`test` images, same order)
    relations: RelationProbes | None = None  # the test scenes' relation probes (same order)

    def retrieval_splits(self) -> dict[str, ImageTextSet]:
        splits = {
            "test": self.test,
            "test_compositional": self.test_compositional,
            "binding": self.binding.as_retrieval(),
        }
        if self.unseen_wording is not None:
            splits["test_unseen_wording"] = self.unseen_wording
        return splits


def _chance_r(k: int, candidates: int, relevant: int) -> float:
    """Probability that a random ranking puts one of `relevant` items in the top k."""
    k = min(k, candidates)
    return 1.0 - comb(candidates - relevant, k) / comb(candidates, k)


def chance_rows(sets: EvalSets) -> list[MetricRow]:
    """What a random scorer gets, the floor every retrieval row is read against."""
    rows = []
    for split, data in sets.retrieval_splits().items():
        n_img, caps = len(data), len(data.captions[0])
        n_txt = sum(len(c) for c in data.captions)
        for k in KS:
            rows.append(MetricRow(f"R@{k}", f"{split} t2i", CHANCE, _chance_r(k, n_img, 1)))
            rows.append(MetricRow(f"R@{k}", f"{split} i2t", CHANCE, _chance_r(k, n_txt, caps)))
    rows += [MetricRow("pair accuracy", f"binding {d}", CHANCE, 0.5) for d in ("t2i", "i2t")]
    if sets.objects is not None:
        for name, vary in OBJECT_QUERIES:
            cands = [
                len(_object_candidates(sets.objects, q, vary)) for q in range(len(sets.objects))
            ]
            rows.append(MetricRow("accuracy", name, CHANCE, float(np.mean(1.0 / np.array(cands)))))
    if sets.relations is not None:
        rows += [
            MetricRow("pair accuracy", split, CHANCE, 0.5) for split in RELATION_SPLITS.values()
        ]
    return rows


# Each probed relation's row: the image against "X left of Y" and its two foils, per frame and
# kind ("test relations: left/right" is the subject-first frame the relation term trains on).
RELATION_SPLITS = {
    (frame, p): f"test relations{'' if frame == 'subject' else ', ' + frame}: {'/'.join(words)}"
    for frame in PROBE_FRAMES
    for p, (words, *_) in PROBE_WORDS.items()
    if frame == "subject" or p in FRONTED
}


def relation_rows(
    model: DualEncoder,
    tokenizer: TextTokenizer,
    image: Encoded,
    relations: RelationProbes,
    method: str,
    cache: TextStateCache | None = None,
) -> list[MetricRow]:
    """Does the pooled image know how its objects stand? Each probe ("The red circle is to the
    left of the blue square") is scored against its converse-word foil and its swapped-objects
    foil; pair accuracy is how often the probe wins, over both foils, per frame and kind.

    Args:
        image: the `test` images encoded (pooled rows in `relations.image` order of images).
    """
    texts = sorted({t for p in relations.probes for t in (p.text, *p.foils)})
    column = {t: j for j, t in enumerate(texts)}
    text = embed_texts(model, tokenizer, texts, cache=cache).pooled.float()
    sim = image.pooled[torch.as_tensor(relations.image)].float() @ text.T
    wins: dict[tuple[str, str], list[bool]] = {k: [] for k in RELATION_SPLITS}
    for q, probe in enumerate(relations.probes):
        true = float(sim[q, column[probe.text]])
        wins[probe.frame, probe.predicate] += [true > float(sim[q, column[f]]) for f in probe.foils]
    return [
        MetricRow("pair accuracy", RELATION_SPLITS[p], method, float(np.mean(w)), CHANCE)
        for p, w in wins.items()
        if w
    ]


# (row split, the attribute a query varies): "a red circle" vs "a red square", "a red star", ...
OBJECT_QUERIES = (("test objects: shape told the colour", "shape"),
                  ("test objects: colour told the shape", "colour"))  # fmt: skip


def _object_candidates(objects: SceneObjects, q: int, vary: str) -> list[tuple[str, str]]:
    """Object q's (colour, shape) and every pair differing from it in `vary` that no object of its
    scene has (naming another object would not be wrong)."""
    c, s = objects.colour[q], objects.shape[q]
    pairs = [(c, x) for x in SHAPES] if vary == "shape" else [(x, s) for x in COLOURS]
    return [p for p in pairs if p == (c, s) or p not in objects.present[q]]


def object_rows(
    model: DualEncoder,
    tokenizer: TextTokenizer,
    image: Encoded,
    objects: SceneObjects,
    method: str,
    cache: TextStateCache | None = None,
) -> list[MetricRow]:
    """Does the model see each object's shape and colour? For every object, its image is scored
    against "a red circle" and the same phrase with each other shape (told the colour), then
    with each other colour (told the shape); accuracy is how often its own phrase wins.

    Args:
        image: the `test` images encoded (pooled rows in `objects.image` order of images).
    """
    pairs = [(c, x) for c in COLOURS for x in SHAPES]
    text = embed_texts(model, tokenizer, [f"{article(c)} {c} {x}" for c, x in pairs], cache=cache)
    column = {p: j for j, p in enumerate(pairs)}
    sim = (image.pooled[torch.as_tensor(objects.image)].float() @ text.pooled.float().T).numpy()
    rows = []
    for name, vary in OBJECT_QUERIES:
        hits = []
        for q in range(len(objects)):
            cands = _object_candidates(objects, q, vary)
            best = cands[int(sim[q, [column[p] for p in cands]].argmax())]
            hits.append(best == (objects.colour[q], objects.shape[q]))
        rows.append(MetricRow("accuracy", name, method, float(np.mean(hits)), CHANCE))
    return rows


def retrieval_rows(r: Retrieval, split: str, method: str, baseline: str | None) -> list[MetricRow]:
    rows = []
    for direction, res in (("t2i", r.text_to_image), ("i2t", r.image_to_text)):
        for k in KS:
            rows.append(
                MetricRow(f"R@{k}", f"{split} {direction}", method, getattr(res, f"r{k}"), baseline)
            )
    return rows


def evaluate_model(
    model: DualEncoder,
    tokenizer: TextTokenizer,
    sets: EvalSets,
    name: str,
    baseline: str | None = CHANCE,
    filip: bool = False,
    filip_baseline: str | None = None,
    cache: TextStateCache | None = None,
) -> list[MetricRow]:
    """Rows for one model.

    Args:
        name: method name of its global (pooled cosine) rows.
        baseline: the method its global rows are compared with.
        filip: also score with FILIP late interaction, as method `filip_name(name)`.
        filip_baseline: what the FILIP rows are compared with (default: this model's global rows).
        cache: frozen text-tower outputs (frozen models only).
    """
    model.eval()
    use_cache = cache if model.config.text.unfrozen_layers == 0 else None
    fname = filip_name(name)
    rows: list[MetricRow] = []
    for split, data in sets.retrieval_splits().items():
        texts, owner = data.flat_captions()
        image = embed_images(model, data.pixels)
        text = embed_texts(model, tokenizer, texts, cache=use_cache)
        scorers: list[tuple[str, str | None, Scores]] = [
            (name, baseline, global_scores(text, image))
        ]
        if filip:
            scorers.append((fname, filip_baseline or name, filip_scores(text, image)))
        for method, base, scores in scorers:
            rows += retrieval_rows(retrieval(scores, owner), split, method, base)
            if split == "test_unseen_wording":
                rows += frame_rows(scores, owner, data, method)
            if split == "binding":
                t2i, i2t = binding_pair_accuracy(scores)
                pb = CHANCE if base == baseline and method == name else base
                rows += [
                    MetricRow("pair accuracy", "binding t2i", method, t2i, pb),
                    MetricRow("pair accuracy", "binding i2t", method, i2t, pb),
                ]
        if split == "test" and sets.objects is not None:
            rows += object_rows(model, tokenizer, image, sets.objects, name, use_cache)
        if split == "test" and sets.relations is not None:
            rows += relation_rows(model, tokenizer, image, sets.relations, name, use_cache)
    return rows


def frame_rows(
    scores: Scores, owner: np.ndarray, data: ImageTextSet, method: str
) -> list[MetricRow]:
    """R@1 t2i of each unseen-wording frame alone (an image's k-th caption is frame k), so a
    frame the model cannot read shows instead of being averaged in."""
    if any(len(c) != len(FRAMES) for c in data.captions):
        return []  # not laid out one caption per frame
    t = np.asarray(scores.text_to_image)
    hit = t.argmax(axis=1) == owner
    return [
        MetricRow(
            "R@1", f"test_unseen_wording[{frame}] t2i", method, float(hit[k :: len(FRAMES)].mean())
        )
        for k, frame in enumerate(FRAMES)
    ]


def filip_name(name: str) -> str:
    """The method name of a model's FILIP-scored rows."""
    return f"{name.removesuffix(' (global)')} (FILIP scoring)"


def r1(rows: list[MetricRow], split: str, method: str) -> float:
    """The R@1 value of a row (NaN when absent)."""
    for r in rows:
        if r.metric == "R@1" and r.split == split and r.method == method:
            return r.value
    return float(np.nan)
