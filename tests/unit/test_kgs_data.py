"""The `kgs` dataset for UMAEA: no usable names, per-graph vocabularies, recorded image draws
that reproduce any missing rate, and the reader/converter the UMAEA pipeline uses."""

from __future__ import annotations

from pathlib import Path

import torch

from pipelines.data.sets import BuildArgs, registry
from pipelines.data.sets.kgs import present_at
from pipelines.linker.umaea_data import at_missing_rate, encode_images, read_kgs, to_graphs
from pipelines.linker.umaea_report import evaluate, summarise


def _build(root: Path, rate: float, n: int = 40) -> Path:
    registry()["kgs"].build(BuildArgs(root, 3, {"entities": n}, 32, options={"missing_rate": rate}))
    return root


def test_names_do_not_align_the_graphs(tmp_path: Path) -> None:
    root = _build(tmp_path / "a", 0.0, 80)
    names = {kg: dict(line.split("\t") for line in (root / kg / "entities.tsv").read_text().splitlines())
             for kg in ("kg1", "kg2")}
    pairs = [line.split("\t") for line in (root / "alignment/test.tsv").read_text().splitlines()]
    same = sum(names["kg1"][a] == names["kg2"][b] for a, b in pairs)
    assert same <= 1  # chance level: the graphs draw their names independently
    rel1 = {line.split("\t")[1] for line in (root / "kg1/triples.tsv").read_text().splitlines()}
    rel2 = {line.split("\t")[1] for line in (root / "kg2/triples.tsv").read_text().splitlines()}
    assert rel1 and rel2 and not rel1 & rel2  # per-graph relation vocabularies


def test_recorded_draws_reproduce_a_build_at_that_rate(tmp_path: Path) -> None:
    full = _build(tmp_path / "r0", 0.0)
    part = _build(tmp_path / "r6", 0.6)
    for kg in ("kg1", "kg2"):
        kept = {line.split("\t")[0] for line in (part / kg / "images.tsv").read_text().splitlines()}
        assert kept == present_at(full, kg, 0.6)
        assert kept < {line.split("\t")[0] for line in (full / kg / "images.tsv").read_text().splitlines()}
    data = read_kgs(full)
    feats = encode_images(data, lambda px: px.mean(dim=(2, 3)), 32)  # a stand-in 3-d "encoder"
    g1, g2 = to_graphs(data, feats)
    assert g1.images.shape == (len(data.sides["kg1"].ids), 3) and bool(g1.has_image.all())
    m1, _ = at_missing_rate(data, (g1, g2), 0.6)
    want = {data.sides["kg1"].ids.index(e) for e in present_at(full, "kg1", 0.6)}
    assert set(torch.nonzero(m1.has_image).flatten().tolist()) == want
    assert float(m1.images[~m1.has_image].abs().sum()) == 0.0
    assert data.seeds.shape[1] == 2 and data.test.shape[0] > data.seeds.shape[0]
    assert int(g1.edges.max()) < g1.num_entities and g1.attributes.shape[1] > 0


def test_evaluate_and_summarise() -> None:
    e = torch.eye(4)
    scores = evaluate(e, e, torch.tensor([[0, 0], [1, 1], [2, 2]]))
    assert scores == {"Hits@1": 1.0, "Hits@10": 1.0, "MRR": 1.0}
    rows = summarise([{"ratio": 0.2, "variant": "umaea", "seed": s, "Hits@1": h, "Hits@10": 1.0, "MRR": h,
                       "image_weight": 0.1, "seconds": 1.0} for s, h in enumerate((0.4, 0.6))])
    assert rows[0]["Hits@1"] == 0.5 and abs(rows[0]["Hits@1 std"] - 0.1414) < 1e-3
