"""The hot swap's moving parts without MLflow or torch models: `run_pinned` batches, the
`ModelWatcher` polling a fake registry, `Servable.reload` keeping the old model when the new one
fails, and the served-model metrics. The real-registry, real-gRPC version of these is
tests/integration/test_model_upgrade.py."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import pytest
from prometheus_client import REGISTRY

from concord.config import BatchingSettings, Settings
from concord.registry import ModelNotFound, ModelVersionInfo
from concord.serving.reload import ModelWatcher, watched_alias
from concord.serving.servable import Pinned, Servable, batcher, run_pinned
from concord.wire import ModelId

URI = "models:/fake@production"


@dataclass(frozen=True, eq=False)
class FakeModel:
    id: ModelId
    weight: float


class FakeRegistry:
    """Resolves the alias to `version` (ModelNotFound while it is None)."""

    def __init__(self, version: int | None) -> None:
        self.version = version
        self.resolves = 0

    def resolve(self, uri: str) -> ModelVersionInfo:
        self.resolves += 1
        if self.version is None:
            raise ModelNotFound(f"{uri} does not exist")
        return ModelVersionInfo("fake", self.version, ("production",), None, "")


class FakeServable(Servable[FakeModel]):
    """Answers x * version; versions in `broken` fail to load; loads take a little while."""

    def __init__(self, registry: FakeRegistry, uri: str = URI) -> None:
        self.registry = registry
        self.broken: set[int] = set()
        self.loading = threading.Event()  # set while a load runs
        self.calls = batcher(self._batch, "fake", BatchingSettings(max_delay_ms=2))
        super().__init__("fake", uri, [self.calls])

    def load(self) -> FakeModel:
        self.loading.set()
        try:
            info = self.registry.resolve(self.uri)
            time.sleep(0.05)
            if info.version in self.broken:
                raise RuntimeError(f"v{info.version} is corrupt")
            return FakeModel(ModelId(info.name, str(info.version)), float(info.version))
        finally:
            self.loading.clear()

    async def predict(self, xs: list[float]) -> tuple[ModelId, list[tuple[ModelId, float]]]:
        loaded = self.require()
        await asyncio.sleep(0.001)  # the request does other work between require and submit
        return loaded.id, await self.calls.submit_many([Pinned(loaded, x) for x in xs])

    def _batch(self, items: list[Pinned[FakeModel, float]]) -> list[tuple[ModelId, float]]:
        return run_pinned(items, lambda m, xs: [(m.id, x * m.weight) for x in xs])


def served(service: str, version: str) -> float | None:
    return REGISTRY.get_sample_value(
        "concord_model_served", {"service": service, "name": "fake", "version": version}
    )


def swaps(service: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "concord_model_swaps_total", {"service": service, "outcome": outcome}
    )
    return value or 0.0


async def wait_for(cond, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def test_run_pinned_runs_each_item_on_its_model_in_order() -> None:
    a, b = FakeModel(ModelId("m", "1"), 1.0), FakeModel(ModelId("m", "2"), 2.0)
    calls: list[tuple[str, list[float]]] = []

    def fn(model: FakeModel, xs: list[float]) -> list[float]:
        calls.append((model.id.version, xs))
        return [x * model.weight for x in xs]

    items = [Pinned(a, 1.0), Pinned(b, 1.0), Pinned(a, 3.0), Pinned(b, 5.0)]
    assert run_pinned(items, fn) == [1.0, 2.0, 3.0, 10.0]
    assert calls == [("1", [1.0, 3.0]), ("2", [1.0, 5.0])]  # one call per model


def test_only_alias_uris_are_watched() -> None:
    assert watched_alias("models:/concord-encoder@production")
    assert not watched_alias("models:/concord-encoder/3")
    assert not watched_alias("/models/encoder")
    assert not watched_alias("models:/bad/uri/x")


def test_setting_defaults_and_bounds() -> None:
    assert Settings().serving.reload_interval_seconds == 30.0
    assert Settings(serving={"reload_interval_seconds": 0}).serving.reload_interval_seconds == 0
    with pytest.raises(ValueError, match="reload_interval_seconds"):
        Settings(serving={"reload_interval_seconds": -1})


async def test_alias_move_swaps_without_a_failed_or_mixed_call() -> None:
    registry = FakeRegistry(1)
    servable = FakeServable(registry)
    watcher = ModelWatcher(servable, lambda: registry, 0.01)  # type: ignore[arg-type,return-value]
    await servable.start()
    await watcher.start()
    results: list[tuple[list[float], ModelId, list[tuple[ModelId, float]]]] = []
    errors: list[BaseException] = []
    stop = asyncio.Event()

    async def client(k: int) -> None:
        while not stop.is_set():
            try:
                xs = [float(k), float(k + 1)]
                results.append((xs, *await servable.predict(xs)))
            except Exception as err:
                errors.append(err)

    clients = [asyncio.create_task(client(k)) for k in range(8)]
    try:
        await wait_for(lambda: len(results) > 20, "answers")
        before = swaps("fake", "swapped")
        registry.version = 2
        await wait_for(lambda: servable.model_id == ModelId("fake", "2"), "the swap")
        count = len(results)
        await wait_for(lambda: len(results) > count + 20, "answers after the swap")
    finally:
        stop.set()
        await asyncio.gather(*clients)
        await watcher.stop()
        await servable.stop()

    assert errors == []
    assert {model.version for _, model, _ in results} == {"1", "2"}
    for xs, model, answers in results:  # every item computed by the model its request took
        assert answers == [(model, x * float(model.version)) for x in xs]
    assert servable.swaps == 1 and swaps("fake", "swapped") == before + 1
    assert served("fake", "2") == 1.0 and served("fake", "1") is None


async def test_a_version_that_fails_to_load_keeps_the_old_one_serving() -> None:
    registry = FakeRegistry(1)
    servable = FakeServable(registry)
    servable.broken.add(2)
    watcher = ModelWatcher(servable, lambda: registry, 0.01)  # type: ignore[arg-type,return-value]
    await servable.start()
    await watcher.start()
    try:
        failed = swaps("fake", "failed")
        registry.version = 2
        await wait_for(lambda: swaps("fake", "failed") >= failed + 2, "retried failed loads")
        assert servable.model_id == ModelId("fake", "1") and servable.ready
        assert "v2 is corrupt" in servable.reload_error
        assert servable.load_error == ""
        model, answers = await servable.predict([3.0])
        assert model == ModelId("fake", "1") and answers == [(model, 3.0)]
        registry.version = 3  # the next good version is swapped in
        await wait_for(lambda: servable.model_id == ModelId("fake", "3"), "the swap to v3")
        assert servable.reload_error == ""
    finally:
        await watcher.stop()
        await servable.stop()


async def test_registry_outage_and_missing_model_keep_serving_then_load() -> None:
    registry = FakeRegistry(None)  # not registered yet: the service starts without a model
    servable = FakeServable(registry)
    watcher = ModelWatcher(servable, lambda: registry, 0.01)  # type: ignore[arg-type,return-value]
    await servable.start()
    await watcher.start()
    try:
        assert not servable.ready and "does not exist" in servable.load_error
        seen = registry.resolves
        await wait_for(lambda: registry.resolves > seen + 3, "polls while missing")
        registry.version = 1
        await wait_for(lambda: servable.ready, "the first load")
        assert servable.model_id == ModelId("fake", "1") and servable.load_error == ""
        registry.version = None  # the alias went away: keep serving what is loaded
        seen = registry.resolves
        await wait_for(lambda: registry.resolves > seen + 3, "polls after")
        assert servable.model_id == ModelId("fake", "1")
    finally:
        await watcher.stop()
        await servable.stop()


async def test_pinned_uris_disabled_polling_and_unreloadable_services_are_not_watched() -> None:
    registry = FakeRegistry(1)

    class Fixed(FakeServable):
        reloadable = False

    cases = [
        (FakeServable(registry, "models:/fake/1"), 0.01),
        (FakeServable(registry), 0.0),
        (Fixed(registry), 0.01),
    ]
    for servable, interval in cases:
        watcher = ModelWatcher(servable, lambda: registry, interval)  # type: ignore[arg-type,return-value]
        assert not watcher.active
        await watcher.start()  # publishes metrics, starts no task
        await watcher.stop()
    assert ModelWatcher(FakeServable(registry), lambda: registry, 0.01).active  # type: ignore[arg-type,return-value]
