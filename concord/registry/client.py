"""`Registry`: Concord's one way into MLflow tracking and the model registry.

Runs log params, metrics and artifacts (tracking.py); a model is any directory of files (e.g.
a torch state dict + JSON config) logged into a run and registered as a version; services
resolve `models:/NAME@ALIAS` or `models:/NAME/VERSION` to a typed `ModelVersionInfo` and a
local copy (cache.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow.artifacts
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from concord.registry.cache import cached_copy
from concord.registry.errors import ModelNotFound, RegistryError
from concord.registry.refs import (
    MODEL_ARTIFACT_PATH,
    ModelRef,
    ModelVersionInfo,
    RegisteredModelInfo,
    parse_model_uri,
)
from concord.registry.tracking import DEFAULT_EXPERIMENT, Run, Tracking

if TYPE_CHECKING:
    from concord.config import Settings

__all__ = [
    "DEFAULT_EXPERIMENT",
    "MODEL_ARTIFACT_PATH",
    "ModelRef",
    "ModelVersionInfo",
    "RegisteredModelInfo",
    "Registry",
    "Run",
    "parse_model_uri",
]


class Registry(Tracking):
    """MLflow tracking (see `Tracking`) + model registry behind a small typed API."""

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
        super().__init__(tracking_uri, artifacts_dir=artifacts_dir, experiment=experiment)
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        """Args: settings: uses `tracking_uri`, `artifacts_dir`, `home`. Returns: a Registry."""
        return cls(
            settings.tracking_uri,
            artifacts_dir=settings.artifacts_dir,
            cache_dir=settings.home / "models",
        )

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
        assert ref.alias is not None  # parse_model_uri gives exactly one of version and alias
        return self.get_alias(ref.name, ref.alias)

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
            return info, cached_copy(self._cache_dir, info, self._download_to)
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
            source=mv.source or "",
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
