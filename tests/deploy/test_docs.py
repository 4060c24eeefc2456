"""docs/deploy.md's commands, run: every `helm lint` / `helm template`, `check-jsonschema`,
`kubernetes-validate` and client-side dry run in its bash blocks runs here as written (an
`helm install` / `upgrade` as `helm template` with the same flags), and what helm renders is
validated with kubernetes-validate --strict. Commands that need an engine or a cluster must be
named as such, so a new runnable command cannot slip by untested."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import HELM, KUBE_VERSIONS, ROOT

DOC = ROOT / "docs" / "deploy.md"
# Run as written (with .cache/bin and the venv on PATH).
RUNNABLE = (
    "helm lint ",
    "helm template ",
    "check-jsonschema ",
    "kubernetes-validate ",
    "concord train encoder --on kubernetes --dry-run client ",
)
# Rendered with `helm template` and the same flags.
AS_TEMPLATE = ("helm install ", "helm upgrade ")
# Need a Docker engine, a cluster, running services or minutes of training.
NOT_HERE = (
    "docker ",
    "kind ",
    "kubectl ",
    "helm test ",
    "helm push ",
    "CONCORD_AUTH_TOKEN=",
    ".venv/bin/concord status",
    "concord train encoder --on local ",
    "concord train encoder --on kubernetes --namespace ",
    "concord train encoder --on kubernetes --dry-run server ",
)
CRDS = {"InferenceService", "ServiceMonitor"}


def doc_commands() -> list[str]:
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", DOC.read_text(), re.S | re.M):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"\s{2,}#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def _as_template(command: str) -> str:
    words = shlex.split(command)
    assert words[:2] in (["helm", "install"], ["helm", "upgrade"]), command
    rest = [
        w for w in words[2:] if w not in ("--install", "--create-namespace", "--wait", "--atomic")
    ]
    return shlex.join(["helm", "template", *rest])


def test_every_command_is_classified() -> None:
    commands = doc_commands()
    unknown = [c for c in commands if not c.startswith(RUNNABLE + AS_TEMPLATE + NOT_HERE)]
    assert not unknown, f"classify these commands in {__file__}: {unknown}"
    runnable = [c for c in commands if c.startswith(RUNNABLE + AS_TEMPLATE)]
    assert len(runnable) >= 10


def _env() -> dict[str, str]:
    path = f"{HELM.parent}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path}


@pytest.mark.parametrize(
    "command", [c for c in doc_commands() if c.startswith(RUNNABLE + AS_TEMPLATE)]
)
def test_doc_command_runs(command: str, tmp_path: Path) -> None:
    if command.startswith(AS_TEMPLATE):
        command = _as_template(command)
    command = command.replace("/tmp/", f"{tmp_path}/")
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    if command.startswith("helm template ") and "&&" not in command and ">" not in command:
        objects = [d for d in yaml.safe_load_all(result.stdout) if d]
        assert objects
        for obj in objects:
            if obj["kind"] not in CRDS:
                kubernetes_validate.validate(obj, KUBE_VERSIONS[-1], strict=True)


def test_a_broken_doc_command_would_fail(tmp_path: Path) -> None:
    """Negative control: the runner does see a failing command."""
    result = subprocess.run(
        ["bash", "-c", "helm template concord charts/concord --set services.encoder.port=abc"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
