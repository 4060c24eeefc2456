"""`Registry`: Concord's one way into MLflow tracking and the model registry.

Runs log params, metrics and artifacts; a model is any directory of files (e.g. a torch state
dict + JSON config) logged into a run and registered as a version; services resolve
`models:/NAME@ALIAS` or `models:/NAME/VERSION` to a typed `ModelVersionInfo` and a local copy.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

# Set before MLflow reads it: upload/download progress bars are noise in services and tests.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow.artifacts
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from concord.registry.errors import InvalidModelUri, ModelNotFound, RegistryError

if TYPE_CHECKING:
    from concord.config import Settings

DEFAULT_EXPERIMENT = "concord"
MODEL_ARTIFACT_PATH = "model"  # where `Run.log_model_dir` puts a model inside its run
_URI_RE = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))/?$")
_COMPLETE = ".concord-complete"  # marker: a cached download finished


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered model version, as services report it."""

    name: str
    version: int
    aliases: tuple[str, ...]
    run_id: str | None
    source: str  # the artifact location the version was registered from
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """`models:/NAME/VERSION`: pins this exact version."""
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class RegisteredModelInfo:
    """A registered model (all its versions), as listings report it."""

    name: str
    tags: Mapping[str, str] = field(default_factory=dict)
    aliases: Mapping[str, int] = field(default_factory=dict)  # alias -> version
    description: str = ""


@dataclass(frozen=True)
class ModelRef:
    """A parsed model URI: a name with exactly one of version or alias."""

    name: str
    version: int | None = None
    alias: str | None = None


def parse_model_uri(uri: str) -> ModelRef:
    """Parse `models:/NAME/VERSION` or `models:/NAME@ALIAS`.

    Args:
        uri: the model URI.

    Returns:
        The name with its version or alias.

    Raises:
        InvalidModelUri: anything else (stages such as `/Production` are not supported).
    """
    m = _URI_RE.match(uri.strip()) if isinstance(uri, str) else None
    if m is None:
        raise InvalidModelUri(f"{uri!r} is not models:/NAME/VERSION or models:/NAME@ALIAS")
    version = m.group("version")
    if version is not None:
        if not version.isdigit() or int(version) < 1:
            raise InvalidModelUri(
                f"{uri!r}: version must be a positive integer (stages are not supported; "
                "use an alias: models:/NAME@ALIAS)"
            )
        return ModelRef(m.group("name"), version=int(version))
    return ModelRef(m.group("name"), alias=m.group("alias"))


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


class Registry:
    """MLflow tracking + model registry behind a small typed API.

    Uses an explicit `MlflowClient` (never MLflow's process-global tracking URI), so several
    registries can live in one process (tests run the sqlite default and a server side by side).
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        artifacts_dir: str | os.PathLike[str] | None = None,
        experiment: str = DEFAULT_EXPERIMENT,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        """Args:
        tracking_uri: `sqlite:///...` (embedded) or `http://host:port` (server).
        artifacts_dir: where an embedded (sqlite/file) store keeps artifacts; default: beside
            the database. Ignored for a server, which has its own artifact store.
        experiment: the experiment runs go to unless `start_run` names another.
        cache_dir: where `download` keeps model copies (`NAME/VERSION`); default: temp dirs.
        """
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
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        """Args: settings: uses `tracking_uri`, `artifacts_dir`, `home`. Returns: a Registry."""
        return cls(
            settings.tracking_uri,
            artifacts_dir=settings.artifacts_dir,
            cache_dir=settings.home / "models",
        )

    @property
    def client(self) -> MlflowClient:
        """The underlying MLflow client (for what this class does not cover)."""
        return self._client

    # ----------------------------------------------------------------- runs

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
                    exp_id = self._client.get_experiment_by_name(name).experiment_id  # type: ignore[union-attr]
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

    # ----------------------------------------------------------------- registry

    def register_model(
        self,
        name: str,
        run_id: str,
        artifact_path: str = MODEL_ARTIFACT_PATH,
        *,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
    ) -> ModelVersionInfo:
        """Register the files a run logged under `artifact_path` as a new version of `name`.

        Args:
            name: registered model name (created on first use).
            run_id: the run that logged the model directory.
            artifact_path: where in the run (`Run.log_model_dir`'s return value).
            tags: version tags.
            description: version description.

        Returns:
            The new version.
        """
        try:
            run = self._client.get_run(run_id)
        except MlflowException as exc:
            raise _translate(exc, f"run {run_id!r}") from exc
        if not self._client.list_artifacts(run_id, artifact_path):
            raise RegistryError(f"run {run_id} has no artifacts under {artifact_path!r}")
        try:
            self._client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise _translate(exc, f"model {name!r}") from exc
        source = f"{run.info.artifact_uri.rstrip('/')}/{artifact_path.strip('/')}"
        mv = self._client.create_model_version(
            name, source=source, run_id=run_id, tags=dict(tags or {}), description=description
        )
        mv = self._wait_ready(name, mv)
        return self._info(mv)

    def _wait_ready(self, name: str, mv: ModelVersion) -> ModelVersion:
        # Local and file sources are READY at once; other stores may copy asynchronously.
        for _ in range(600):
            if mv.status == "READY":
                return mv
            if mv.status == "FAILED_REGISTRATION":
                raise RegistryError(f"registering {name} v{mv.version} failed: {mv.status_message}")
            time.sleep(0.1)
            mv = self._client.get_model_version(name, mv.version)
        raise RegistryError(f"{name} v{mv.version} not READY (status {mv.status})")

    def set_alias(self, name: str, alias: str, version: int) -> ModelVersionInfo:
        """Point `alias` at `version` (moving it if it pointed elsewhere).

        Returns:
            The version the alias now names.
        """
        self.get_version(name, version)  # ModelNotFound for a missing model or version
        try:
            self._client.set_registered_model_alias(name, alias, str(version))
        except MlflowException as exc:
            raise _translate(exc, f"alias {alias!r} of {name!r}") from exc
        return self.get_alias(name, alias)

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove an alias. Raises: ModelNotFound if the model or alias does not exist."""
        self.get_alias(name, alias)
        try:
            self._client.delete_registered_model_alias(name, alias)
        except MlflowException as exc:
            raise _translate(exc, f"alias {alias!r} of {name!r}") from exc

    def get_version(self, name: str, version: int) -> ModelVersionInfo:
        """Returns: that version. Raises: ModelNotFound."""
        try:
            return self._info(self._client.get_model_version(name, str(int(version))))
        except MlflowException as exc:
            raise _translate(exc, f"models:/{name}/{version}") from exc

    def get_alias(self, name: str, alias: str) -> ModelVersionInfo:
        """Returns: the version `alias` points at. Raises: ModelNotFound."""
        try:
            return self._info(self._client.get_model_version_by_alias(name, alias))
        except MlflowException as exc:
            raise _translate(exc, f"models:/{name}@{alias}") from exc

    def resolve(self, uri: str) -> ModelVersionInfo:
        """Resolve `models:/NAME@ALIAS` or `models:/NAME/VERSION`.

        Args:
            uri: the model URI.

        Returns:
            The version it names now.

        Raises:
            InvalidModelUri, ModelNotFound.
        """
        ref = parse_model_uri(uri)
        if ref.version is not None:
            return self.get_version(ref.name, ref.version)
        return self.get_alias(ref.name, ref.alias)  # type: ignore[arg-type]

    def list_versions(self, name: str) -> list[ModelVersionInfo]:
        """Returns: every version of `name`, oldest first. Raises: ModelNotFound."""
        try:
            self._client.get_registered_model(name)
        except MlflowException as exc:
            raise _translate(exc, f"model {name!r}") from exc
        if "'" in name:
            raise RegistryError(f"model name {name!r} cannot contain a quote")
        versions: list[ModelVersion] = []
        token: str | None = None
        while True:
            page = self._client.search_model_versions(
                f"name='{name}'", max_results=200, page_token=token
            )
            versions.extend(page)
            token = page.token
            if not token:
                break
        return sorted((self._info(v) for v in versions), key=lambda v: v.version)

    def set_model_tags(self, name: str, tags: Mapping[str, str]) -> None:
        """Tag a registered model (not one version), e.g. to make it findable by `list_models`.

        Raises: ModelNotFound.
        """
        try:
            for key, value in tags.items():
                self._client.set_registered_model_tag(name, key, str(value))
        except MlflowException as exc:
            raise _translate(exc, f"model {name!r}") from exc

    def list_models(self, tags: Mapping[str, str] | None = None) -> list[RegisteredModelInfo]:
        """Registered models carrying every one of `tags` (all models when None), by name.

        Args:
            tags: registered-model tag -> exact value, e.g. {"concord.kind": "concept"}.
        Returns:
            The models with their tags and aliases (every page of MLflow's search).
        """
        clauses = []
        for key, value in (tags or {}).items():
            if "`" in key or "'" in str(value):
                raise RegistryError(f"tag filter {key!r}={value!r} cannot contain quotes")
            clauses.append(f"tags.`{key}` = '{value}'")
        query = " AND ".join(clauses) or None
        found: list[RegisteredModelInfo] = []
        token: str | None = None
        while True:
            try:
                page = self._client.search_registered_models(
                    query, max_results=100, page_token=token
                )
            except MlflowException as exc:
                raise _translate(exc, f"models tagged {dict(tags or {})}") from exc
            for model in page:
                found.append(
                    RegisteredModelInfo(
                        name=model.name,
                        tags=dict(model.tags or {}),
                        aliases={k: int(v) for k, v in (model.aliases or {}).items()},
                        description=model.description or "",
                    )
                )
            token = page.token
            if not token:
                return sorted(found, key=lambda m: m.name)

    def download(
        self, model: str | ModelVersionInfo, dst: str | os.PathLike[str] | None = None
    ) -> tuple[ModelVersionInfo, Path]:
        """Resolve a model and copy its files to a local directory.

        Args:
            model: `models:/NAME@ALIAS`, `models:/NAME/VERSION`, or a `ModelVersionInfo`.
            dst: target directory (created); default: the cache dir's `NAME/VERSION` (reused
                when complete), else a new temp dir.

        Returns:
            The resolved version and the directory holding its files.
        """
        info = model if isinstance(model, ModelVersionInfo) else self.resolve(model)
        if dst is None and self._cache_dir is not None:
            target = self._cache_dir / info.name / str(info.version)
            if (target / _COMPLETE).is_file():
                return info, target
            # Download beside the target and rename, so readers never see half a model.
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{info.version}-", dir=target.parent))
            self._download_to(info, staging)
            (staging / _COMPLETE).touch()
            try:
                staging.rename(target)
            except OSError:  # another process finished first
                shutil.rmtree(staging, ignore_errors=True)
            return info, target
        out = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="concord-model-"))
        self._download_to(info, out)
        return info, out

    def _download_to(self, info: ModelVersionInfo, out: Path) -> None:
        """Put the version's files directly in `out` (MLflow nests them under the last name)."""
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=out.parent))
        try:
            # The exact version's own location, not the alias (it may have moved since
            # `resolve`); `models:/` URIs would consult MLflow's process-global registry URI.
            source = self._client.get_model_version_download_uri(info.name, str(info.version))
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=source, dst_path=str(staging), tracking_uri=self.tracking_uri
                )
            )
            if not local.is_dir():
                raise RegistryError(f"{info.uri} ({source}) is not a directory of model files")
            for child in local.iterdir():
                shutil.move(str(child), str(out / child.name))
        except MlflowException as exc:
            raise _translate(exc, info.uri) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _info(self, mv: ModelVersion) -> ModelVersionInfo:
        return ModelVersionInfo(
            name=mv.name,
            version=int(mv.version),
            aliases=tuple(sorted(mv.aliases or ())),
            run_id=mv.run_id or None,
            source=mv.source,
            tags=dict(mv.tags or {}),
        )


def _translate(exc: MlflowException, what: str) -> RegistryError:
    # A missing alias comes back as INVALID_PARAMETER_VALUE "... alias X not found".
    missing = exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")
    if missing or "not found" in exc.message.lower():
        return ModelNotFound(f"{what} does not exist: {exc.message}")
    if exc.error_code == "INVALID_PARAMETER_VALUE":
        return RegistryError(f"{what}: {exc.message}")
    return RegistryError(f"{what}: {exc}")


def _default_artifacts_dir(tracking_uri: str) -> Path:
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///") :]).parent / "artifacts"
    if tracking_uri.startswith("file:"):
        return Path(unquote(urlparse(tracking_uri).path)) / "artifacts"
    return Path(tracking_uri) / "artifacts"
