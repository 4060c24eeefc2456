"""`concord ...`: the command line. Each command group is a module here that adds itself to
`app` (`register`); pipeline apps (`concord data ...`) plug in through the `concord.cli` entry
points in pyproject.toml, as services plug in through `concord.services`, so the library never
imports a pipeline.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

import typer

from concord.cli import bias, export, generate, link, score, search, services, train

ENTRY_POINT_GROUP = "concord.cli"  # NAME = "module:typer_app" -> `concord NAME ...`

app = typer.Typer(help="Concord: make images and text agree.", no_args_is_help=True)
log = logging.getLogger(__name__)

services.register(app)
search.register(app)
score.register(app)
generate.register(app)
bias.register(app)
link.register(app)
train.register(app)
export.register(app)


def mount_plugins(app: typer.Typer, group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Mount every typer app of the entry-point `group` as a command group named by its key.

    An app whose package is not installed beside the library (e.g. `pipelines` in a serving
    image) is skipped; any other import error is raised.

    Returns:
        The names mounted, in entry-point order.
    """
    mounted = []
    for ep in entry_points(group=group):
        try:
            plugin = ep.load()
        except ModuleNotFoundError as err:
            if err.name and ep.value.startswith(err.name.split(".")[0]):
                log.debug("concord %s: %s is not installed", ep.name, err.name)
                continue
            raise
        app.add_typer(plugin, name=ep.name)
        mounted.append(ep.name)
    return mounted


mount_plugins(app)


def main() -> None:
    app()
