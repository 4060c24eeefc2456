"""The lifecycle every model service shares: load the model in a worker thread at start,
remember why a load failed, answer `ready` and `require()`, start and stop the service's
batchers with it, and `reload()` a newer model without downtime (concord.serving.reload polls
the registry alias). A service's servable adds only `load` and its predict methods.

Hot swaps stay atomic per request: a request takes the model once (`require()`) and its
batcher items carry it (`Pinned`), so a batch runs each item on the model its request started
with (`run_pinned`) and a swap never answers half a request with another model."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

import torch

from concord.config import BatchingSettings
from concord.devices import DeviceUnavailable, Precision, describe
from concord.errors import FailedPrecondition
from concord.serving.batcher import BatchFn, DynamicBatcher, In, Out
from concord.wire import ModelId

log = logging.getLogger(__name__)


class Loaded(Protocol):
    """What `Servable.load` returns: any model state that knows its id."""

    @property
    def id(self) -> ModelId: ...


M = TypeVar("M", bound=Loaded)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, eq=False)
class Pinned(Generic[M, T]):
    """One batcher item and the model its request was admitted with."""

    model: M
    item: T


def run_pinned(items: Sequence[Pinned[M, T]], fn: Callable[[M, list[T]], list[R]]) -> list[R]:
    """Run a batch whose items may name different models (a swap happened while they queued):
    one `fn(model, items)` call per model, results back in item order."""
    groups: dict[int, tuple[M, list[int]]] = {}
    for i, pinned in enumerate(items):
        groups.setdefault(id(pinned.model), (pinned.model, []))[1].append(i)
    out: list[R | None] = [None] * len(items)
    for model, idx in groups.values():
        for i, result in zip(idx, fn(model, [items[i].item for i in idx]), strict=True):
            out[i] = result
    return cast("list[R]", out)


class Servable(ABC, Generic[M]):
    """One served model: loaded at `start`, required by every predict call.

    A model that cannot be loaded (not registered yet, incomplete files) leaves the service up
    and not ready, so health, GetInfo and the RPCs that need no model still answer; calls that
    need it fail with FAILED_PRECONDITION naming the URI and the load error. A device that is
    not there is a deployment error no later registration fixes: it fails the start.

    Args:
        name: the service ("encoder"); names the model in errors and logs.
        uri: the model URI the settings name.
        batchers: started after the load and stopped with the service.
    """

    missing_hint: ClassVar[str] = ""  # appended to the not-loaded error: how to get a model
    # Whether a moved registry alias may swap the model in while serving (concord.serving.reload).
    reloadable: ClassVar[bool] = True
    precision: Precision = "fp32"  # what the model runs in (the device settings' precision)

    def __init__(
        self, name: str, uri: str, batchers: Sequence[DynamicBatcher[Any, Any]] = ()
    ) -> None:
        self.name = name
        self.uri = uri
        self.batchers = list(batchers)
        self.loaded: M | None = None
        self.load_error = ""
        self.reload_error = ""  # why the last reload failed ("" when it did not)
        self.swaps = 0  # models swapped in by `reload` since start
        self.device = torch.device("cpu")  # resolved by `load`
        self._reload_lock = asyncio.Lock()

    @abstractmethod
    def load(self) -> M:
        """Resolve the device and load the model (called once, in a worker thread).

        Raises:
            DeviceUnavailable: the configured device is not visible (fails the start).
            Exception: anything else; remembered as the load error, the service stays up.
        """

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Load the model (a missing one leaves the service up but not ready), then start the
        batchers.

        Raises:
            DeviceUnavailable: the configured device is not visible (the service must not start).
        """
        try:
            self.loaded = await asyncio.to_thread(self.load)
            served = ", ".join(str(m) for m in self.models)
            log.info("%s serving %s from %s on %s", self.name, served, self.uri, self.where)
        except DeviceUnavailable:
            raise
        except Exception as err:  # a missing model must not stop health, info or other RPCs
            self.load_error = _message(err)
            log.warning("%s model %s not loaded: %s", self.name, self.uri, self.load_error)
        for batcher in self.batchers:
            batcher.start()

    async def stop(self) -> None:
        """Stop the batchers (what is queued is answered first)."""
        await asyncio.gather(*(batcher.stop() for batcher in self.batchers))

    async def reload(self) -> bool:
        """Load the model the URI names now (in a worker thread, beside the served one) and swap
        it in with one assignment: calls admitted before finish on the model they took, later
        ones get the new one. A model that fails to load leaves the served one serving.

        Returns:
            Whether a model was swapped in.
        """
        async with self._reload_lock:
            before = self.loaded
            try:
                loaded = await asyncio.to_thread(self.load)
            except Exception as err:  # keep serving what is loaded; the watcher retries
                self.reload_error = _message(err)
                if before is None:
                    self.load_error = self.reload_error
                log.error(
                    "%s: loading %s failed, still serving %s: %s",
                    self.name,
                    self.uri,
                    before.id if before is not None else "nothing",
                    self.reload_error,
                )
                return False
            self.loaded = loaded
            self.load_error = self.reload_error = ""
            self.swaps += 1
            served = ", ".join(str(m) for m in self.models)
            was = before.id if before is not None else "nothing"
            log.info(
                "%s switched from %s to %s (%s) on %s", self.name, was, served, self.uri, self.where
            )
            return True

    # ----------------------------------------------------------------- state

    @property
    def ready(self) -> bool:
        return self.loaded is not None

    @property
    def model_id(self) -> ModelId | None:
        return self.loaded.id if self.loaded is not None else None

    @property
    def models(self) -> list[ModelId]:
        """Every model the service answers with (GetInfo): the served one when loaded."""
        return [self.loaded.id] if self.loaded is not None else []

    @property
    def not_ready_reason(self) -> str:
        """Why the model is not loaded: the load error, or that it is still loading."""
        return "" if self.ready else (self.load_error or "still loading")

    @property
    def where(self) -> str:
        """Where the model runs, for logs ("cuda:0 (NVIDIA H200, bfloat16)")."""
        return describe(self.device, self.precision)

    def require(self) -> M:
        """Returns: the loaded model. Raises: FailedPrecondition naming the URI and the error."""
        if self.loaded is None:
            raise FailedPrecondition(
                f"{self.name} model {self.uri!r} is not loaded: {self.not_ready_reason}"
                + self.missing_hint
            )
        return self.loaded


def _message(err: Exception) -> str:
    return getattr(err, "message", None) or f"{type(err).__name__}: {err}"


class ModelThread:
    """One thread that runs a model's calls in order, made on first use (again after `close`).

    A forward that hops between asyncio's shared pool threads builds (and spins) an OpenMP
    thread team on each of them, and queues decode work behind model calls; one dedicated
    thread keeps one team and runs one call at a time.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        """Returns: `fn(*args)`, run on this thread."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, self.name)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        """Let the thread end once its queued calls are done."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


def batcher(
    fn: BatchFn[In, Out], name: str, batching: BatchingSettings, **limits: float
) -> DynamicBatcher[In, Out]:
    """A dynamic batcher sized by the `batching` settings.

    Args:
        fn: the batched model call (run in a worker thread when it is not async).
        name: names the batcher in metrics.
        batching: max_batch_size, max_delay_ms and max_queue.
        limits: any of those three that this batcher sets itself (explanations: one at a time).
    """
    return DynamicBatcher(fn, name=name, **{**batching.model_dump(), **limits})
