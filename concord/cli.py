"""`concord ...`: run services, check their status, and (via pipelines) make data.

The CLI sits at the top of the dependency arrow (protos -> concord -> services ->
pipelines / CLI): it starts services through their entry points and mounts pipeline apps.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from concord.client import ServiceStatus, status_of
from concord.config import SERVICE_NAMES, Settings, load_settings
from concord.serving.runner import Deployment, configure_logging, run_until_signalled

app = typer.Typer(help="Concord: make images and text agree.", no_args_is_help=True)
console = Console()


def _settings() -> Settings:
    settings = load_settings()
    configure_logging(settings.log_level)
    return settings


def _print_statuses(statuses: list[ServiceStatus]) -> None:
    table = Table(title="Concord services")
    for column in ("service", "address", "health", "models", "reflection"):
        table.add_column(column)
    for s in statuses:
        colour = "green" if s.health == "SERVING" else "red"
        models = ", ".join(s.models) or "-"
        reflected = ", ".join(n for n in s.reflected if n.startswith("concord.")) or s.error or "-"
        table.add_row(s.service, s.address, f"[{colour}]{s.health}[/]", models, reflected)
    console.print(table)


@app.command()
def up(
    smoke: Annotated[
        bool, typer.Option(help="Start every service, check each one, stop and exit.")
    ] = False,
) -> None:
    """Run every service in this process on localhost ports (embedded bus, vectors, registry)."""
    settings = _settings()
    deployment = Deployment(SERVICE_NAMES, settings)
    if not smoke:
        asyncio.run(run_until_signalled(deployment))
        return

    async def smoke_run() -> list[ServiceStatus]:
        await deployment.start()
        try:
            return await asyncio.to_thread(
                lambda: [status_of(name, settings) for name in SERVICE_NAMES]
            )
        finally:
            await deployment.stop()

    statuses = asyncio.run(smoke_run())
    _print_statuses(statuses)
    failed = [s.service for s in statuses if s.health != "SERVING"]
    if failed:
        console.print(f"[red]not serving: {', '.join(failed)}[/]")
        raise typer.Exit(1)
    console.print(f"[green]all {len(statuses)} services SERVING; smoke calls answered[/]")


@app.command()
def serve(
    services: Annotated[
        list[str], typer.Argument(help=f"One or more of: {', '.join(SERVICE_NAMES)}")
    ],
) -> None:
    """Serve the named services until SIGINT/SIGTERM, then drain in-flight calls."""
    unknown = sorted(set(services) - set(SERVICE_NAMES))
    if unknown:
        raise typer.BadParameter(f"unknown service(s) {unknown}; known: {', '.join(SERVICE_NAMES)}")
    asyncio.run(run_until_signalled(Deployment(services, _settings())))


@app.command()
def status(
    host: Annotated[str | None, typer.Option(help="Host to query (default: serving.host)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
) -> None:
    """Health, served models and reflected services of every service."""
    settings = load_settings()
    statuses = [status_of(name, settings, host) for name in SERVICE_NAMES]
    if as_json:
        typer.echo(json.dumps([asdict(s) for s in statuses], indent=2))
    else:
        _print_statuses(statuses)
    if any(s.health != "SERVING" for s in statuses):
        raise typer.Exit(1)


def _mount_pipeline_apps() -> None:
    try:
        from pipelines.data.cli import app as data_app
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("pipelines"):
            return  # pipelines not installed beside the library: no `data` commands
        raise
    app.add_typer(data_app, name="data", help="Make and inspect Concord Scenes datasets.")


_mount_pipeline_apps()


def main() -> None:
    app()
