"""`concord data ...`: make a named dataset, draw its contact sheet, list sets, time the renderer."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Make and inspect Concord Scenes datasets.", no_args_is_help=True)
console = Console()


def _parse_options(pairs: list[str]) -> dict[str, float]:
    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected KEY=VALUE, got {p!r}", param_hint="--option")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{key} must be a number, got {value!r}",
                                     param_hint="--option") from None
    return out


@app.command()
def make(
    name: Annotated[str, typer.Argument(help="dataset name; see `list`")],
    out: Annotated[Path, typer.Option(help="output directory (must be empty unless --overwrite)")],
    seed: Annotated[int, typer.Option(help="seed; the same seed gives byte-identical files")] = 0,
    size: Annotated[str, typer.Option(help="preset split sizes: tiny | small | default | large")] = "default",
    image_size: Annotated[int, typer.Option(help="image side in pixels")] = 64,
    workers: Annotated[int, typer.Option(help="processes for rendering")] = min(4, os.cpu_count() or 1),
    option: Annotated[list[str] | None,
                      typer.Option(help="set-specific KEY=VALUE, e.g. missing_rate=0.5")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing dataset directory")] = False,
) -> None:
    """Generate dataset NAME into OUT and write its manifest."""
    from pipelines.data.sets import BuildArgs, registry

    specs = registry()
    if name not in specs:
        raise typer.BadParameter(f"unknown dataset {name!r}; known: {', '.join(specs)}", param_hint="NAME")
    spec = specs[name]
    if size not in spec.presets:
        raise typer.BadParameter(f"unknown size {size!r}; known: {', '.join(spec.presets)}",
                                 param_hint="--size")
    opts = _parse_options(option or [])
    unknown = set(opts) - set(spec.options or {})
    if unknown:
        raise typer.BadParameter(f"{name} takes no option {', '.join(sorted(unknown))}; "
                                 f"known: {', '.join(spec.options or {}) or 'none'}", param_hint="--option")
    start = time.perf_counter()
    m = spec.build(BuildArgs(out, seed, dict(spec.presets[size]), image_size, workers, opts, overwrite))
    console.print(f"[green]{name}[/] v{m.version} seed={seed} -> {out} "
                  f"({len(m.files)} files, {time.perf_counter() - start:.1f}s) counts={m.counts}")


@app.command()
def show(
    directory: Annotated[Path, typer.Argument(help="a dataset directory made by `make`")],
    out: Annotated[Path, typer.Option(help="PNG to write")],
    n: Annotated[int, typer.Option(help="how many samples")] = 8,
) -> None:
    """Render a contact sheet of samples with captions and layouts."""
    from pipelines.data.sets import registry
    from pipelines.data.sheet import render_sheet
    from pipelines.data.store import Manifest

    m = Manifest.load(directory)
    spec = registry()[m.name]
    render_sheet(spec.sheet(directory, n), f"{m.name} v{m.version} (seed {m.seed}): {spec.description}", out)
    console.print(f"wrote {out}")


@app.command("list")
def list_sets() -> None:
    """List datasets and their default split sizes."""
    from pipelines.data.sets import registry

    table = Table("name", "default sizes", "options", "what")
    for s in registry().values():
        table.add_row(s.name, ", ".join(f"{k}={v}" for k, v in s.presets["default"].items()),
                      ", ".join(f"{k}={v}" for k, v in (s.options or {}).items()), s.description)
    console.print(table)


@app.command()
def bench(n: Annotated[int, typer.Option(help="scenes to render")] = 1000,
          image_size: Annotated[int, typer.Option(help="image side in pixels")] = 64) -> None:
    """Print the renderer's throughput on this machine (one process)."""
    from pipelines.data.render import render
    from pipelines.data.scene import sample_scene
    from pipelines.data.store import encode_png

    t0 = time.perf_counter()
    scenes = [sample_scene(np.random.default_rng([0, i])) for i in range(n)]
    t1 = time.perf_counter()
    outs = [render(s, image_size) for s in scenes]
    t2 = time.perf_counter()
    for o in outs:
        encode_png(o.image), encode_png(o.layout)
    t3 = time.perf_counter()
    console.print(f"sample scenes: {n / (t1 - t0):.0f}/s | render {image_size}x{image_size}: "
                  f"{n / (t2 - t1):.0f} images/s | png encode (image+layout): {n / (t3 - t2):.0f}/s | "
                  f"end to end: {n / (t3 - t0):.0f} images/s per process")


def main() -> None:
    app()
