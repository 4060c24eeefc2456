"""`concord search` as a user runs it against live encoder + retrieval services: a rich table
of hits and a contact sheet drawn from the images' `uri` payloads."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from concord.cli import app
from concord.clients import Concord, IndexItem
from concord.config import Settings
from tests.fixtures.media import png
from tests.fixtures.models import tiny_encoder
from tests.fixtures.serving import InProcessDeployment, encoder_settings


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[InProcessDeployment, Settings]]:
    settings = encoder_settings(tmp_path_factory.mktemp("cli"), str(tiny_encoder(tmp_path_factory)))
    server = InProcessDeployment(["encoder", "retrieval"], settings)
    yield server, settings
    server.close()


def test_search_prints_hits_and_writes_a_contact_sheet(
    served: tuple[InProcessDeployment, Settings], tmp_path: Path
) -> None:
    settings = served[1]
    items = []
    for name, rgb in {"red": (255, 0, 0), "blue": (0, 0, 255)}.items():
        path = tmp_path / f"{name}.png"
        path.write_bytes(png(rgb))
        items.append(IndexItem(image=path.read_bytes(), payload={"uri": str(path)}))
    items.append(IndexItem(text="a red circle left of a blue square"))
    with Concord(settings) as sdk:
        sdk.index(items, collection="cli")
    env = {
        "CONCORD_HOME": str(settings.home),
        "CONCORD_SERVING__PORTS": json.dumps(settings.serving.ports),
    }
    sheet = tmp_path / "sheet.png"
    result = CliRunner().invoke(
        app,
        [
            "search",
            "a red circle left of a blue square",
            "--collection",
            "cli",
            "--top-k",
            "3",
            "--contact-sheet",
            str(sheet),
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "in cli (tiny-encoder@" in result.output
    assert result.output.count("image") >= 2 and "text" in result.output
    with Image.open(sheet) as image:  # image tiles come from the hits' `uri` files
        tiles = {image.getpixel((10 + 128 * i, 10)) for i in range(3)}
    assert {(255, 0, 0), (0, 0, 255)} <= tiles
    missing = CliRunner().invoke(app, ["search", "x", "--collection", "nope"], env=env)
    assert missing.exit_code == 1 and "NOT_FOUND" in missing.output
