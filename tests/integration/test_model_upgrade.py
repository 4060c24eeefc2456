"""Model upgrades without downtime, against a real MLflow registry (the embedded sqlite store;
the encoder test also against the MLflow server, marked `mlflow`): a service serving
`models:/NAME@production` keeps answering a steady stream of calls (real gRPC over sockets)
while the alias moves; it swaps to the new version once it has loaded, never fails a call,
labels every answer with the model that computed it, and keeps serving the old version when
the new one does not load."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from concord.clients import Concord
from concord.config import Settings
from concord.registry import Registry
from concord.wire import ModelId
from tests.fixtures.media import png
from tests.fixtures.mlflow import MlflowServer
from tests.fixtures.models import scorer_package, tiny_config, tiny_encoder
from tests.fixtures.serving import InProcessDeployment, free_ports
from tests.fixtures.waiting import wait_until

pytestmark = [pytest.mark.slow]

POLL_SECONDS = 0.2
TEXT = "a red circle left of a blue square"
RED = png((220, 30, 30))


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two tiny encoders with different weights, and a directory that is not an encoder."""
    from concord.checkpoints import build_encoder, save_encoder

    first = tiny_encoder(tmp_path_factory)
    second = tmp_path_factory.mktemp("encoder-seed1") / "tiny-encoder"
    model, tokenizer = build_encoder(tiny_config(), seed=1)
    save_encoder(model, tokenizer, second)
    broken = tmp_path_factory.mktemp("broken") / "tiny-encoder"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"not weights")
    return first, second, broken


@dataclass(frozen=True)
class Backend:
    """Where the test registers models and what the services read them from."""

    registry: Registry
    tracking_uri: str | None  # None: the embedded sqlite store under the services' home
    home: Path


@pytest.fixture(params=["embedded"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    home = tmp_path / "home"
    if request.param == "server":
        server: MlflowServer = request.getfixturevalue("mlflow_server")
        return Backend(Registry(server.uri, cache_dir=tmp_path / "cache"), server.uri, home)
    return Backend(Registry.from_settings(Settings(home=home)), None, home)


def register(registry: Registry, name: str, directory: Path) -> int:
    with registry.start_run(f"register-{name}") as run:
        path = run.log_model_dir(directory)
    return registry.register_model(name, run.run_id, path).version


def settings_for(backend: Backend, interval: float = POLL_SECONDS, **extra: Any) -> Settings:
    ports = dict(zip(("encoder", "retrieval", "scorer"), free_ports(3), strict=True))
    return Settings(
        home=backend.home,
        mlflow_tracking_uri=backend.tracking_uri,
        serving={"ports": ports, "metrics_port": 0, "reload_interval_seconds": interval},
        **extra,
    )


@dataclass
class Stream:
    """Calls `call` in a loop from a client thread until stopped; records answers and errors."""

    call: Callable[[], tuple[ModelId, Any]]
    answers: list[tuple[ModelId, Any]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.answers.append(self.call())
            except Exception as err:  # every failure is a test failure; keep counting
                self.errors.append(err)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)

    def versions(self) -> list[str]:
        return list(dict.fromkeys(model.version for model, _ in self.answers))


@pytest.fixture
def deployments() -> Iterator[list[InProcessDeployment]]:
    started: list[InProcessDeployment] = []
    yield started
    for deployment in started:
        deployment.close()


@pytest.mark.parametrize(
    "backend", ["embedded", pytest.param("server", marks=pytest.mark.mlflow)], indirect=True
)
def test_encoder_swaps_when_the_alias_moves_without_a_failed_call(
    backend: Backend,
    encoders: tuple[Path, Path, Path],
    tmp_path: Path,
    deployments: list[InProcessDeployment],
) -> None:
    registry = backend.registry
    name = f"concord-encoder-{uuid.uuid4().hex[:8]}"
    first, second, broken = (register(registry, name, d) for d in encoders)
    registry.set_alias(name, "production", first)
    settings = settings_for(backend, encoder_model=f"models:/{name}@production")
    deployments.append(InProcessDeployment(["encoder"], settings))
    servable = deployments[0].servicer("encoder").servable

    with Concord(settings) as sdk:
        assert sdk.encoder.model() == ModelId(name, str(first))

        def call() -> tuple[ModelId, Any]:
            out = sdk.encode_texts([TEXT, "a green star"])
            return out.model, out.matrix

        stream = Stream(call)
        try:
            wait_until(lambda: len(stream.answers) >= 3, "first answers", 30)

            # A version that does not load: the old one keeps serving, the error is kept.
            registry.set_alias(name, "production", broken)
            wait_until(lambda: servable.reload_error != "", "the failed load", 60)
            assert sdk.encoder.model() == ModelId(name, str(first))
            assert servable.ready and servable.swaps == 0
            answered = len(stream.answers)
            wait_until(lambda: len(stream.answers) > answered + 2, "answers after", 30)

            # A good version: loaded in the background, then swapped in.
            registry.set_alias(name, "production", second)
            wait_until(lambda: sdk.encoder.model() == ModelId(name, str(second)), "the swap", 120)
            answered = len(stream.answers)
            wait_until(lambda: len(stream.answers) > answered + 3, "answers after", 30)
        finally:
            stream.close()

        assert stream.errors == []
        assert stream.versions() == [str(first), str(second)]
        assert servable.swaps == 1 and servable.reload_error == ""
        # Every answer carries the embedding of the model it names (no mixed batches), and the
        # two versions' weights give different embeddings.
        by_version: dict[str, np.ndarray] = {}
        for model, matrix in stream.answers:
            expected = by_version.setdefault(model.version, matrix)
            assert np.allclose(matrix, expected, atol=1e-4), model
        assert not np.allclose(by_version[str(first)], by_version[str(second)], atol=1e-3)


def test_pinned_version_and_disabled_polling_never_move(
    backend: Backend,
    encoders: tuple[Path, Path, Path],
    tmp_path: Path,
    deployments: list[InProcessDeployment],
) -> None:
    registry = backend.registry
    name = f"concord-encoder-{uuid.uuid4().hex[:8]}"
    first, second, _ = (register(registry, name, d) for d in encoders)
    registry.set_alias(name, "production", first)
    pinned = settings_for(backend, encoder_model=f"models:/{name}/{first}")
    off = settings_for(backend, 0, encoder_model=f"models:/{name}@production")
    for settings in (pinned, off):
        deployments.append(InProcessDeployment(["encoder"], settings))
    registry.set_alias(name, "production", second)
    time.sleep(POLL_SECONDS * 5)  # what must not happen: five polls' time for it not to
    for settings in (pinned, off):
        with Concord(settings) as sdk:
            assert sdk.encoder.model() == ModelId(name, str(first))


def test_service_started_before_its_model_loads_it_once_registered(
    backend: Backend,
    encoders: tuple[Path, Path, Path],
    tmp_path: Path,
    deployments: list[InProcessDeployment],
) -> None:
    registry = backend.registry
    name = f"concord-encoder-{uuid.uuid4().hex[:8]}"
    settings = settings_for(backend, encoder_model=f"models:/{name}@production")
    deployments.append(InProcessDeployment(["encoder"], settings))
    with Concord(settings) as sdk:
        assert sdk.encoder.model() is None
        version = register(registry, name, encoders[0])
        registry.set_alias(name, "production", version)
        wait_until(lambda: sdk.encoder.model() == ModelId(name, str(version)), "the load", 120)
        assert sdk.encode_texts([TEXT]).model == ModelId(name, str(version))


def test_scorer_swaps_package_without_a_failed_call(
    backend: Backend,
    encoders: tuple[Path, Path, Path],
    tmp_path: Path,
    deployments: list[InProcessDeployment],
) -> None:
    registry = backend.registry
    name = f"concord-scorer-{uuid.uuid4().hex[:8]}"
    # Two packages on the two encoders (different weights, different CLIPScore weight).
    one = scorer_package(tmp_path / "scorer-1", encoders[0])
    two = scorer_package(tmp_path / "scorer-2", encoders[1], weight=1.0, threshold=1e-4)
    first, second = register(registry, name, one), register(registry, name, two)
    registry.set_alias(name, "production", first)
    settings = settings_for(backend, scorer={"model": f"models:/{name}@production"})
    deployments.append(InProcessDeployment(["scorer"], settings))

    with Concord(settings) as sdk:

        def call() -> tuple[ModelId, Any]:
            out = sdk.score([(RED, TEXT)])
            s = out.scores[0]
            return out.model, (s.clip_score, s.fine_grained_score, s.aligned_probability)

        stream = Stream(call)
        try:
            wait_until(lambda: len(stream.answers) >= 3, "first answers", 30)
            registry.set_alias(name, "production", second)
            wait_until(
                lambda: sdk.scorer.models()[:1] == (ModelId(name, str(second)),), "swap", 120
            )
            answered = len(stream.answers)
            wait_until(lambda: len(stream.answers) > answered + 3, "answers after", 30)
        finally:
            stream.close()

    assert stream.errors == []
    assert stream.versions() == [str(first), str(second)]
    by_version: dict[str, Any] = {}
    for model, scores in stream.answers:
        assert np.allclose(scores, by_version.setdefault(model.version, scores), atol=1e-4)
    assert not np.allclose(by_version[str(first)], by_version[str(second)], atol=1e-4)


# ----------------------------------------------------------------------------- retrieval

CAPTIONS = [
    f"a {size} {colour} {shape}"
    for size, colour, shape in [
        ("small", "red", "circle"),
        ("large", "blue", "square"),
        ("tiny", "green", "star"),
        ("big", "yellow", "triangle"),
        ("small", "purple", "hexagon"),
        ("large", "orange", "cross"),
        ("tiny", "white", "ring"),
        ("big", "black", "diamond"),
    ]
]


def embed_texts(directory: Path, texts: list[str]) -> np.ndarray:
    """The encoder's unit text embeddings, computed in the test process."""
    import torch

    from concord.checkpoints import load_model

    loaded = load_model(str(directory), lambda: None)  # type: ignore[arg-type,return-value]
    batch = loaded.tokenizer(texts)
    with torch.inference_mode():
        pooled = loaded.torch_model().encode_text(batch.input_ids, batch.attention_mask).pooled
    out = pooled.float().numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def with_psi(new: Path, old: Path, into: Path, old_model: ModelId) -> Path:
    """A copy of encoder `new` carrying a linear psi fitted (least squares) to map its caption
    embeddings onto `old`'s: what an XBT run would ship beside the new encoder."""
    import shutil

    import torch

    from concord.models.xbt import CompatibleProjection
    from services.retrieval.upgrade import save_psi

    shutil.copytree(new, into)
    x, y = embed_texts(new, CAPTIONS), embed_texts(old, CAPTIONS)
    w, *_ = np.linalg.lstsq(x, y, rcond=None)
    psi = CompatibleProjection(x.shape[1], y.shape[1])
    with torch.no_grad():
        psi.net.weight.copy_(torch.from_numpy(w.T.astype(np.float32)))  # type: ignore[operator]
    save_psi(into, psi, old_model)
    return into


@pytest.mark.parametrize("psi", [True, False], ids=["psi", "no-psi"])
def test_retrieval_keeps_answering_while_the_new_collection_is_backfilled(
    psi: bool,
    backend: Backend,
    encoders: tuple[Path, Path, Path],
    tmp_path: Path,
    deployments: list[InProcessDeployment],
) -> None:
    from concord.clients.types import IndexItem

    registry = backend.registry
    name = f"concord-encoder-{uuid.uuid4().hex[:8]}"
    first = register(registry, name, encoders[0])
    new_dir = encoders[1]
    if psi:
        new_dir = with_psi(encoders[1], encoders[0], tmp_path / "v2", ModelId(name, str(first)))
    second = register(registry, name, new_dir)
    registry.set_alias(name, "production", first)
    settings = settings_for(backend, encoder_model=f"models:/{name}@production")
    deployments.append(InProcessDeployment(["encoder", "retrieval"], settings))
    upgrades = deployments[0].servicer("retrieval").engine.upgrades
    new_model = ModelId(name, str(second))

    with Concord(settings) as sdk:
        items = [IndexItem(text=t, payload={"k": i}) for i, t in enumerate(CAPTIONS)]
        kept = IndexItem(image=png((30, 200, 30)), payload={"k": 100})
        lost = IndexItem(image=png((200, 30, 200)), payload={"k": 101})
        assert sdk.retrieval.index([*items, kept], store_thumbnails=True).collection == (
            f"{name}-v{first}"
        )
        sdk.retrieval.index([lost])  # no thumbnail: cannot be re-embedded
        queries = iter(range(1 << 30))

        def call() -> tuple[ModelId, Any]:
            text = CAPTIONS[next(queries) % len(CAPTIONS)]
            out = sdk.retrieval.search_text(text, top_k=1, target="text")
            top = out.hits[0].payload.get("text") if out.hits else None
            return out.model, (text, top, out.collection)

        stream = Stream(call)
        try:
            wait_until(lambda: len(stream.answers) >= 3, "first answers", 30)
            registry.set_alias(name, "production", second)
            wait_until(
                lambda: (
                    new_model in upgrades.upgrades
                    and upgrades.upgrades[new_model].finished.is_set()
                ),
                "the backfill",
                120,
            )
            answered = len(stream.answers)
            wait_until(lambda: len(stream.answers) > answered + 5, "answers after", 30)
        finally:
            stream.close()

        up = upgrades.upgrades[new_model]
        assert up.state == "done", up.error
        assert (up.copied, up.left_behind) == (len(CAPTIONS) + 1, 1)
        assert (up.psi is not None) == psi
        assert stream.errors == []
        collections = [c for _, (_, _, c) in stream.answers]
        assert collections[0] == f"{name}-v{first}" and collections[-1] == f"{name}-v{second}"
        # After the switch every query finds its caption in the new collection; with psi, so
        # does every query before it (in the old collection, through psi).
        after = stream.answers[-5:]
        assert all(top == text for _, (text, top, _) in after)
        if psi:
            assert all(top == text for _, (text, top, _) in stream.answers)
        new = sdk.retrieval.collection(f"{name}-v{second}")
        assert new.model == new_model
