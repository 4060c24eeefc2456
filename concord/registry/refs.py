"""What the registry hands out: `models:/` references and typed model records.

No MLflow here, so code that only parses or reports model URIs stays light.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from concord.registry.errors import InvalidModelUri

MODEL_ARTIFACT_PATH = "model"  # where `Run.log_model_dir` puts a model inside its run
_URI_RE = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))/?$")


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
