"""`concord train NAME`: run a training pipeline here (a subprocess) or as a Kubernetes Job
(`concord.cli.k8s`). Pipelines are named by module, never imported."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

console = Console()
train_app = typer.Typer(help="Train Concord's models in this process or as Kubernetes Jobs.")
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
    from concord.cli import k8s

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


def register(app: typer.Typer) -> None:
    """Add the `train` group to the `concord` app."""
    app.add_typer(train_app, name="train")
