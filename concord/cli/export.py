"""`concord export triton`: write the encoder as a model repository for another serving runtime
(`concord.runtimes.triton`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from concord.config import load_settings

console = Console()
export_app = typer.Typer(help="Export models for other serving runtimes.")


@export_app.command("triton")
def export_triton(
    model: Annotated[
        str, typer.Option(help="Model directory or registry URI (models:/NAME@ALIAS)")
    ],
    out: Annotated[Path, typer.Option(help="Triton model repository directory to write")],
    fmt: Annotated[
        str, typer.Option("--format", help="onnx (onnxruntime_onnx) or torchscript")
    ] = "onnx",
    name: Annotated[
        str, typer.Option(help="Base model name: writes NAME-image and NAME-text")
    ] = "concord-encoder",
    max_batch_size: Annotated[int, typer.Option(help="Triton max_batch_size")] = 64,
) -> None:
    """Write the encoder as a Triton model repository (config.pbtxt with dynamic batching)."""
    from concord.runtimes.triton import PLATFORMS, export_triton_from

    if fmt not in PLATFORMS:
        raise typer.BadParameter("must be onnx or torchscript", param_hint="--format")
    settings = load_settings() if model.startswith("models:/") else None
    exported = export_triton_from(
        model, out, settings, name=name, fmt=fmt, max_batch_size=max_batch_size
    )
    for item in exported:
        console.print(f"{item.name}: {item.config_file} + {item.model_file}")


def register(app: typer.Typer) -> None:
    """Add the `export` group to the `concord` app."""
    app.add_typer(export_app, name="export")
