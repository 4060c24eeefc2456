"""`make report-linker`: the linker's report in one command. One encoder for both methods
(given, or a small one trained once), then the M3EL grid (`concord linker report`) and the
UMAEA grid (`python -m pipelines.linker.umaea_report`), each writing its own section
(`reports/linker_m3el.*`, `reports/linker_umaea.*`), merged into `reports/linker.md` and
`reports/linker.json`.

    python -m pipelines.linker.report [--encoder URI] [--merge-only]

`--merge-only` rebuilds linker.md/.json from the two sections already written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(add_completion=False)
SECTIONS = ("linker_m3el", "linker_umaea")


def merge(out_dir: Path) -> tuple[Path, Path]:
    """Concatenate the two sections under one title; rows keep their method's name.

    Returns: the markdown and JSON paths written. Raises: FileNotFoundError naming a
    missing section (run the grids first)."""
    parts, rows = [], []
    for name in SECTIONS:
        md, js = out_dir / f"{name}.md", out_dir / f"{name}.json"
        for path in (md, js):
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: run the report without --merge-only")
        body = md.read_text().split("\n", 1)[1]  # its own title goes; the metadata stays
        parts.append(body.strip())
        data: Any = json.loads(js.read_text())
        section_rows = data.get("rows", data) if isinstance(data, dict) else data
        rows += [{**row, "section": name.removeprefix("linker_")} for row in section_rows]
    markdown = out_dir / "linker.md"
    markdown.write_text(
        "# Linker: multimodal entity linking (M3EL) and KG alignment with missing images"
        " (UMAEA)\n\nProduced by `make report-linker` (`python -m pipelines.linker.report`);"
        " each section is also written on its own (`linker_m3el.md`, `linker_umaea.md`)."
        "\n\n" + "\n\n".join(parts) + "\n"
    )
    js_path = out_dir / "linker.json"
    js_path.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    return markdown, js_path


@app.command()
def main(
    encoder: Annotated[
        str | None,
        typer.Option(help="encoder URI or directory for both methods; default: train one"),
    ] = None,
    out_dir: Annotated[Path, typer.Option(help="where reports go")] = Path("reports"),
    work_dir: Annotated[Path, typer.Option(help="data, features, encoder")] = Path(
        ".cache/linker"
    ),
    threads: Annotated[int, typer.Option(help="torch CPU threads per grid")] = 1,
    merge_only: Annotated[bool, typer.Option(help="only merge the written sections")] = False,
) -> None:
    if not merge_only:
        if encoder is None:
            from pipelines.linker.m3el_package import train_small_encoder

            typer.echo("training a small encoder for both grids (a few minutes)")
            encoder = train_small_encoder(work_dir, seed=0, threads=threads, tracking_uri=None)
        common = ["--encoder", encoder, "--out-dir", str(out_dir), "--threads", str(threads)]
        concord = str(Path(sys.executable).with_name("concord"))
        subprocess.run([concord, "linker", "report", *common], check=True)
        subprocess.run(
            [sys.executable, "-m", "pipelines.linker.umaea_report", *common], check=True
        )
    markdown, _ = merge(out_dir)
    typer.echo(f"wrote {markdown}")


if __name__ == "__main__":
    app()
