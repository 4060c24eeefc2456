"""Two overlapping knowledge graphs (for UMAEA): entities with relations, attributes and
images, images missing at a chosen rate and some swapped for ambiguous ones, plus gold
alignment seeds and test pairs.

Whether an entity's image is missing is decided by a per-entity draw independent of the
rate, so datasets made at rates 0.2 and 0.5 are nested: the same seed, more images gone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.data.names import pseudo_words, respell
from pipelines.data.render import render
from pipelines.data.scene import compose, make_object
from pipelines.data.sets import BuildArgs, DatasetSpec
from pipelines.data.sheet import SheetRow
from pipelines.data.store import DatasetWriter, Manifest, decode_png, item_rng
from pipelines.data.vocab import COLOURS, SHAPES, SIZE_ORDER, TEXTURES

NAME = "kgs"
REGIONS = ("north", "south", "east", "west", "coast", "hills")
# The two graphs name the same relations and attributes differently, as two sources would.
RELATIONS = {"kg1": ("allied_with", "rival_of", "located_near", "part_of", "trades_with"),
             "kg2": ("ally", "rival", "neighbour", "member_of", "partner")}
ATTRIBUTES = {"kg1": ("colour", "shape", "size", "region"),
              "kg2": ("hasColor", "hasForm", "hasSize", "inRegion")}


def _world(rng: np.random.Generator, n: int) -> tuple[list[dict], list[tuple[int, int, int]]]:
    looks = [(c, s, t) for c in COLOURS for s in SHAPES for t in TEXTURES]
    picks = rng.permutation(len(looks))
    names = pseudo_words(rng, n)
    ents = [{"name": names[k], "colour": looks[int(picks[k % len(looks)])][0],
             "shape": looks[int(picks[k % len(looks)])][1], "texture": looks[int(picks[k % len(looks)])][2],
             "size": str(rng.choice(SIZE_ORDER[1:])), "region": str(rng.choice(REGIONS))} for k in range(n)]
    edges = set()
    for h in range(n):
        for t in rng.choice(n, size=int(rng.integers(2, 5)), replace=False):
            if int(t) != h:
                edges.add((h, int(rng.integers(len(RELATIONS["kg1"]))), int(t)))
    return ents, sorted(edges)


def build(args: BuildArgs) -> Manifest:
    n = args.counts["entities"]
    missing, ambiguous = args.option("missing_rate", 0.3), args.option("ambiguous_rate", 0.05)
    seed_ratio = args.option("seed_ratio", 0.3)
    for key, v in (("missing_rate", missing), ("ambiguous_rate", ambiguous), ("seed_ratio", seed_ratio)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{key} must be in [0, 1], got {v}")
    w = DatasetWriter(args.out, NAME, SPEC.version, args.seed,
                      {"image_size": args.image_size, "counts": args.counts, "missing_rate": missing,
                       "ambiguous_rate": ambiguous, "seed_ratio": seed_ratio}, args.overwrite)
    rng = item_rng(args.seed, NAME, "world", 0)
    ents, edges = _world(rng, n)
    members = {kg: [k for k in range(n) if rng.uniform() < 0.85] for kg in ("kg1", "kg2")}
    ids: dict[str, dict[int, str]] = {}
    counts: dict[str, int] = {}
    swapped_rows = []
    for kg, prefix in (("kg1", "a"), ("kg2", "b")):
        order = rng.permutation(members[kg])  # ids carry no hint of the alignment
        ids[kg] = {int(k): f"{prefix}{j:05d}" for j, k in enumerate(order)}
        names = {k: ents[k]["name"] for k in ids[kg]}
        if kg == "kg2":  # the second source spells half the names differently
            names = {k: respell(rng, v) if rng.uniform() < 0.5 else v for k, v in names.items()}
        rows = sorted((ids[kg][k], names[k]) for k in ids[kg])
        counts[f"{kg}_entities"] = w.put_tsv(f"{kg}/entities.tsv", rows)
        triples = sorted((ids[kg][h], RELATIONS[kg][r], ids[kg][t]) for h, r, t in edges
                         if h in ids[kg] and t in ids[kg] and rng.uniform() < 0.8)
        counts[f"{kg}_triples"] = w.put_tsv(f"{kg}/triples.tsv", triples)
        attrs = sorted((ids[kg][k], a, ents[k][src]) for k in ids[kg]
                       for a, src in zip(ATTRIBUTES[kg], ("colour", "shape", "size", "region"), strict=True)
                       if rng.uniform() < 0.7)
        counts[f"{kg}_attributes"] = w.put_tsv(f"{kg}/attributes.tsv", attrs)
        image_rows = []
        for k in sorted(ids[kg]):
            erng = item_rng(args.seed, NAME, f"image-{kg}", k)
            u_missing, u_ambiguous = erng.uniform(), erng.uniform()
            if u_missing < missing:
                continue
            src = k
            if u_ambiguous < ambiguous:
                # An ambiguous image: another entity of the same shape, so it looks plausible.
                same = [j for j in range(n) if j != k and ents[j]["shape"] == ents[k]["shape"]]
                same = same or [(k + 1) % n]
                src = same[int(erng.integers(len(same)))]
                swapped_rows.append((kg, ids[kg][k], (src in ids[kg] and ids[kg][src]) or "-"))
            e = ents[src]
            scene = compose(erng, [make_object(erng, e["colour"], e["shape"], e["size"], e["texture"])])
            image_rows.append((ids[kg][k], w.put_png(f"{kg}/images/{ids[kg][k]}.png",
                                                     render(scene, args.image_size).image)))
        counts[f"{kg}_images"] = w.put_tsv(f"{kg}/images.tsv", image_rows)
    shared = [k for k in range(n) if k in ids["kg1"] and k in ids["kg2"]]
    pairs = [(ids["kg1"][k], ids["kg2"][k]) for k in (int(i) for i in rng.permutation(shared))]
    cut = round(len(pairs) * seed_ratio)
    counts["seed_pairs"] = w.put_tsv("alignment/seed.tsv", sorted(pairs[:cut]))
    counts["test_pairs"] = w.put_tsv("alignment/test.tsv", sorted(pairs[cut:]))
    counts["swapped_images"] = w.put_tsv("meta/swapped_images.tsv", sorted(swapped_rows))
    return w.finish(counts)


def _tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines() if line]


def sheet(root: Path, n: int) -> list[SheetRow]:
    root = Path(root)
    names = {kg: dict(_tsv(root / kg / "entities.tsv")) for kg in ("kg1", "kg2")}
    images = {kg: dict(_tsv(root / kg / "images.tsv")) for kg in ("kg1", "kg2")}
    triples = {kg: _tsv(root / kg / "triples.tsv") for kg in ("kg1", "kg2")}
    rows = []
    for a, b in _tsv(root / "alignment" / "test.tsv")[:n]:
        panels = [(f"kg1 {a}", decode_png(root / images["kg1"][a])) if a in images["kg1"] else
                  (f"kg1 {a}: missing", np.zeros((8, 8), np.uint8)),
                  (f"kg2 {b}", decode_png(root / images["kg2"][b])) if b in images["kg2"] else
                  (f"kg2 {b}: missing", np.zeros((8, 8), np.uint8))]
        ta = [f"{r} {names['kg1'].get(t, t)}" for h, r, t in triples["kg1"] if h == a][:2]
        tb = [f"{r} {names['kg2'].get(t, t)}" for h, r, t in triples["kg2"] if h == b][:2]
        rows.append(SheetRow(panels, f"kg1 {a} '{names['kg1'][a]}': {'; '.join(ta)}\n"
                                     f"kg2 {b} '{names['kg2'][b]}': {'; '.join(tb)}\n(gold aligned pair)"))
    return rows


SPEC = DatasetSpec(
    name=NAME, version="1.0",
    description="Two KGs over overlapping entities with images, missing/ambiguous images, alignment.",
    presets={"tiny": {"entities": 16}, "small": {"entities": 100}, "default": {"entities": 300},
             "large": {"entities": 324}},
    build=build, sheet=sheet,
    options={"missing_rate": 0.3, "ambiguous_rate": 0.05, "seed_ratio": 0.3},
)
