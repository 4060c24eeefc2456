"""Where torch runs: resolve a device setting (auto | cpu | cuda | cuda:N) to a torch.device that
exists, pick the autocast precision of a GPU, and size torch's CPU thread pools to the container.

Pure helpers (torch only: no grpc, no I/O beyond reading the cgroup files). Services resolve their
device from `settings.device.for_service(name)` at start; pipelines from their `--device` option.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch

from concord.config import DeviceSettings
from concord.errors import ConcordError

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16"]
CGROUP_ROOT = Path("/sys/fs/cgroup")
# What a service's error message tells the operator to change.
SERVICE_SETTING = (
    "CONCORD_DEVICE__DEFAULT (all services) or CONCORD_DEVICE__SERVICES "
    '(e.g. \'{{"{service}": "cpu"}}\')'
)


class DeviceUnavailable(ConcordError, RuntimeError):
    """A device was asked for that this machine (or container) does not have."""

    status = "FAILED_PRECONDITION"


def resolve_device(spec: str, *, setting: str = "CONCORD_DEVICE__DEFAULT") -> torch.device:
    """Turn a device setting into a torch.device that exists here.

    Args:
        spec: "auto" (cuda:0 when a GPU is visible, else cpu), "cpu", "cuda" (= cuda:0) or
            "cuda:N".
        setting: the setting (or option) that holds `spec`, named in the error.
    Returns:
        The device (always with an index for CUDA).
    Raises:
        DeviceUnavailable: a GPU was asked for and is not visible; the message says which device,
            how many GPUs are visible, CUDA_VISIBLE_DEVICES and which setting to change.
        ValueError: `spec` is not one of the forms above.
    """
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    cuda = re.fullmatch(r"cuda(?::([0-9]+))?", spec)
    if cuda:
        index = int(cuda.group(1) or 0)
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= visible:
            env = os.environ.get("CUDA_VISIBLE_DEVICES")
            env_text = "unset" if env is None else repr(env)
            have = (
                "no GPU is visible"
                if visible == 0
                else f"{visible} GPU(s) are visible (cuda:0..cuda:{visible - 1})"
            )
            raise DeviceUnavailable(
                f"device {spec!r} was asked for but {have} "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}, "
                f"CUDA_VISIBLE_DEVICES {env_text}); set {setting} to cpu, auto or a visible GPU"
            )
        return torch.device("cuda", index)
    raise ValueError(f"{setting}: {spec!r} is not cpu, cuda, cuda:N or auto")


def service_device(device_settings: DeviceSettings, service: str) -> torch.device:
    """The device `service` runs on (its override, else the default); errors name both settings."""
    setting = SERVICE_SETTING.format(service=service)
    return resolve_device(device_settings.for_service(service), setting=setting)


def autocast_dtype(device: torch.device, precision: Precision = "auto") -> torch.dtype | None:
    """The autocast dtype for `device`; None means plain fp32 (always on the CPU).

    auto: bf16 where the GPU supports it (Ampere and later), else fp32: fp16 can overflow in
    activations trained in fp32, so it is used only when asked for.
    """
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    bf16 = torch.cuda.is_bf16_supported()
    if precision == "bf16" and not bf16:
        raise DeviceUnavailable(
            f"precision bf16 was asked for but {device} does not support it; "
            "set CONCORD_DEVICE__PRECISION to fp16, fp32 or auto"
        )
    return torch.bfloat16 if bf16 else None


@contextmanager
def autocast(device: torch.device, precision: Precision = "auto") -> Iterator[None]:
    """Run matmuls and convolutions in reduced precision on a GPU (torch.autocast); nothing on
    the CPU or for fp32. Callers convert outputs back with `.float()`."""
    dtype = autocast_dtype(device, precision)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type="cuda", dtype=dtype):
        yield


@contextmanager
def inference(device: torch.device, precision: Precision = "auto") -> Iterator[None]:
    """inference_mode + autocast: how a served model call runs."""
    with torch.inference_mode(), autocast(device, precision):
        yield


def describe(device: torch.device, precision: Precision = "auto") -> str:
    """A line for logs: "cuda:0 (NVIDIA H200, bf16)" or "cpu (fp32, 4 threads)"."""
    if device.type == "cuda":
        dtype = autocast_dtype(device, precision)
        name = torch.cuda.get_device_name(device)
        return f"{device} ({name}, {str(dtype).removeprefix('torch.') if dtype else 'fp32'})"
    return f"{device} (fp32, {torch.get_num_threads()} threads)"


# ------------------------------------------------------------------------------- CPU threads


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The CPUs this container may use by its cgroup quota (e.g. 1.5); None when unlimited or
    unknown.

    Reads cgroup v2 `cpu.max` ("max 100000" or "150000 100000"), else cgroup v1
    `cpu.cfs_quota_us` / `cpu.cfs_period_us` (quota -1: unlimited) under `root`, `root/cpu` or
    `root/cpu,cpuacct`.
    """
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        parts = v2.split()
        if len(parts) == 2 and parts[0] != "max":
            try:
                quota, period = int(parts[0]), int(parts[1])
            except ValueError:
                return None
            return quota / period if quota > 0 and period > 0 else None
        return None
    for directory in (root, root / "cpu", root / "cpu,cpuacct"):
        quota_text = _read(directory / "cpu.cfs_quota_us")
        period_text = _read(directory / "cpu.cfs_period_us")
        if quota_text is None or period_text is None:
            continue
        try:
            quota, period = int(quota_text), int(period_text)
        except ValueError:
            return None
        return quota / period if quota > 0 and period > 0 else None
    return None


def available_cpus() -> int:
    """Cores this process may run on (its affinity mask, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_threads(root: Path = CGROUP_ROOT) -> int:
    """torch intra-op threads for this container: the quota rounded up (1.5 CPUs -> 2), never more
    than the cores it may run on. torch's own default counts the host's cores, which on a node
    with a 2-CPU limit oversubscribes the quota and gets the pod throttled."""
    cores = available_cpus()
    quota = cpu_quota(root)
    if quota is None:
        return cores
    return max(1, min(cores, math.ceil(quota)))


_configured: int | None = None  # threads set by configure_torch_threads in this process


def configure_torch_threads(device_settings: DeviceSettings, root: Path = CGROUP_ROOT) -> int:
    """Set torch's thread pools once per process: `torch_threads`, else `default_threads()`.

    Interop threads can only be set before torch's first parallel work; later calls keep theirs.
    Returns:
        The intra-op thread count in effect.
    """
    global _configured
    if _configured is not None:
        return _configured
    threads = device_settings.torch_threads or default_threads(root)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # parallel work already ran in this process: keep torch's pool
        log.debug("torch interop threads already fixed; left as they are")
    _configured = threads
    log.info("torch uses %d CPU threads (quota %s)", threads, cpu_quota(root) or "none")
    return threads
