"""Training data for the encoder recipe, drawn from the scenes behind the images: every train
scene with a rendered twin that differs in one binding or relation (a hard image negative in the
same batch), the binding train pairs, and per image a pool of captions, each with its foils (the
caption with one attribute, object, relation or count made false, or two objects' colours or
shapes swapped: NegCLIP's hard text negatives, Yuksekgonul et al. 2023)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pipelines.data.captions import Draft, Slot, draft_captions, replace_slot
from pipelines.data.misalign import contradicted, make_variants
from pipelines.data.render import render
from pipelines.data.scene import Scene, compute_relations, held_out_combos, jitter_rgb
from pipelines.data.store import read_jsonl
from pipelines.data.vocab import COLOURS, SHAPES, article
from pipelines.encoder.data import ImageTextSet, load_pixels
from pipelines.encoder.paraphrase import Rewording
from pipelines.encoder.relations import PROBE_FRAMES, Probe, caption_probes, relation_probes

TWIN_KINDS = ("colour swap", "shape swap", "mirror")


@dataclass(frozen=True)
class CaptionWithFoils:
    text: str
    foils: tuple[str, ...]  # false of the image, each differing from `text` in one place


@dataclass(frozen=True)
class ObjectPhrases:
    """Where each image's named objects are and which phrase names each: what the grounding
    loss (`concord.models.losses.grounding_loss`) trains on."""

    phrases: tuple[str, ...]  # "a red circle" for every colour-shape pair training may show
    xy: torch.Tensor  # (N, K, 2) float: object centres, fractions of the image side (x, y)
    label: torch.Tensor  # (N, K) int64 index into `phrases`; -1 pads (and unnamed objects)

    def cells(self, rows: np.ndarray, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The token index under each object's centre on a `grid` x `grid` token map (row-major,
        as the image tower flattens it) and its phrase label, for the images `rows`.

        Returns:
            (cells (B, K), labels (B, K)), both int64, -1 where there is no object.
        """
        index = torch.as_tensor(rows, dtype=torch.long)
        xy, label = self.xy[index], self.label[index]
        col, row = (xy * grid).long().clamp(0, grid - 1).unbind(-1)
        cells = torch.where(label >= 0, row * grid + col, torch.full_like(label, -1))
        return cells, label


def object_phrase(colour: str, shape: str) -> str:
    """How grounding names one object: "a red circle", "an orange square"."""
    return f"{article(colour)} {colour} {shape}"


def object_phrases(scenes: Sequence[Scene], held: frozenset) -> ObjectPhrases:
    """Every scene's objects with their phrases. The vocabulary leaves out the held-out
    colour-shape pairs (the compositional test split's), so training never names them, not even
    as a negative; blobs (no name) and any held-out pair get -1."""
    phrases = tuple(object_phrase(c, s) for c in COLOURS for s in SHAPES if (c, s) not in held)
    index = {p: i for i, p in enumerate(phrases)}
    k = max((len(s.objects) for s in scenes), default=0)
    xy = torch.zeros(len(scenes), k, 2)
    label = torch.full((len(scenes), k), -1, dtype=torch.long)
    for i, scene in enumerate(scenes):
        for j, o in enumerate(scene.objects):
            xy[i, j] = torch.tensor([o.x, o.y])
            label[i, j] = index.get(object_phrase(o.colour, o.shape), -1)
    return ObjectPhrases(phrases, xy, label)


@dataclass(frozen=True)
class SceneTrainingSet:
    """Images with caption pools; `groups` are images that go into one batch together."""

    pixels: torch.Tensor  # (N, 3, S, S) float in [0, 1]
    pools: tuple[tuple[CaptionWithFoils, ...], ...]  # per image, at least one caption
    groups: tuple[tuple[int, ...], ...]  # every image once: an image with its twins, or alone
    objects: ObjectPhrases | None = None  # None: no scenes behind the images (captions only)
    relations: tuple[tuple[Probe, ...], ...] = ()  # per image its relation_probes

    def __len__(self) -> int:
        return len(self.pools)

    @staticmethod
    def from_captions(data: ImageTextSet) -> SceneTrainingSet:
        """A caption-only set: each image alone, its dataset captions without foils."""
        pools = tuple(tuple(CaptionWithFoils(c, ()) for c in caps) for caps in data.captions)
        return SceneTrainingSet(data.pixels, pools, tuple((i,) for i in range(len(data))))

    def texts(self) -> list[str]:
        """Every caption and foil once (what a text-state cache must hold)."""
        out = {c.text for pool in self.pools for c in pool}
        for pool in (*self.pools, *self.relations):
            out.update(c.text for c in pool)
            out.update(f for c in pool for f in c.foils)
        return sorted(out)

    def order(self, rng: np.random.Generator) -> np.ndarray:
        """An epoch's image order: the groups shuffled, each group's images adjacent."""
        return np.array([i for g in rng.permutation(len(self.groups)) for i in self.groups[g]])

    def draw(self, rng: np.random.Generator, foils: int) -> tuple[list[str], list[tuple[str, ...]]]:
        """One caption per image and up to `foils` of its foils, drawn afresh each epoch."""
        captions, chosen = [], []
        for pool in self.pools:
            c = pool[int(rng.integers(len(pool)))]
            captions.append(c.text)
            k = min(foils, len(c.foils))
            picks = rng.choice(len(c.foils), k, replace=False) if k else []
            chosen.append(tuple(c.foils[int(j)] for j in picks))
        return captions, chosen

    def draw_relations(
        self, rng: np.random.Generator, captions: Sequence[str]
    ) -> tuple[list[str], list[tuple[str, ...]]]:
        """One relation probe per image with both its foils, drawn afresh each epoch; an image
        with none keeps its caption from `captions` and no foils (the term then skips it)."""
        texts, foils = list(captions), [()] * len(captions)
        for i, probes in enumerate(self.relations):
            if probes:
                probe = probes[int(rng.integers(len(probes)))]
                texts[i], foils[i] = probe.text, probe.foils
        return texts, foils


def swap_foils(draft: Draft, scene: Scene) -> list[str]:
    """The caption with the colours (or the shapes) of two of its noun phrases swapped, where
    the scene makes the result false: "a red circle and a blue square" -> "a blue circle and a
    red square". The words are the caption's own; only their binding changes."""
    out = []
    for kind in ("colour", "shape"):
        slots = [
            (k, p)
            for k, p in enumerate(draft.pieces)
            if isinstance(p, Slot) and p.kind == kind and p.np >= 0
        ]
        for a in range(len(slots)):
            for b in range(a + 1, len(slots)):
                (i, x), (j, y) = slots[a], slots[b]
                if x.np == y.np or x.value == y.value:
                    continue
                nx, ny = replace(x, value=y.value), replace(y, value=x.value)
                if contradicted(draft, i, nx, scene) or contradicted(draft, j, ny, scene):
                    swapped = replace_slot(replace_slot(draft, i, nx), j, ny)
                    out.append(swapped.render().text)
    return out


def caption_pool(
    scene: Scene, rng: np.random.Generator, rounds: int, reword: float = 0.0
) -> list[CaptionWithFoils]:
    """`rounds` drafts of every caption style, each with its one-word foils and swap foils; a
    `reword` share of them reworded (synonyms, word order, frames), foils alike."""
    pool = []
    for _ in range(rounds):
        for draft in draft_captions(scene, rng):
            text = draft.render().text
            foils = [v.text for v in make_variants(draft, scene, rng)] + swap_foils(draft, scene)
            if reword and rng.uniform() < reword:
                rewording = Rewording.draw(rng)
                text, foils = rewording.apply(text), [rewording.apply(f) for f in foils]
            pool.append(CaptionWithFoils(text, tuple(dict.fromkeys(f for f in foils if f != text))))
    return pool


def twin_scene(
    scene: Scene, rng: np.random.Generator, held: frozenset, kinds: tuple[str, ...] = TWIN_KINDS
) -> Scene | None:
    """A scene differing from `scene` in one binding or in its left-right layout (one of
    `kinds`), or None when no twin keeps clear of the held-out colour-shape combinations."""
    objs = list(scene.objects)
    for kind in rng.permutation(kinds):
        new = list(objs)
        if kind == "mirror":
            new = [replace(o, x=1.0 - o.x) for o in objs]
            if not any(r.predicate == "left_of" for r in scene.relations):
                continue
        elif len(objs) == 1:
            if kind != "colour swap":
                continue
            colour = str(rng.choice([c for c in COLOURS if c != objs[0].colour]))
            new = [replace(objs[0], colour=colour, rgb=jitter_rgb(rng, COLOURS[colour]))]
        else:
            field = "colour" if kind == "colour swap" else "shape"
            pairs = [
                (a, b)
                for a in range(len(objs))
                for b in range(a + 1, len(objs))
                if getattr(objs[a], field) != getattr(objs[b], field)
                and "blob" not in (objs[a].shape, objs[b].shape)
            ]
            if not pairs:
                continue
            a, b = pairs[int(rng.integers(len(pairs)))]
            if field == "colour":
                new[a] = replace(objs[a], colour=objs[b].colour, rgb=objs[b].rgb)
                new[b] = replace(objs[b], colour=objs[a].colour, rgb=objs[a].rgb)
            else:
                new[a] = replace(objs[a], shape=objs[b].shape)
                new[b] = replace(objs[b], shape=objs[a].shape)
        if any((o.colour, o.shape) in held for o in new):
            continue
        return Scene(tuple(new), compute_relations(new), scene.background, scene.noise_seed)
    return None


def shape_twin(scene: Scene, rng: np.random.Generator, held: frozenset) -> Scene | None:
    """`scene` with one object's shape changed (position, size and colour kept): a hard image
    negative that only shape tells apart. Swap twins keep the scene's bag of shapes, so they ask
    for shape only once binding is learnt; this one asks for shape itself. None when no object
    can change (blobs have no name; held-out colour-shape combinations stay out)."""
    objs = list(scene.objects)
    for a in rng.permutation(len(objs)):
        obj = objs[int(a)]
        if obj.shape == "blob":
            continue
        shapes = [s for s in SHAPES if s != obj.shape and (obj.colour, s) not in held]
        if not shapes:
            continue
        new = list(objs)
        new[int(a)] = replace(obj, shape=str(rng.choice(shapes)))
        return Scene(tuple(new), compute_relations(new), scene.background, scene.noise_seed)
    return None


def build_training_set(
    retrieval_root: Path,
    binding_root: Path | None,
    image_size: int,
    seed: int,
    rounds: int = 2,
    twins: bool = True,
    limit: int = 0,
    reword: float = 0.0,
    shape_twins: bool = False,
    relations: bool = False,
    fronted: bool = False,
    mirror_twins: bool = True,
    caption_relations: int = 0,
    caption_swaps: bool = False,
) -> SceneTrainingSet:
    """The recipe's training set.

    Args:
        retrieval_root: a `retrieval` dataset; its train split's images and scenes.
        binding_root: a `binding` dataset whose train pairs join (None: none).
        rounds: caption drafts per style and image (5 styles: 5 * rounds captions per image).
        twins: render a twin for every train scene that has one.
        limit: only the first `limit` retrieval train images (0: all).
        reword: share of captions reworded with training-only synonyms and frames (paraphrase).
        shape_twins: also render a `shape_twin` for every train scene, in the same group.
        relations: give every image its `relation_probes` (drawn after the pools, so the random
            stream of a set without them is unchanged).
        fronted: the probes also in the fronted frame ("Above the Y there is a X").
        mirror_twins: a twin may be the scene mirrored left to right (else only binding swaps).
        caption_relations: up to this many `caption_probes` per image join its relation probes
            (the caption grammar's relational sentences, drawn from a stream of their own).
        caption_swaps: those probes' foils are one clause's word flipped and its objects swapped.
    """
    rng = np.random.default_rng([seed, 15])
    held = held_out_combos(_manifest_seed(retrieval_root))
    recs = read_jsonl(Path(retrieval_root) / "train.jsonl")
    recs = recs[:limit] if limit > 0 else recs
    scenes = [Scene.from_dict(r["scene"]) for r in recs]
    pixels = [load_pixels(retrieval_root, [r["image"] for r in recs], image_size)]
    groups: list[tuple[int, ...]] = []
    twin_kinds = TWIN_KINDS if mirror_twins else tuple(k for k in TWIN_KINDS if k != "mirror")
    n = len(scenes)
    all_scenes = list(scenes)
    for i, scene in enumerate(scenes):
        group = [i]
        twin = twin_scene(scene, rng, held, twin_kinds) if twins else None
        other = shape_twin(scene, rng, held) if shape_twins else None
        for made in (twin, other):
            if made is not None:
                group.append(len(all_scenes))
                all_scenes.append(made)
        groups.append(tuple(group))
    if len(all_scenes) > n:
        pixels.append(_render(all_scenes[n:], image_size))
    if binding_root is not None:
        pairs = read_jsonl(Path(binding_root) / "train.jsonl")
        start = len(all_scenes)
        for k, r in enumerate(pairs):
            all_scenes += [Scene.from_dict(r["scene_a"]), Scene.from_dict(r["scene_b"])]
            groups.append((start + 2 * k, start + 2 * k + 1))
        rels = [x for r in pairs for x in (r["image_a"], r["image_b"])]
        pixels.append(load_pixels(binding_root, rels, image_size))
    pools = tuple(tuple(caption_pool(s, rng, rounds, reword)) for s in all_scenes)
    objects = object_phrases(all_scenes, held)
    frames = PROBE_FRAMES if fronted else ("subject",)
    probes = tuple(relation_probes(s, held, frames) for s in all_scenes) if relations else ()
    if relations and caption_relations:
        worded = np.random.default_rng([seed, 17])
        probes = tuple(p + caption_probes(s, worded, caption_relations, caption_swaps)
                       for p, s in zip(probes, all_scenes, strict=True))  # fmt: skip
    return SceneTrainingSet(torch.cat(pixels), pools, tuple(groups), objects, probes)


def _render(scenes: Sequence[Scene], image_size: int) -> torch.Tensor:
    from PIL import Image

    from concord.models.preprocess import images_to_tensor  # what the service runs

    return images_to_tensor(
        [Image.fromarray(render(s, image_size).image) for s in scenes], image_size
    )


def _manifest_seed(root: Path) -> int:
    from pipelines.data.store import Manifest

    return Manifest.load(Path(root)).seed
