"""Device placement on a GPU-less machine: device settings resolve to devices that exist, a GPU
asked for and not visible is a clear start-up error (never a silently unready service), autocast
is a no-op on the CPU, and torch threads follow the container's cgroup CPU quota."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from concord import devices
from concord.config import DeviceSettings, Settings
from concord.devices import (
    DeviceUnavailable,
    autocast,
    autocast_dtype,
    configure_torch_threads,
    cpu_quota,
    default_threads,
    resolve_device,
    service_device,
)
from concord.errors import ConcordError


def gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Pretend `count` GPUs are visible (0: none)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


# ------------------------------------------------------------------------------- resolve


def test_cpu_and_auto_resolve_to_the_cpu_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus(monkeypatch, 0)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" AUTO ") == torch.device("cpu")


def test_auto_and_cuda_pick_the_first_visible_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_cuda_without_a_gpu_names_device_count_env_and_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpus(monkeypatch, 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(DeviceUnavailable) as info:
        resolve_device("cuda", setting="--device")
    message = str(info.value)
    assert "'cuda'" in message
    assert "no GPU is visible" in message
    assert "CUDA_VISIBLE_DEVICES ''" in message
    assert "set --device to cpu" in message
    assert isinstance(info.value, ConcordError) and isinstance(info.value, RuntimeError)


def test_a_gpu_index_beyond_the_visible_ones_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus(monkeypatch, 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(
        DeviceUnavailable, match=r"'cuda:5'.*2 GPU\(s\) are visible \(cuda:0\.\.cuda:1\)"
    ):
        resolve_device("cuda:5")
    with pytest.raises(DeviceUnavailable, match="CUDA_VISIBLE_DEVICES unset"):
        resolve_device("cuda:2")


def test_service_errors_name_both_service_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus(monkeypatch, 0)
    settings = DeviceSettings(default="cpu", services={"generator": "cuda:1"})
    assert service_device(settings, "encoder") == torch.device("cpu")
    with pytest.raises(DeviceUnavailable) as info:
        service_device(settings, "generator")
    assert "CONCORD_DEVICE__DEFAULT" in str(info.value)
    assert "CONCORD_DEVICE__SERVICES" in str(info.value)
    assert '{"generator": "cpu"}' in str(info.value)


def test_malformed_specs_are_value_errors() -> None:
    for spec in ("gpu", "cuda:x", "cuda:"):
        with pytest.raises(ValueError):
            resolve_device(spec)


# ------------------------------------------------------------------------------- autocast


def test_autocast_is_a_no_op_on_the_cpu() -> None:
    cpu = torch.device("cpu")
    for precision in ("auto", "fp32", "bf16", "fp16"):
        assert autocast_dtype(cpu, precision) is None  # type: ignore[arg-type]
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with autocast(cpu, "bf16"):
        assert not torch.is_autocast_enabled("cpu")
        y = layer(x)
    assert y.dtype == torch.float32
    assert torch.equal(y, layer(x))


def test_autocast_dtype_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert autocast_dtype(cuda, "auto") == torch.bfloat16
    assert autocast_dtype(cuda, "fp16") == torch.float16
    assert autocast_dtype(cuda, "fp32") is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert autocast_dtype(cuda, "auto") is None  # fp16 only when asked for
    with pytest.raises(DeviceUnavailable, match="bf16"):
        autocast_dtype(cuda, "bf16")


# ------------------------------------------------------------------------------- threads


def cgroup(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return tmp_path


def test_cpu_quota_cgroup_v2(tmp_path: Path) -> None:
    assert cpu_quota(cgroup(tmp_path / "a", {"cpu.max": "max 100000"})) is None
    assert cpu_quota(cgroup(tmp_path / "b", {"cpu.max": "150000 100000"})) == 1.5
    assert cpu_quota(cgroup(tmp_path / "c", {"cpu.max": "400000 100000"})) == 4.0


def test_cpu_quota_cgroup_v1(tmp_path: Path) -> None:
    root = cgroup(
        tmp_path / "a", {"cpu/cpu.cfs_quota_us": "250000", "cpu/cpu.cfs_period_us": "100000"}
    )
    assert cpu_quota(root) == 2.5
    unlimited = cgroup(
        tmp_path / "b",
        {"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
    )
    assert cpu_quota(unlimited) is None
    assert cpu_quota(tmp_path / "missing") is None


def test_default_threads_round_the_quota_up_within_the_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devices, "available_cpus", lambda: 16)
    assert default_threads(cgroup(tmp_path / "a", {"cpu.max": "150000 100000"})) == 2
    assert default_threads(cgroup(tmp_path / "b", {"cpu.max": "50000 100000"})) == 1
    assert default_threads(cgroup(tmp_path / "c", {"cpu.max": "max 100000"})) == 16
    monkeypatch.setattr(devices, "available_cpus", lambda: 2)
    assert default_threads(cgroup(tmp_path / "d", {"cpu.max": "800000 100000"})) == 2


def test_configure_torch_threads_once_per_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(devices, "_configured", None)
    monkeypatch.setattr(devices, "available_cpus", lambda: 16)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(("intra", n)))

    def interop(n: int) -> None:  # as torch does once parallel work has run
        raise RuntimeError("cannot set number of interop threads after parallel work has started")

    monkeypatch.setattr(torch, "set_num_interop_threads", interop)
    root = cgroup(tmp_path, {"cpu.max": "150000 100000"})
    assert configure_torch_threads(DeviceSettings(), root) == 2
    assert configure_torch_threads(DeviceSettings(torch_threads=7), root) == 2  # first one wins
    assert calls == [("intra", 2)]

    monkeypatch.setattr(devices, "_configured", None)
    assert configure_torch_threads(DeviceSettings(torch_threads=3), root) == 3
    assert calls[-1] == ("intra", 3)


# ------------------------------------------------------------------------------- services


def cuda_settings(tmp_path: Path, **device: object) -> Settings:
    return Settings(
        home=tmp_path,
        encoder_model=str(tmp_path / "no-such-model"),
        device=DeviceSettings(**device),  # type: ignore[arg-type]
    )


def no_registry() -> None:
    raise AssertionError("the registry is not needed")


def test_encoder_with_a_missing_gpu_fails_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.encoder.servable import EncoderServable

    gpus(monkeypatch, 0)
    servable = EncoderServable(cuda_settings(tmp_path, default="cuda"), no_registry)  # type: ignore[arg-type]
    with pytest.raises(DeviceUnavailable, match="CONCORD_DEVICE__DEFAULT"):
        asyncio.run(servable.start())
    assert not servable.ready


def test_encoder_with_a_missing_model_still_starts_not_ready(tmp_path: Path) -> None:
    from services.encoder.servable import EncoderServable

    servable = EncoderServable(cuda_settings(tmp_path, default="cpu"), no_registry)  # type: ignore[arg-type]

    async def run() -> None:
        await servable.start()
        await servable.stop()

    asyncio.run(run())
    assert not servable.ready
    assert "no-such-model" in servable.load_error
    assert servable.device == torch.device("cpu")


def test_scorer_and_generator_with_a_missing_gpu_fail_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.generator.servable import GeneratorServable
    from services.scorer.servable import ScorerServable

    gpus(monkeypatch, 0)
    settings = cuda_settings(
        tmp_path, default="cpu", services={"scorer": "cuda", "generator": "cuda:1"}
    )
    scorer = ScorerServable(settings, no_registry)  # type: ignore[arg-type]
    with pytest.raises(DeviceUnavailable, match="CONCORD_DEVICE__SERVICES"):
        asyncio.run(scorer.start())
    generator = GeneratorServable(settings, no_registry)  # type: ignore[arg-type]
    with pytest.raises(DeviceUnavailable, match="'cuda:1'"):
        generator.load()
    assert not scorer.ready and not generator.ready


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_serving_the_encoder_on_a_missing_gpu_exits_non_zero(tmp_path: Path) -> None:
    """What `concord serve encoder` does in a container whose GPU is missing: it stops."""
    env = {
        **os.environ,
        "CONCORD_HOME": str(tmp_path),
        "CONCORD_ENCODER_MODEL": str(tmp_path / "no-such-model"),
        "CONCORD_DEVICE__DEFAULT": "cuda",
        "CONCORD_SERVING__BASE_PORT": str(free_port()),
        "CONCORD_SERVING__METRICS_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.encoder"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "DeviceUnavailable" in done.stderr
    assert "device 'cuda' was asked for but no GPU is visible" in done.stderr
    assert "CONCORD_DEVICE__DEFAULT" in done.stderr
