"""Model upgrades without downtime: a watcher started with a service's servable asks the
registry every `serving.reload_interval_seconds` which version `models:/NAME@ALIAS` names; when
it differs from the served one, `Servable.reload` loads it in a worker thread beside the served
model and swaps it in atomically. A version that fails to load leaves the old one serving (the
error is logged and counted, and the next poll tries again). Only alias URIs are watched: a
`models:/NAME/VERSION` or a local directory never moves.

The same poll loads a model that was not registered yet when the service started, so a
service started before its model was trained becomes ready without a restart.

Metrics: `concord_model_served{service,name,version}` is 1 for each model a service answers
with; `concord_model_swaps_total{service,outcome}` counts swaps ("swapped") and failed loads
("failed").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from concord.registry.errors import InvalidModelUri
from concord.registry.refs import parse_model_uri
from concord.registry.resolve import is_registry_uri
from concord.wire import ModelId

if TYPE_CHECKING:
    from concord.config import ServingSettings
    from concord.registry import Registry
    from concord.serving.servable import Servable
    from concord.serving.server import ServiceDefinition

log = logging.getLogger(__name__)

MODEL_SERVED = Gauge(
    "concord_model_served",
    "1 for each model a service answers with",
    ["service", "name", "version"],
)
MODEL_SWAPS = Counter(
    "concord_model_swaps_total",
    "models swapped in after a registry alias moved, and loads of a new version that failed",
    ["service", "outcome"],
)


def watched_alias(uri: str) -> bool:
    """Returns: whether `uri` is `models:/NAME@ALIAS`, the only kind of URI that moves."""
    if not is_registry_uri(uri):
        return False
    try:
        return parse_model_uri(uri).alias is not None
    except InvalidModelUri:
        return False


class ModelWatcher:
    """Polls the registry alias a servable serves and reloads it when the alias moves.

    Args:
        servable: the service's servable (started before the watcher).
        registry: returns the platform registry.
        interval: seconds between polls; 0 disables the watcher.
    """

    def __init__(
        self, servable: Servable[Any], registry: Callable[[], Registry], interval: float
    ) -> None:
        self.servable = servable
        self.interval = interval
        self._registry = registry
        self._task: asyncio.Task[None] | None = None
        self._published: list[ModelId] = []
        self._last_problem = ""  # logged once until it changes

    @property
    def active(self) -> bool:
        """Whether this servable is watched: a positive interval, an alias URI, and a servable
        whose model may change while serving."""
        return self.interval > 0 and self.servable.reloadable and watched_alias(self.servable.uri)

    async def start(self) -> None:
        self.publish()
        if not self.active:
            if self.interval > 0 and watched_alias(self.servable.uri):
                log.info("%s: %s is not hot-swapped", self.servable.name, self.servable.uri)
            return
        self._task = asyncio.create_task(self._run(), name=f"{self.servable.name}-model-watcher")
        log.info(
            "%s: watching %s every %.3g s", self.servable.name, self.servable.uri, self.interval
        )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def check(self) -> bool:
        """One poll: resolve the alias and reload when it names another version.

        Returns:
            Whether a new model was swapped in.
        """
        servable = self.servable
        try:
            info = await asyncio.to_thread(self._registry().resolve, servable.uri)
        except Exception as err:  # the registry is down or the alias is gone: keep serving
            self._problem(f"cannot resolve {servable.uri}: {type(err).__name__}: {err}")
            return False
        wanted = ModelId(info.name, str(info.version))
        if servable.model_id == wanted:
            return False
        log.info(
            "%s: %s now names %s (serving %s); loading it",
            servable.name,
            servable.uri,
            wanted,
            servable.model_id or "nothing",
        )
        swapped = await servable.reload()
        MODEL_SWAPS.labels(servable.name, "swapped" if swapped else "failed").inc()
        if swapped:
            self._last_problem = ""
            self.publish()
        return swapped

    def publish(self) -> None:
        """Set `concord_model_served` to what the servable answers with now."""
        name = self.servable.name
        now = list(self.servable.models)
        for model in self._published:
            if model not in now:
                with contextlib.suppress(KeyError):
                    MODEL_SERVED.remove(name, model.name, model.version)
        for model in now:
            MODEL_SERVED.labels(name, model.name, model.version).set(1)
        self._published = now

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # never let the watcher die: the next poll tries again
                log.exception("%s: model watcher poll failed", self.servable.name)

    def _problem(self, message: str) -> None:
        if message != self._last_problem:
            log.warning("%s: %s", self.servable.name, message)
            self._last_problem = message


def watch_model(
    definition: ServiceDefinition,
    servable: Servable[Any],
    registry: Callable[[], Registry],
    serving: ServingSettings,
) -> ModelWatcher:
    """Start a `ModelWatcher` after the servable (append this after `servable.start`) and stop
    it first.

    Returns: the watcher (tests poll it with `check()`).
    """
    watcher = ModelWatcher(servable, registry, serving.reload_interval_seconds)
    definition.on_start.append(watcher.start)
    definition.on_stop.insert(0, watcher.stop)
    return watcher
