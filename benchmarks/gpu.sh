#!/usr/bin/env bash
# The GPU path, measured in one run (issue 17): a ViT-B/32-size CLIP in bf16, raw forward
# ceilings vs the encoder served over gRPC (JPEG decode + preprocess + forward) at batch
# 1/32/256 and several clients, and the same for search and the scorer. Writes
# bench_gpu.md + bench_gpu.json (and bench_gpu.log) to $OUT when set, else reports/.
# About 4-6 minutes on one H200; the Python part stops itself at ~9 minutes (GPU_BENCH_TIMEOUT)
# and rewrites its report after every section, so a stopped run still reports what it measured.
#
#   bash benchmarks/gpu.sh                  # full run on cuda (extra args go to gpu_bench)
#   bash benchmarks/gpu.sh --quick          # tiny model, seconds
#   bash benchmarks/gpu.sh --device cpu --quick --out /tmp/x   # the CPU dry run (tests)
#   bash benchmarks/gpu.sh --fetch-wheels   # here, before a device run: see below
#
# Which Python runs it, first that works:
#   1. .venv/bin/python (the project's venv, `make install`);
#   2. with no venv: $GPU_BENCH_PYTHON or python3, if it imports torch and sees a GPU -- the
#      device machine's image (python3.12, torch, torchvision, transformers, numpy, grpcio,
#      protobuf, pillow, matplotlib, typer... but no pydantic, mlflow, qdrant-edge-py) -- with
#      the repo on PYTHONPATH and the wheels in .whl/ installed to /tmp/concord-site;
#   3. `make install` (python3.11 and a package index), then 1.
# (GPU_BENCH_NO_VENV=1 skips 1 and GPU_BENCH_ANY_TORCH=1 accepts a torch without a GPU in 2:
# how the device path is tried on a machine without one.)
#
# On the device machine (no network; the venv cannot travel: 64 MiB limit):
#   here:   bash benchmarks/gpu.sh --fetch-wheels      # .whl/: cp312 wheels of every package
#           the benchmark imports that the device image lacks, pinned to the venv's versions
#           (recorded by a CPU dry run; grpcio and protobuf always, for the generated code)
#   there:  run(command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=600)
#   (.whl/ travels by itself when it is not git-ignored; name it in carry when it is.)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false MLFLOW_DISABLE_TELEMETRY=true
WHEELS="${GPU_BENCH_WHEELS:-$ROOT/.whl}"
SITE="${GPU_BENCH_SITE:-/tmp/concord-site}"
# Distributions the device image already holds (.library/device/KINDS.md, 2026-11-17); the
# others the benchmark imports travel as wheels. grpcio, protobuf and typing-extensions
# travel anyway: Concord's generated protobuf/gRPC code checks their versions at import.
DEVICE_HAS="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio
attrs botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax
e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
gpytorch h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig
interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13
nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout
pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash
yarl zipp"

log() { echo "gpu.sh: $*" >&2; }

fetch_wheels() {
    [ -x .venv/bin/python ] || make install
    local record
    record="$(mktemp)"
    log "recording what a CPU dry run imports (about a minute)"
    CONCORD_GPU_BENCH_RECORD_IMPORTS="$record" .venv/bin/python -m benchmarks.gpu_bench \
        --device cpu --quick --out "$(mktemp -d)" >/dev/null
    DEVICE_HAS="$DEVICE_HAS" .venv/bin/python - "$record" >"$record.pins" <<'EOF'
import os, re, sys
from importlib.metadata import packages_distributions, version

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

modules = {m for m in open(sys.argv[1]).read().split() if m and m not in sys.stdlib_module_names}
has = {norm(n) for n in os.environ["DEVICE_HAS"].split()}
always = {"grpcio", "protobuf", "typing-extensions"}
skip = {"concord"}  # the repo itself travels
# torch and the CUDA stack are the device image's own (and hundreds of MB)
heavy = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-|cuda-|jax)")
providers = packages_distributions()
dists = {norm(d) for m in modules for d in providers.get(m, []) if not heavy.match(norm(d))}
if "mlflow-skinny" in dists:
    dists.discard("mlflow")  # the client is mlflow-skinny; mlflow adds the server UI
for d in sorted(dists - skip):
    if d in always or d not in has:
        print(f"{d}=={version(d)}")
EOF
    log "wheels to fetch: $(tr '\n' ' ' <"$record.pins")"
    mkdir -p "$WHEELS"
    local platforms=()
    for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
        manylinux2014_x86_64 manylinux1_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 \
        manylinux_2_24_x86_64 manylinux_2_5_x86_64; do
        platforms+=(--platform "$p")
    done
    .venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platforms[@]}" -d "$WHEELS" -r "$record.pins"
    rm -f "$record" "$record.pins"
    log "$(ls "$WHEELS" | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1) in $WHEELS"
    log "git-ignore it here if you like: echo /.whl/ >> .git/info/exclude (then carry=[\".whl\"])"
}

usable() {  # a python that imports torch and sees a GPU (GPU_BENCH_ANY_TORCH=1: any torch)
    "$1" -c 'import os, sys, torch
sys.exit(0 if torch.cuda.is_available() or os.environ.get("GPU_BENCH_ANY_TORCH") else 1)' \
        2>/dev/null
}

pick_python() {  # sets PY (and PYTHONPATH where Concord is not installed)
    if [ -x .venv/bin/python ] && [ -z "${GPU_BENCH_NO_VENV:-}" ]; then
        PY=.venv/bin/python
        return
    fi
    local candidate
    for candidate in "${GPU_BENCH_PYTHON:-}" python3; do
        if [ -n "$candidate" ] && command -v "$candidate" >/dev/null && usable "$candidate"; then
            if compgen -G "$WHEELS/*.whl" >/dev/null; then
                log "installing $(ls "$WHEELS"/*.whl | wc -l) carried wheels into $SITE"
                "$candidate" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
                    --upgrade --target "$SITE" "$WHEELS"/*.whl >&2
                export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
            fi
            export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
            if "$candidate" -c 'import concord.config, concord.registry, services.encoder.app
import services.retrieval.app, services.scorer.app, pipelines.evaluate.report
import benchmarks.harness' >&2; then
                PY="$candidate"
                return
            fi
            log "$candidate has torch and a GPU but cannot import Concord (above): run"
            log "'bash benchmarks/gpu.sh --fetch-wheels' where pip works and carry .whl/"
            break
        fi
    done
    log "no venv: make install"
    make install >&2
    PY=.venv/bin/python
}

if [ "${1:-}" = "--fetch-wheels" ]; then
    fetch_wheels
    exit 0
fi

pick_python
OUT_DIR="${OUT:-reports}"
for ((i = 1; i <= $#; i++)); do  # the log goes beside the report (gpu_bench's defaults)
    j=$((i + 1))
    if [ "${!i}" = "--out" ]; then
        OUT_DIR="${!j:-reports}"
    elif [ "${!i}" = "--device" ] && [ "${!j:-}" = "cpu" ] && [ -z "${OUT:-}" ] &&
        [ "$OUT_DIR" = reports ]; then
        OUT_DIR="${TMPDIR:-/tmp}/concord-gpu-bench-dry-run"  # never a CPU run in reports/
    fi
done
mkdir -p "$OUT_DIR"
log "python: $PY ($("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__)'))"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader >&2 || true
ARGS=("$@")
if [ ${#ARGS[@]} -eq 0 ]; then
    ARGS=(--device cuda --compile)
fi
set -o pipefail
timeout -k 15 "${GPU_BENCH_TIMEOUT:-540}" "$PY" -m benchmarks.gpu_bench "${ARGS[@]}" 2>&1 |
    tee "$OUT_DIR/bench_gpu.log"
