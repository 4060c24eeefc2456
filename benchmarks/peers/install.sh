#!/usr/bin/env bash
# Install Jina's clip-as-service (clip-server + clip-client) into a venv of its own,
# .cache/peers/venv: its pins (grpcio 1.57, protobuf 3.x, pydantic 1, jina 3, docarray 0.21)
# clash with the project's, so it never goes into .venv.
#
# torch, torchvision and their CUDA wheels are not downloaded again: the project's own are
# lent to the peer venv through a .pth file (benchmarks/peers/torch_link.py), so both services
# run the same torch build. The script refuses to go on if pip would still install or replace
# torch (it would then touch the project's files through the links).
#
#   benchmarks/peers/install.sh            # CLIP_SERVER_VERSION=0.8.3 by default
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PROJECT_PY="${PROJECT_PY:-$ROOT/.venv/bin/python}"
PEERS="${PEERS_HOME:-$ROOT/.cache/peers}"
VERSION="${CLIP_SERVER_VERSION:-0.8.3}"
VENV="$PEERS/venv"
# The same interpreter as the project's venv (torch's C extensions are built for it).
BASE_PY="$("$PROJECT_PY" -c 'import sys; print(sys._base_executable)')"
PYVER="$("$PROJECT_PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"

mkdir -p "$PEERS"
if [ ! -x "$VENV/bin/python" ]; then
  "$BASE_PY" -m venv "$VENV"
fi
"$PROJECT_PY" "$ROOT/benchmarks/peers/torch_link.py" "$PEERS/torch-site" > "$PEERS/lent.txt"
echo "$PEERS/torch-site" > "$VENV/lib/python$PYVER/site-packages/zz-concord-lent-torch.pth"

PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install --quiet --upgrade pip  # the bundled pip's resolver is far slower
REQS=("clip-server==$VERSION" "clip-client==$VERSION" "setuptools<81" -c "$ROOT/benchmarks/peers/constraints.txt")
"${PIP[@]}" install --quiet --dry-run --report "$PEERS/plan.json" "${REQS[@]}"
"$VENV/bin/python" - "$PEERS/plan.json" <<'PY'
import json, sys
plan = json.load(open(sys.argv[1]))
names = sorted(i["metadata"]["name"].lower() for i in plan["install"])
lent = [n for n in names if n in ("torch", "torchvision", "triton") or n.startswith(("nvidia", "cuda"))]
if lent:
    sys.exit(f"pip would install {lent} into the peer venv (over the lent torch): refusing")
print(f"installing {len(names)} packages into the peer venv")
PY
"${PIP[@]}" install --quiet "${REQS[@]}"
"$VENV/bin/python" -c '
import importlib.metadata as md, torch
print("peer venv:", ", ".join(f"{n}=={md.version(n)}" for n in
      ("clip-server", "clip-client", "jina", "docarray", "grpcio", "protobuf", "open_clip_torch")),
      "| torch", torch.__version__, "(lent from the project venv)")'
