"""`concord ...`: run services, check their status, and (via pipelines) make data.

The CLI sits at the top of the dependency arrow (protos -> concord -> services ->
pipelines / CLI): it starts services through their entry points and mounts pipeline apps.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlparse

import typer
from rich.console import Console
from rich.table import Table

from concord.client import Concord, Hit, ServiceStatus, status_of
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
    # Below the table, not in it: a reason is long and would squeeze the columns.
    for s in statuses:
        if s.not_ready and s.health != "UNREACHABLE":
            console.print(f"[yellow]{s.service} not ready:[/] {s.not_ready}", soft_wrap=True)


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


def _print_hits(query: str, hits: tuple[Hit, ...], collection: str, model: str) -> None:
    table = Table(title=f"{query!r} in {collection} ({model})")
    for column in ("#", "id", "score", "modality", "payload"):
        table.add_column(column)
    for rank, hit in enumerate(hits, 1):
        payload = json.dumps(dict(hit.payload), ensure_ascii=False, sort_keys=True)
        table.add_row(str(rank), hit.id, f"{hit.score:.4f}", hit.modality, payload)
    console.print(table)


def _hit_image(hit: Hit, size: int) -> object:
    """The hit's picture: payload `uri` (a local path or file:// URI) for images, else a tile
    with its text. Indexing stores no pixels, so the indexer records where the image lives."""
    from PIL import Image, ImageDraw

    uri = str(hit.payload.get("uri", ""))
    path = Path(unquote(urlparse(uri).path)) if uri.startswith("file:") else Path(uri)
    if hit.modality == "image" and uri and path.is_file():
        with Image.open(path) as image:
            return image.convert("RGB").resize((size, size))
    tile = Image.new("RGB", (size, size), (235, 235, 235))
    label = str(hit.payload.get("text", "")) or f"no image\n{uri or hit.id[:8]}"
    ImageDraw.Draw(tile).multiline_text((4, 4), _wrap(label, size // 7), fill=(0, 0, 0))
    return tile


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, max(width, 8))[:8])


def _contact_sheet(hits: tuple[Hit, ...], out: Path, size: int = 128, columns: int = 5) -> Path:
    from PIL import Image, ImageDraw

    rows = max(1, -(-len(hits) // columns))
    caption = 16
    sheet = Image.new("RGB", (columns * size, rows * (size + caption)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, hit in enumerate(hits):
        x, y = (i % columns) * size, (i // columns) * (size + caption)
        sheet.paste(_hit_image(hit, size), (x, y))  # type: ignore[arg-type]
        draw.text((x + 2, y + size + 2), f"{i + 1}. {hit.score:.3f}", fill=(0, 0, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="The text to search for.")],
    collection: Annotated[
        str, typer.Option(help="Collection (default: the encoder model's own).")
    ] = "",
    top_k: Annotated[int, typer.Option("--top-k", help="Number of hits.")] = 10,
    target: Annotated[str, typer.Option(help="image, text or any.")] = "any",
    rerank: Annotated[bool, typer.Option(help="Token late-interaction rerank.")] = False,
    contact_sheet: Annotated[
        Path | None, typer.Option("--contact-sheet", help="Write a PNG grid of the hits.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Host to query (default: serving.host)")] = None,
) -> None:
    """Search a collection by text over gRPC and print the hits (id, score, payload)."""
    from concord.errors import ConcordError

    if target not in ("image", "text", "any"):
        raise typer.BadParameter(f"--target must be image, text or any, not {target!r}")
    try:
        with Concord(load_settings(), host) as client:
            result = client.search_text(
                query,
                collection=collection,
                top_k=top_k,
                target=target,
                rerank=rerank,  # type: ignore[arg-type]
            )
    except ConcordError as err:
        console.print(f"[red]{err.status}: {err.message}[/]")
        raise typer.Exit(1) from None
    _print_hits(query, result.hits, result.collection, str(result.model))
    if contact_sheet is not None:
        console.print(f"contact sheet: {_contact_sheet(result.hits, contact_sheet)}")


from concord.cli_score import score as score_command  # noqa: E402 (its own module)

app.command("score")(score_command)

train_app = typer.Typer(help="Train Concord's models in this process or as Kubernetes Jobs.")
app.add_typer(train_app, name="train")
TRAIN_MODULES = {"encoder": "pipelines.train_encoder"}  # what `concord train NAME` runs


@train_app.command(
    "encoder", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def train_encoder(
    ctx: typer.Context,
    on: Annotated[
        str, typer.Option(help="local (a subprocess here) or kubernetes (a Job)")
    ] = "local",
    image: Annotated[str | None, typer.Option(envvar="CONCORD_IMAGE", help="Job image")] = None,
    namespace: Annotated[str, typer.Option(help="Job namespace")] = "default",
    gpus: Annotated[int, typer.Option(help="GPUs per pod (>1: torchrun)")] = 0,
    nodes: Annotated[int, typer.Option(help="pods (>1: Indexed Job of torchrun workers)")] = 1,
    config_map: Annotated[
        str, typer.Option(help="ConfigMap with CONCORD_* settings (the chart's: its full name)")
    ] = "concord",
    dry_run: Annotated[
        str | None, typer.Option(help="client (print the manifests) or server (API dry run)")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow the Job's logs until it ends")] = True,
) -> None:
    """Train the encoder: ARGS after the options go to `python -m pipelines.train_encoder`."""
    from concord import k8s

    module, args = TRAIN_MODULES["encoder"], tuple(ctx.args)
    if on == "local":
        raise typer.Exit(k8s.run_local(module, args))
    if on != "kubernetes":
        raise typer.BadParameter("must be local or kubernetes", param_hint="--on")
    spec = k8s.TrainJobSpec(
        module=module,
        args=args,
        namespace=namespace,
        image=image or k8s.DEFAULT_IMAGE,
        gpus=gpus,
        nodes=nodes,
        config_map=config_map or None,
        tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
        if gpus
        else (),
    )
    objects = k8s.build(spec)
    if dry_run == "client":
        import yaml

        typer.echo(yaml.safe_dump_all(k8s.to_manifests(objects), sort_keys=False))
        return
    k8s.load_config()
    created = k8s.submit(objects, dry_run=dry_run == "server")
    name = created[-1]["metadata"]["name"]
    console.print(
        f"job/{name} {'validated (server dry run)' if dry_run else 'created'} in {namespace}"
    )
    if dry_run or not wait:
        return
    outcome = k8s.follow(name, namespace, on_line=typer.echo)
    colour = "green" if outcome.status == "succeeded" else "red"
    console.print(f"[{colour}]job/{name} {outcome.status}[/] {outcome.reason}")
    console.print(f"MLflow run: {outcome.run_id or 'not found in the logs'}")
    if outcome.status != "succeeded":
        raise typer.Exit(1)


export_app = typer.Typer(help="Export models for other serving runtimes.")
app.add_typer(export_app, name="export")


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
    from concord.export import PLATFORMS, export_triton_from

    if fmt not in PLATFORMS:
        raise typer.BadParameter("must be onnx or torchscript", param_hint="--format")
    settings = load_settings() if model.startswith("models:/") else None
    exported = export_triton_from(
        model, out, settings, name=name, fmt=fmt, max_batch_size=max_batch_size
    )
    for item in exported:
        console.print(f"{item.name}: {item.config_file} + {item.model_file}")


def _mount_pipeline_apps() -> None:
    try:
        from pipelines.data.cli import app as data_app
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("pipelines"):
            return  # pipelines not installed beside the library: no `data` commands
        raise
    app.add_typer(data_app, name="data", help="Make and inspect Concord Scenes datasets.")


_mount_pipeline_apps()

from concord import cli_generate  # noqa: E402 (the generator's commands live there)

cli_generate.register(app)


def main() -> None:
    app()
