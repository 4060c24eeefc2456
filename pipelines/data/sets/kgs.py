"""Two overlapping knowledge graphs (for UMAEA): entities with relations, attribute keys and
images, images missing at a chosen rate and some swapped for other entities' (ambiguity),
plus gold alignment seeds and test pairs.

Built so that no single cheap cue aligns the graphs (the UMAEA "w/o surface" setting):
- names are drawn independently per graph, so name matching is at chance;
- each graph keeps the shared community graph with ~30% of its edges dropped or rewired;
- the two graphs name relations and attribute keys from different vocabularies, with
  per-graph noise (relabelled triples, dropped and spurious keys); attribute values are
  per-graph noise, so only the keys carry signal;
- images are per-graph renders (jittered colour, position, background) of the entity's
  look, and a look is shared by a few entities, so an image narrows but rarely decides.

Whether an entity's image is missing is decided by a per-entity draw independent of the
rate, recorded in `meta/image_draws.tsv`, so datasets made at rates 0.2 and 0.6 are
nested (the same seed, more images gone) and a pipeline can build once at rate 0 and mask
any rate itself. Of the remaining images, `ambiguous_rate` are swapped for another
entity's (one of the same shape, so it looks plausible).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.data.names import pseudo_words
from pipelines.data.render import render
from pipelines.data.scene import compose, make_object
from pipelines.data.sets import BuildArgs, DatasetSpec
from pipelines.data.sheet import SheetRow
from pipelines.data.store import DatasetWriter, Manifest, decode_png, item_rng
from pipelines.data.vocab import COLOURS, SHAPES, SIZE_ORDER, TEXTURES

NAME = "kgs"
GRAPHS = ("kg1", "kg2")
NUM_RELATIONS = 12
NUM_KEYS = 32
NUM_TYPES = 8
EDGE_DROP, EDGE_REWIRE, RELATION_NOISE = 0.15, 0.15, 0.1
KEY_KEEP, KEY_SPURIOUS = 0.8, 0.1
# The two graphs name the same relations and attribute keys differently, as two sources would.
_STEMS = ("ally", "rival", "near", "member", "partner", "supplier", "founder", "host", "owner",
          "branch", "sponsor", "twin")
RELATIONS = {"kg1": tuple(f"{s}_of" for s in _STEMS),
             "kg2": tuple(f"has{s.capitalize()}" for s in _STEMS)}
KEYS = {"kg1": tuple(f"attr_{i:02d}" for i in range(NUM_KEYS)),
        "kg2": tuple(f"prop{i:02d}x" for i in range(NUM_KEYS))}


def _world(rng: np.random.Generator, n: int) -> tuple[list[dict], list[tuple[int, int, int]]]:
    """Latent entities (look, type, community, attribute keys) and the shared triples."""
    looks = [(c, s, t) for c in COLOURS for s in SHAPES for t in TEXTURES]
    picks = rng.permutation(len(looks))
    communities = max(2, n // 40)
    type_keys = [rng.choice(NUM_KEYS, size=6, replace=False) for _ in range(NUM_TYPES)]
    ents = []
    for k in range(n):
        c, s, t = looks[int(picks[k % len(looks)])]
        kind = int(rng.integers(NUM_TYPES))
        keys = {int(x) for x in type_keys[kind] if rng.uniform() < 0.7}
        keys |= {int(x) for x in np.flatnonzero(rng.uniform(size=NUM_KEYS) < 0.05)}
        ents.append({"colour": c, "shape": s, "texture": t, "size": str(rng.choice(SIZE_ORDER)),
                     "type": kind, "community": int(rng.integers(communities)), "keys": sorted(keys)})
    members: dict[int, list[int]] = {}
    for k, e in enumerate(ents):
        members.setdefault(e["community"], []).append(k)
    rel_of_types = rng.integers(NUM_RELATIONS, size=(NUM_TYPES, NUM_TYPES))
    edges = set()
    for h in range(n):
        for _ in range(int(rng.integers(2, 6))):
            pool = members[ents[h]["community"]] if rng.uniform() < 0.8 else range(n)
            t = int(rng.choice(pool))
            if t != h:
                r = int(rel_of_types[ents[h]["type"], ents[t]["type"]]) if rng.uniform() < 0.7 \
                    else int(rng.integers(NUM_RELATIONS))
                edges.add((h, r, t))
    return ents, sorted(edges)


def _graph_triples(rng: np.random.Generator, edges: list[tuple[int, int, int]], n: int,
                   member: dict[int, str]) -> list[tuple[int, int, int]]:
    """One graph's copy of the shared triples: some dropped, some rewired, some relabelled."""
    out = []
    for h, r, t in edges:
        u = rng.uniform()
        if u < EDGE_DROP:
            continue
        if u < EDGE_DROP + EDGE_REWIRE:
            t = int(rng.integers(n))
        if rng.uniform() < RELATION_NOISE:
            r = int(rng.integers(NUM_RELATIONS))
        if h in member and t in member and h != t:
            out.append((h, r, t))
    return out


def build(args: BuildArgs) -> Manifest:
    n = args.counts["entities"]
    missing, ambiguous = args.option("missing_rate", 0.3), args.option("ambiguous_rate", 0.1)
    seed_ratio = args.option("seed_ratio", 0.3)
    for key, v in (("missing_rate", missing), ("ambiguous_rate", ambiguous), ("seed_ratio", seed_ratio)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{key} must be in [0, 1], got {v}")
    w = DatasetWriter(args.out, NAME, SPEC.version, args.seed,
                      {"image_size": args.image_size, "counts": args.counts, "missing_rate": missing,
                       "ambiguous_rate": ambiguous, "seed_ratio": seed_ratio}, args.overwrite)
    rng = item_rng(args.seed, NAME, "world", 0)
    ents, edges = _world(rng, n)
    members = {kg: [k for k in range(n) if rng.uniform() < 0.9] for kg in GRAPHS}
    ids: dict[str, dict[int, str]] = {}
    counts: dict[str, int] = {}
    swapped_rows, draw_rows = [], []
    for kg, prefix in (("kg1", "a"), ("kg2", "b")):
        grng = item_rng(args.seed, NAME, f"graph-{kg}", 0)
        order = grng.permutation(members[kg])  # ids carry no hint of the alignment
        ids[kg] = {int(k): f"{prefix}{j:05d}" for j, k in enumerate(order)}
        names = dict(zip(sorted(ids[kg]), pseudo_words(grng, len(ids[kg])), strict=True))  # per graph
        rows = sorted((ids[kg][k], names[k]) for k in ids[kg])
        counts[f"{kg}_entities"] = w.put_tsv(f"{kg}/entities.tsv", rows)
        triples = sorted({(ids[kg][h], RELATIONS[kg][r], ids[kg][t])
                          for h, r, t in _graph_triples(grng, edges, n, ids[kg])})
        counts[f"{kg}_triples"] = w.put_tsv(f"{kg}/triples.tsv", triples)
        attrs = []
        for k in sorted(ids[kg]):
            keys = {x for x in ents[k]["keys"] if grng.uniform() < KEY_KEEP}
            if grng.uniform() < KEY_SPURIOUS:
                keys.add(int(grng.integers(NUM_KEYS)))
            attrs += [(ids[kg][k], KEYS[kg][x], str(int(grng.integers(1000)))) for x in sorted(keys)]
        counts[f"{kg}_attributes"] = w.put_tsv(f"{kg}/attributes.tsv", sorted(attrs))
        image_rows = []
        for k in sorted(ids[kg]):
            erng = item_rng(args.seed, NAME, f"image-{kg}", k)
            u_missing, u_ambiguous = erng.uniform(), erng.uniform()
            draw_rows.append((kg, ids[kg][k], f"{u_missing:.6f}"))
            if u_missing < missing:
                continue
            src = k
            if u_ambiguous < ambiguous:
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
    w.put_tsv("meta/image_draws.tsv", sorted(draw_rows))
    return w.finish(counts)


def _tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines() if line]


def present_at(root: Path, kg: str, rate: float) -> set[str]:
    """Ids of `kg` whose image is kept at missing `rate` (<= the rate the set was built at
    is not required: any rate >= the built one gives a subset of images.tsv)."""
    return {i for g, i, u in _tsv(Path(root) / "meta" / "image_draws.tsv") if g == kg and float(u) >= rate}


def sheet(root: Path, n: int) -> list[SheetRow]:
    root = Path(root)
    names = {kg: dict(_tsv(root / kg / "entities.tsv")) for kg in GRAPHS}
    images = {kg: dict(_tsv(root / kg / "images.tsv")) for kg in GRAPHS}
    triples = {kg: _tsv(root / kg / "triples.tsv") for kg in GRAPHS}
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
    name=NAME, version="2.0",
    description="Two KGs over overlapping entities (no shared names), missing/ambiguous images, alignment.",
    presets={"tiny": {"entities": 16}, "small": {"entities": 100}, "default": {"entities": 1000},
             "large": {"entities": 1500}},
    build=build, sheet=sheet,
    options={"missing_rate": 0.3, "ambiguous_rate": 0.1, "seed_ratio": 0.3},
)
