"""MLflow tracking: experiments and runs (params, metrics, artifacts) over an explicit client.

`Registry` (client.py) builds on `Tracking` with registered models and downloads.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from concord.registry.errors import RegistryError
from concord.registry.refs import MODEL_ARTIFACT_PATH

DEFAULT_EXPERIMENT = "concord"
_PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


class Run:
    """An active MLflow run, yielded by `Registry.start_run`."""

    def __init__(self, client: MlflowClient, run_id: str, artifact_uri: str) -> None:
        self._client = client
        self.run_id = run_id
        self.artifact_uri = artifact_uri

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Args: params: name -> value (stringified by MLflow; values are immutable per run)."""
        entries = [Param(str(k), str(v)) for k, v in params.items()]
        for i in range(0, len(entries), 100):  # MLflow caps a batch at 100 params
            self._client.log_batch(self.run_id, params=entries[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Args: metrics: name -> value; step: the training step they belong to."""
        now = int(time.time() * 1000)
        entries = [Metric(str(k), float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(entries), 1000):
            self._client.log_batch(self.run_id, metrics=entries[i : i + 1000])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Args: tags: name -> value."""
        self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Upload one file. Args: path: local file; artifact_path: folder inside the run."""
        self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(
        self, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> None:
        """Upload a directory's files. Args: local_dir: local folder; artifact_path: target."""
        self._client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_model_dir(
        self, local_dir: str | os.PathLike[str], artifact_path: str = MODEL_ARTIFACT_PATH
    ) -> str:
        """Upload a model directory (any files) so it can be registered.

        Args:
            local_dir: folder with the model files (e.g. `state_dict.pt`, `config.json`).
            artifact_path: where it goes inside the run.

        Returns:
            The artifact path, to pass to `Registry.register_model`.
        """
        src = Path(local_dir)
        if not src.is_dir() or not any(src.iterdir()):
            raise RegistryError(f"model directory {src} is missing or empty")
        self._client.log_artifacts(self.run_id, str(src), artifact_path)
        return artifact_path


class Tracking:
    """Experiments and runs behind a small typed API.

    Uses an explicit `MlflowClient` (never MLflow's process-global tracking URI), so several
    stores can live in one process (tests run the sqlite default and a server side by side).
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        artifacts_dir: str | os.PathLike[str] | None = None,
        experiment: str = DEFAULT_EXPERIMENT,
    ) -> None:
        """Args:
        tracking_uri: `sqlite:///...` (embedded) or `http://host:port` (server).
        artifacts_dir: where an embedded (sqlite/file) store keeps artifacts; default: beside
            the database. Ignored for a server, which has its own artifact store.
        experiment: the experiment runs go to unless `start_run` names another.
        """
        quiet_artifact_progress()
        self.tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._local_store = not tracking_uri.startswith(("http://", "https://", "databricks"))
        if artifacts_dir is not None:
            self._artifacts_dir: Path | None = Path(artifacts_dir)
        elif self._local_store:
            self._artifacts_dir = _default_artifacts_dir(tracking_uri)
        else:
            self._artifacts_dir = None
        self._experiment = experiment
        self._experiment_ids: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def client(self) -> MlflowClient:
        """The underlying MLflow client (for what this class does not cover)."""
        return self._client

    def experiment_id(self, name: str | None = None) -> str:
        """Get or create an experiment.

        Args:
            name: experiment name (default: the registry's).

        Returns:
            Its id.
        """
        name = name or self._experiment
        with self._lock:
            if name in self._experiment_ids:
                return self._experiment_ids[name]
            exp = self._client.get_experiment_by_name(name)
            if exp is None:
                location = None
                if self._artifacts_dir is not None:
                    # sqlite stores would otherwise put artifacts in ./mlruns of the CWD.
                    location = (self._artifacts_dir.resolve() / name).as_uri()
                try:
                    exp_id = self._client.create_experiment(name, artifact_location=location)
                except MlflowException as exc:
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    # Another process created it meanwhile: use theirs.
                    existing = self._client.get_experiment_by_name(name)
                    if existing is None:
                        raise
                    exp_id = existing.experiment_id
            else:
                exp_id = exp.experiment_id
            self._experiment_ids[name] = exp_id
            return exp_id

    @contextmanager
    def start_run(
        self,
        run_name: str | None = None,
        *,
        experiment: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Iterator[Run]:
        """Open a run; it ends FINISHED, or FAILED if the block raises.

        Args:
            run_name: shown in the MLflow UI.
            experiment: experiment name (default: the registry's).
            params: logged at start.
            tags: run tags.

        Yields:
            The `Run` to log into.
        """
        exp_id = self.experiment_id(experiment)
        created = self._client.create_run(exp_id, run_name=run_name, tags=dict(tags or {}))
        run = Run(self._client, created.info.run_id, created.info.artifact_uri)
        status = "FAILED"
        try:
            if params:
                run.log_params(params)
            yield run
            status = "FINISHED"
        finally:
            self._client.set_terminated(run.run_id, status=status)


def quiet_artifact_progress() -> None:
    """Turn off MLflow's artifact upload/download progress bars (noise in services and tests).

    MLflow reads the variable at each transfer; it is set once, when a client is built (not at
    import, and not per call: changing os.environ while other threads read it is a race). An
    explicit setting in the environment wins.
    """
    os.environ.setdefault(_PROGRESS_BAR_ENV, "false")


def _default_artifacts_dir(tracking_uri: str) -> Path:
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///") :]).parent / "artifacts"
    if tracking_uri.startswith("file:"):
        return Path(unquote(urlparse(tracking_uri).path)) / "artifacts"
    return Path(tracking_uri) / "artifacts"
