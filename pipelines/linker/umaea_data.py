"""A `kgs` dataset -> UMAEA tensors: read both graphs, encode every image once with a frozen
encoder, and mask images per missing ratio from the dataset's recorded per-entity draws.

Building once at missing rate 0 and masking here gives exactly the images that
`concord data make kgs --option missing_rate=R` (same seed) keeps, without rendering and
encoding the graphs six times (`meta/image_draws.tsv` records the draws).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from concord.models.linking.umaea import GraphTensors
from concord.models.preprocess import images_to_tensor
from pipelines.data.sets.kgs import GRAPHS


@dataclass(frozen=True)
class KGSide:
    ids: tuple[str, ...]  # entity ids, index = position
    triples: tuple[tuple[str, str, str], ...]
    attributes: tuple[tuple[str, str], ...]  # (entity id, key); values are noise by design
    images: dict[str, str]  # entity id -> relative png path
    draws: dict[str, float]  # entity id -> the per-entity missing draw


@dataclass(frozen=True)
class KGDataset:
    root: Path
    sides: dict[str, KGSide]  # "kg1", "kg2"
    seeds: Tensor  # (S, 2) long indices (kg1, kg2)
    test: Tensor  # (T, 2) long
    swapped: frozenset[tuple[str, str]]  # (kg, entity id) whose image shows another entity


def _tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines() if line]


def read_kgs(root: Path) -> KGDataset:
    """Read a `kgs` dataset directory (any missing rate it was built at)."""
    root = Path(root)
    draws_path = root / "meta" / "image_draws.tsv"
    all_draws = _tsv(draws_path) if draws_path.is_file() else []
    sides = {}
    for kg in GRAPHS:
        ids = tuple(r[0] for r in _tsv(root / kg / "entities.tsv"))
        sides[kg] = KGSide(
            ids,
            tuple((h, r, t) for h, r, t in _tsv(root / kg / "triples.tsv")),
            tuple((e, a) for e, a, *_ in _tsv(root / kg / "attributes.tsv")),
            {e: p for e, p in _tsv(root / kg / "images.tsv")},
            {e: float(u) for g, e, u in all_draws if g == kg},
        )
    index = {kg: {e: i for i, e in enumerate(s.ids)} for kg, s in sides.items()}

    def pairs(name: str) -> Tensor:
        rows = [(index["kg1"][a], index["kg2"][b]) for a, b in _tsv(root / "alignment" / name)]
        return torch.tensor(rows, dtype=torch.long).reshape(-1, 2)

    swapped_path = root / "meta" / "swapped_images.tsv"
    swapped = (
        frozenset((r[0], r[1]) for r in _tsv(swapped_path))
        if swapped_path.is_file()
        else frozenset()
    )
    return KGDataset(root, sides, pairs("seed.tsv"), pairs("test.tsv"), swapped)


def encode_images(
    data: KGDataset, encode: Callable[[Tensor], Tensor], image_size: int, batch_size: int = 256
) -> dict[str, tuple[Tensor, Tensor]]:
    """Per graph: (features (N, D), has_image (N,)) from `encode(pixels) -> (B, D)`."""
    out = {}
    for kg, side in data.sides.items():
        present = [i for i, e in enumerate(side.ids) if e in side.images]
        feats: list[Tensor] = []
        for s in range(0, len(present), batch_size):
            chunk = present[s : s + batch_size]
            pics = [Image.open(data.root / side.images[side.ids[i]]) for i in chunk]
            with torch.no_grad():
                feats.append(encode(images_to_tensor(pics, image_size)).float())
        width = feats[0].shape[1] if feats else 0
        full = torch.zeros(len(side.ids), width)
        has = torch.zeros(len(side.ids), dtype=torch.bool)
        if feats:
            full[present] = torch.cat(feats)
            has[present] = True
        out[kg] = (full, has)
    return out


def to_graphs(
    data: KGDataset, images: dict[str, tuple[Tensor, Tensor]]
) -> tuple[GraphTensors, GraphTensors]:
    """Both graphs as `GraphTensors` (relation and attribute vocabularies per graph)."""
    graphs = []
    for kg in GRAPHS:
        side = data.sides[kg]
        index = {e: i for i, e in enumerate(side.ids)}
        rels = {r: i for i, r in enumerate(sorted({r for _, r, _ in side.triples}))}
        keys = {a: i for i, a in enumerate(sorted({a for _, a in side.attributes}))}
        edges = torch.tensor(
            [(index[h], index[t]) for h, _, t in side.triples], dtype=torch.long
        ).reshape(-1, 2)
        edge_rel = torch.tensor([rels[r] for _, r, _ in side.triples], dtype=torch.long)
        attrs = torch.zeros(len(side.ids), len(keys))
        for e, a in side.attributes:
            attrs[index[e], keys[a]] += 1.0
        feats, has = images[kg]
        graphs.append(GraphTensors(len(side.ids), edges, edge_rel, len(rels), attrs, feats, has))
    return graphs[0], graphs[1]


def at_missing_rate(
    data: KGDataset, graphs: tuple[GraphTensors, GraphTensors], rate: float
) -> tuple[GraphTensors, GraphTensors]:
    """The graphs with the images a build at missing `rate` would not have zeroed out."""
    out = []
    for kg, g in zip(GRAPHS, graphs, strict=True):
        side = data.sides[kg]
        if not side.draws:
            raise ValueError(
                f"{data.root} has no meta/image_draws.tsv: rebuild it (`concord data make kgs`)"
            )
        keep = torch.tensor(np.array([side.draws[e] >= rate for e in side.ids], dtype=bool))
        has = g.has_image & keep
        out.append(replace(g, images=g.images * has[:, None].float(), has_image=has))
    return out[0], out[1]
