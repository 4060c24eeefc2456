"""`concord generate` and `concord customize` as a user runs them, against a served tiny
generator: the image and its layout PNG are written, the legend printed, errors are clear."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from concord.cli import app
from concord.config import Settings
from tests.fixtures.media import png
from tests.fixtures.models import tiny_generator
from tests.fixtures.serving import InProcessDeployment, generator_settings

# Serves a tiny generator, and a customize job fine-tunes a concept on it.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = generator_settings(
        tmp_path_factory.mktemp("generator-cli"), str(tiny_generator(tmp_path_factory))
    )
    server = InProcessDeployment(["generator"], settings)
    yield settings
    server.close()


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "CONCORD_HOME": str(settings.home),
        "CONCORD_SERVING__PORTS": json.dumps(settings.serving.ports),
        "CONCORD_SERVING__METRICS_PORT": "0",
    }


def test_generate_writes_the_image_and_its_layout_and_prints_the_legend(
    served: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "x.png"
    result = CliRunner().invoke(
        app,
        ["generate", "a red circle above a blue square", "--out", str(out), "--steps", "2"],
        env=cli_env(served),
    )
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        assert image.size == (16, 16) and image.mode == "RGB"
    layout = tmp_path / "x.layout.png"
    with Image.open(layout) as sheet:
        assert sheet.height >= 128 and sheet.width > 128  # map scaled up, legend beside it
    assert "layout:" in result.output and "background" in result.output
    assert "seed 0" in result.output and "tiny-generator" in result.output


def test_generate_several_prompts_and_scale(served: Settings, tmp_path: Path) -> None:
    out = tmp_path / "many.png"
    result = CliRunner().invoke(
        app,
        ["generate", "a star", "a heart", "-o", str(out), "--steps", "1", "--scale", "3"],
        env=cli_env(served),
    )
    assert result.exit_code == 0, result.output
    for i in range(2):
        with Image.open(tmp_path / f"many-{i}.png") as image:
            assert image.size == (48, 48)
        assert (tmp_path / f"many-{i}.layout.png").is_file()


def test_generate_reports_a_bad_request_clearly(served: Settings, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["generate", "x" * 400, "--out", str(tmp_path / "no.png")], env=cli_env(served)
    )
    assert result.exit_code == 1
    assert "INVALID_ARGUMENT" in result.output and "prompts[0]" in result.output
    assert not (tmp_path / "no.png").exists()


def test_customize_waits_for_the_job_and_the_concept_is_listed(
    served: Settings, tmp_path: Path
) -> None:
    images = []
    for i, colour in enumerate([(250, 200, 0), (240, 210, 20)]):
        path = tmp_path / f"ref{i}.png"
        path.write_bytes(png(colour, 24))
        images.append(str(path))
    result = CliRunner().invoke(
        app,
        ["customize", "blarg", *images, "--class-word", "shape", "--steps", "3", "--wait"],
        env=cli_env(served),
    )
    assert result.exit_code == 0, result.output
    assert "SUCCEEDED" in result.output and "concord-concept-blarg" in result.output
    listed = CliRunner().invoke(app, ["concepts"], env=cli_env(served))
    assert listed.exit_code == 0 and "blarg" in listed.output and "shape" in listed.output


def test_customize_refuses_missing_files(served: Settings, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["customize", "blarg", str(tmp_path / "nope.png")], env=cli_env(served)
    )
    assert result.exit_code == 2 and "nope.png" in result.output
