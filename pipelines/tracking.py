"""One training run in MLflow (through `concord.registry.Registry`), shared by the training
pipelines: params at start, metrics and artifacts as it goes, the model directory logged (and
optionally registered under an alias) at the end. With no tracking URI every call is a no-op,
so a pipeline can train without a registry."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class TrainingRun:
    """Args:
    tracking_uri: MLflow URI, or None to track nothing.
    run_name: the MLflow run's name.
    experiment: the MLflow experiment.
    model_name: the registered model `finish(register=True)` adds a version to.
    model_files: the files of the model directory to log; None logs the whole directory
        (a generator's directory also holds checkpoints and sample grids).
    """

    def __init__(
        self,
        tracking_uri: str | None,
        run_name: str,
        *,
        experiment: str,
        model_name: str,
        model_files: Sequence[str] | None = None,
    ) -> None:
        self.uri, self.run_name = tracking_uri, run_name
        self.experiment, self.model_name = experiment, model_name
        self.model_files = tuple(model_files) if model_files is not None else None
        self._registry: Any = None
        self._ctx: Any = None
        self._run: Any = None

    def start(self, params: dict[str, object]) -> None:
        if not self.uri:
            return
        from concord.registry import Registry

        self._registry = Registry(self.uri, experiment=self.experiment)
        self._ctx = self._registry.start_run(
            self.run_name,
            params={k: str(v)[:500] for k, v in params.items()},
            tags={"concord.kind": "training"},
        )
        self._run = self._ctx.__enter__()

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self._run is not None:
            self._run.log_metrics(metrics, step=step)

    def artifact(self, path: Path, folder: str) -> None:
        if self._run is not None:
            self._run.log_artifact(path, folder)

    def finish(
        self, model_dir: Path, register: bool, alias: str | None
    ) -> tuple[str | None, int | None]:
        """Log the model, end the run, and register it when asked.

        Returns:
            (run id, registered version); (None, None) when nothing is tracked.
        """
        if self._run is None:
            return None, None
        if self.model_files is None:
            path = self._run.log_model_dir(model_dir)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                for name in self.model_files:
                    shutil.copyfile(model_dir / name, Path(tmp) / name)
                path = self._run.log_model_dir(tmp)
        run_id = self._run.run_id
        self._ctx.__exit__(None, None, None)
        self._run = None
        if not register:
            return run_id, None
        info = self._registry.register_model(self.model_name, run_id, path)
        if alias:
            self._registry.set_alias(self.model_name, alias, info.version)
        return run_id, info.version

    def fail(self) -> None:
        """End the run as failed (the training raised)."""
        if self._run is not None:
            self._ctx.__exit__(RuntimeError, RuntimeError("training failed"), None)
            self._run = None
