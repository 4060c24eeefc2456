"""`concord kb upsert|ls|rm`, `concord link` and `concord align` as a user runs them, against a
served tiny linker: readable tables, JSON on request, errors naming the file's line."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from concord.cli import app
from concord.config import Settings
from tests.fixtures.media import png
from tests.fixtures.serving import InProcessDeployment
from tests.unit.test_linker_service import linker_settings, planted_graphs, tiny_linker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = linker_settings(
        tmp_path_factory.mktemp("linker-cli"), str(tiny_linker(tmp_path_factory))
    )
    server = InProcessDeployment(["linker"], settings)
    yield settings
    server.close()


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "CONCORD_HOME": str(settings.home),
        "CONCORD_SERVING__PORTS": json.dumps(settings.serving.ports),
        "CONCORD_SERVING__METRICS_PORT": "0",
    }


def run(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=cli_env(settings))
    return result.exit_code, result.output


def write_entities(tmp_path: Path, rows: list[dict]) -> Path:  # type: ignore[type-arg]
    (tmp_path / "img").mkdir(exist_ok=True)
    (tmp_path / "img" / "red.png").write_bytes(png((220, 30, 30)))
    (tmp_path / "img" / "blue.png").write_bytes(png((30, 30, 220)))
    path = tmp_path / "entities.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


ROWS = [
    {"id": "q1", "name": "Shape", "description": "a red circle", "images": ["img/red.png"]},
    {"id": "q2", "name": "Shape", "description": "a blue square", "images": ["img/blue.png"]},
    {"id": "q3", "name": "Other", "description": "no picture", "attributes": {"size": "big"}},
]


def test_kb_upsert_ls_link_and_rm(served: Settings, tmp_path: Path) -> None:
    entities = write_entities(tmp_path, ROWS)
    code, out = run(served, "kb", "upsert", str(entities), "--kb", "cli-shapes")
    assert code == 0, out
    assert "upserted 3 entities into cli-shapes" in out

    code, out = run(served, "kb", "ls", "--json")
    assert code == 0, out
    listed = {row["name"]: row for row in json.loads(out)}
    assert listed["cli-shapes"]["entities"] == 3
    code, out = run(served, "kb", "ls")
    assert code == 0 and "cli-shapes" in out

    image = tmp_path / "img" / "red.png"
    sentence = "I saw the Shape yesterday"
    code, out = run(
        served, "link", sentence, "--span", "10:15", "--kb", "cli-shapes",
        "--image", str(image), "--json",
    )  # fmt: skip
    assert code == 0, out
    linked = json.loads(out)
    assert linked["mention"] == "Shape"
    assert {c["entity_id"] for c in linked["candidates"]} == {"q1", "q2", "q3"}
    no_image = next(c for c in linked["candidates"] if c["entity_id"] == "q3")
    assert no_image["visual"] is None and no_image["text_coarse"] is not None
    code, out = run(served, "link", sentence, "--span", "10:15", "--kb", "cli-shapes")
    assert code == 0 and "text coarse" in out and "q1" in out

    code, out = run(served, "link", sentence, "--span", "10:99", "--kb", "cli-shapes")
    assert code == 1 and "INVALID_ARGUMENT" in out and "mentions[0].span" in out
    code, out = run(served, "link", sentence, "--span", "10:15", "--kb", "nope")
    assert code == 1 and "NOT_FOUND" in out and "'nope'" in out

    code, out = run(served, "kb", "rm", "cli-shapes")
    assert code == 0 and "deleted knowledge base cli-shapes" in out
    code, out = run(served, "kb", "rm", "cli-shapes")
    assert code == 1 and "NOT_FOUND" in out


def test_kb_upsert_names_the_bad_line(served: Settings, tmp_path: Path) -> None:
    rows = [*ROWS, {"id": "q4"}, {"id": "q5", "name": "x", "images": ["img/missing.png"]}]
    entities = write_entities(tmp_path, rows)
    (tmp_path / "img" / "missing.png").write_bytes(b"not a png")
    code, out = run(served, "kb", "upsert", str(entities), "--kb", "cli-bad")
    assert code == 1, out
    assert "line 4: has neither text" in out
    assert "line 5.images[0].data" in out


def test_align_prints_pairs_and_writes_them(served: Settings, tmp_path: Path) -> None:
    from google.protobuf import json_format

    source, target, truth = planted_graphs()

    def graph_json(graph) -> dict:  # type: ignore[no-untyped-def,type-arg]
        entities = [{"id": e.id} for e in graph.entities]
        triples = [[t.head, t.relation, t.tail] for t in graph.triples]
        assert json_format.MessageToDict(graph)  # the proto itself is well formed
        return {"entities": entities, "triples": triples}

    g1, g2 = tmp_path / "g1.json", tmp_path / "g2.json"
    g1.write_text(json.dumps(graph_json(source)))
    g2.write_text(json.dumps(graph_json(target)))
    seeds = tmp_path / "seeds.tsv"
    seeds.write_text("# source\ttarget\n" + "".join(f"{s}\t{t}\n" for s, t in truth[::2]))
    out_file = tmp_path / "pairs.tsv"
    code, out = run(
        served, "align", str(g1), str(g2), "--seeds", str(seeds), "--out", str(out_file),
        "--limit", "3",
    )  # fmt: skip
    assert code == 0, out
    assert "aligned pairs" in out and "more" in out
    lines = out_file.read_text().splitlines()
    assert len(lines) == len(truth) - len(truth[::2])
    assert all(line.split("\t")[0].startswith("s") for line in lines)

    bad = tmp_path / "bad-seeds.tsv"
    bad.write_text("s1\tnobody\n")
    code, out = run(served, "align", str(g1), str(g2), "--seeds", str(bad))
    assert code == 1 and "seeds[0].target_id" in out
