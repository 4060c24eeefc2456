"""The servable lifecycle every model service shares (`concord.serving.servable`) and the one
model resolver (`concord.registry.resolve_model`), on tiny stand-ins: no torch model, no gRPC."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from concord.checkpoints import weights_digest
from concord.clients.types import ModelId
from concord.config import BatchingSettings
from concord.devices import DeviceUnavailable
from concord.errors import FailedPrecondition
from concord.registry import resolve_model
from concord.serving.definitions import servable_info
from concord.serving.servable import Servable, batcher

URI = "models:/tiny@production"


@dataclass(frozen=True)
class Model:
    id: ModelId
    factor: int


class Doubler(Servable[Model]):
    """A servable whose `load` returns a model, or raises what it is given."""

    missing_hint = " (register one)"

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls = batcher(self._times, "test-calls", BatchingSettings(), max_batch_size=2)
        super().__init__("doubler", URI, [self.calls])

    def load(self) -> Model:
        if self.error is not None:
            raise self.error
        return Model(ModelId("tiny", "3"), 2)

    def _times(self, items: list[int]) -> list[int]:
        factor = self.require().factor
        return [factor * x for x in items]


async def test_a_loaded_model_is_ready_and_named_and_its_batchers_run() -> None:
    servable = Doubler()
    assert not servable.ready and servable.model_id is None
    await servable.start()
    try:
        assert servable.ready and servable.not_ready_reason == ""
        assert servable.model_id == ModelId("tiny", "3")
        assert servable.require().factor == 2
        assert await servable.calls.submit_many([1, 2, 3]) == [2, 4, 6]
        info = servable_info(servable)
        assert info.service == "doubler" and info.ready and not info.not_ready_reason
        assert [(m.name, m.version) for m in info.models] == [("tiny", "3")]
    finally:
        await servable.stop()
    with pytest.raises(FailedPrecondition, match="not running"):  # stopped with the service
        await servable.calls.submit(1)


async def test_a_missing_model_leaves_the_service_up_and_remembers_why() -> None:
    servable = Doubler(FailedPrecondition("no model named 'tiny' is registered"))
    await servable.start()  # does not raise
    try:
        assert not servable.ready and servable.model_id is None and servable.models == []
        assert servable.load_error == "no model named 'tiny' is registered"
        with pytest.raises(FailedPrecondition) as caught:
            servable.require()
        assert caught.value.message == (
            f"doubler model {URI!r} is not loaded: no model named 'tiny' is registered"
            " (register one)"
        )
        info = servable_info(servable)
        assert not info.ready and info.not_ready_reason == servable.load_error
        assert list(info.models) == []
        # The batchers still run (and their calls fail with the same clear error).
        with pytest.raises(FailedPrecondition, match="is not loaded"):
            await servable.calls.submit(1)
    finally:
        await servable.stop()


async def test_an_unexpected_load_error_is_remembered_with_its_type() -> None:
    servable = Doubler(ValueError("bad bytes"))
    await servable.start()
    await servable.stop()
    assert servable.load_error == "ValueError: bad bytes"


def test_before_start_the_model_is_still_loading() -> None:
    servable = Doubler()
    assert servable.not_ready_reason == "still loading"
    with pytest.raises(FailedPrecondition, match="is not loaded: still loading"):
        servable.require()


async def test_a_missing_device_fails_the_start_and_starts_no_batcher() -> None:
    servable = Doubler(DeviceUnavailable("CONCORD_DEVICE__DEFAULT asks for cuda"))
    with pytest.raises(DeviceUnavailable, match="CONCORD_DEVICE__DEFAULT"):
        await servable.start()
    assert not servable.ready and servable.load_error == ""
    with pytest.raises(FailedPrecondition, match="not running"):
        await servable.calls.submit(1)


# ------------------------------------------------------------------------------- resolve


def no_registry() -> None:
    raise AssertionError("a local directory needs no registry")


def test_a_local_directory_is_named_by_its_name_and_the_digest_of_its_files(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "my model!"
    directory.mkdir()
    (directory / "weights.bin").write_bytes(b"\x00\x01" * 100)
    (directory / "config.json").write_text("{}")
    model_id, found = resolve_model(
        str(directory),
        no_registry,
        files=lambda d: [d / "weights.bin"],  # type: ignore[arg-type]
    )
    assert found == directory
    # One digest for every kind of model: one file's is its plain sha256 (the scorer's ids).
    expected = hashlib.sha256(b"\x00\x01" * 100).hexdigest()[:8]
    assert model_id == ModelId("my-model", f"local-{expected}")
    # Without `files`, every file below the directory, by path.
    every = weights_digest([directory / "config.json", directory / "weights.bin"])
    assert resolve_model(str(directory), no_registry)[0].version == f"local-{every}"  # type: ignore[arg-type]


def test_a_missing_local_directory_fails_naming_the_kind_and_uri(tmp_path: Path) -> None:
    uri = str(tmp_path / "nothing")
    with pytest.raises(FailedPrecondition, match=r"^scorer model '.*nothing' is not a directory"):
        resolve_model(uri, no_registry, kind="scorer")  # type: ignore[arg-type]


def test_a_registry_uri_is_named_by_the_registered_version(tmp_path: Path) -> None:
    @dataclass
    class Info:
        name: str
        version: int

    class Registry:
        def download(self, uri: str) -> tuple[Info, Path]:
            assert uri == URI
            return Info("tiny", 7), tmp_path

    model_id, directory = resolve_model(URI, Registry)  # type: ignore[arg-type]
    assert model_id == ModelId("tiny", "7") and directory == tmp_path
