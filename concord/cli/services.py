"""`concord up`, `concord serve NAME...` and `concord status`: run services in this process
(found through the `concord.services` entry points) and ask each one's health."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from concord.clients import ServiceStatus, status_of
from concord.config import SERVICE_NAMES, Settings, load_settings
from concord.serving.runner import Deployment, configure_logging, run_until_signalled

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
    # Below the table, not in it: a reason is long and would squeeze the columns.
    for s in statuses:
        if s.not_ready and s.health != "UNREACHABLE":
            console.print(f"[yellow]{s.service} not ready:[/] {s.not_ready}", soft_wrap=True)


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


def register(app: typer.Typer) -> None:
    """Add `up`, `serve` and `status` to the `concord` app."""
    app.command()(up)
    app.command()(serve)
    app.command()(status)
