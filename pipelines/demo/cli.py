"""`concord demo` (what `make run` runs): Concord doing its job on the embedded defaults.

1. Models: registers the shipped demo weights as concord-encoder, -scorer, -generator, -linker
   and -bias @production where the registry (under CONCORD_HOME) has none (`--full`: train
   the full presets instead).
2. Starts the six services in this process and waits until each serves its model.
3. One flow through all of them over gRPC and the embedded bus, one printed line per step.
4. Writes `demo/index.html` (and `summary.json`), stops the services and exits 0; a failed
   step exits 1 naming the step and why.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Run Concord end to end on held-out data and write an HTML page of what it found.",
    invoke_without_command=True,
    add_completion=False,
)


@app.callback()
def demo(
    out: Annotated[Path, typer.Option(help="where index.html and summary.json go")] = Path("demo"),
    full: Annotated[
        bool, typer.Option(help="train the full presets instead of the shipped demo weights")
    ] = False,
    models: Annotated[
        bool,
        typer.Option(
            help="register the demo models where the registry has none (--no-models: serve "
            "what the registry already holds)"
        ),
    ] = True,
    scenes: Annotated[int, typer.Option(min=1, help="held-out scenes to ingest")] = 300,
    steps: Annotated[
        int, typer.Option(min=0, help="denoising steps of the generation (0: the default)")
    ] = 0,
    prompt: Annotated[str | None, typer.Option(help="what to generate")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the held-out data")] = None,
    verbose: Annotated[bool, typer.Option(help="show the services' own log")] = False,
) -> None:
    """Register the demo models when missing, start every service, run one flow through all
    of them and write the page."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from concord.config import load_settings
    from concord.serving.runner import configure_logging
    from pipelines.demo.flow import DemoFailed, DemoOptions, run_demo
    from pipelines.demo.page import write_page

    settings = load_settings()
    configure_logging("INFO" if verbose else "WARNING")
    if not verbose:
        for noisy in ("mlflow", "alembic", "urllib3", "httpx"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    say = typer.echo
    options = DemoOptions(scenes=scenes, generate_steps=steps)
    if prompt:
        options = replace(options, prompt=prompt)
    if seed is not None:
        options = replace(options, seed=seed)
    say(f"Concord demo: home {settings.home}, registry {settings.tracking_uri}")
    registered: dict[str, str] | None = None
    if models:
        try:
            from pipelines.demo.models import ensure_models
        except ImportError as err:
            typer.secho(f"demo failed: models: cannot load the demo models ({err})", fg="red")
            raise typer.Exit(1) from None
        try:
            registered = ensure_models(settings, full=full, say=lambda line: say(f"  {line}"))
        except Exception as err:
            typer.secho(f"demo failed: models: {type(err).__name__}: {err}", fg="red")
            raise typer.Exit(1) from None
    try:
        result = run_demo(settings, options, say=say, models=registered)
    except DemoFailed as err:
        typer.secho(f"demo failed: {err}", fg="red")
        raise typer.Exit(1) from None
    page = write_page(result, out, options.seed)
    say(f"page         {page.resolve()}")
    typer.secho(f"done in {result.seconds:.0f} s: every service served a model", fg="green")
