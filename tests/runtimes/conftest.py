"""Fixtures for the serving runtimes: the tiny random encoder of the encoder-service tests, its
in-process reference embeddings, and servers started as subprocesses on free loopback ports.

`kserve` is never imported into the pytest process (it cannot live beside `tritonclient.grpc`,
which these tests use as a client): the KServe runtime always runs in a subprocess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fixtures.models import tiny_encoder
from tests.fixtures.serving import free_ports

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0
BENTO_SERVICE = "services.encoder.bento:EncoderBento"


@dataclass
class Reference:
    """The torch model loaded in this process: what every runtime must reproduce."""

    directory: Path
    model: object
    tokenizer: object

    def texts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, object]:
        batch = self.tokenizer(texts)  # type: ignore[operator]
        with torch.inference_mode():
            out = self.model.encode_text(batch.input_ids, batch.attention_mask)  # type: ignore[attr-defined]
        return out.pooled.numpy(), out.tokens.numpy(), batch

    def images(self, uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pixels = torch.from_numpy(uint8).permute(0, 3, 1, 2).float().div_(255.0)
        with torch.inference_mode():
            out = self.model.encode_image(pixels)  # type: ignore[attr-defined]
        return out.pooled.numpy(), out.tokens.numpy()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_encoder(tmp_path_factory)


@pytest.fixture(scope="session")
def reference(model_dir: Path) -> Reference:
    from concord.checkpoints import load_encoder

    model, tokenizer = load_encoder(model_dir)
    return Reference(model_dir, model, tokenizer)


class Subprocess:
    """A server in its own process group; logs to a file shown when it fails to start."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._file = log.open("wb")
        self.proc = subprocess.Popen(
            args,
            cwd=REPO,
            env={**os.environ, **env},
            stdout=self._file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_http(self, url: str, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        tail = self.log.read_text(errors="replace")[-4000:]
        pytest.fail(f"{url} not ready (exit {self.proc.returncode}):\n{tail}")

    def wait(self, timeout: float = START_TIMEOUT_S) -> tuple[int, str]:
        """Wait for a job to exit. Returns: (exit code, the end of its log)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            code = self.proc.returncode
        return code, self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:  # KServe drains for up to 30 s: do not wait
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._file.close()


def runtime_env(tmp: Path) -> dict[str, str]:
    return {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "CONCORD_HOME": str(tmp / "concord-home"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }


def kserve_command(model_dir: Path, http: int, grpc: int) -> list[str]:
    """`python -m services.encoder.kserve` with the chart's flags, on the given ports."""
    return [
        sys.executable,
        "-m",
        "services.encoder.kserve",
        "--model_name=encoder",
        f"--http_port={http}",
        f"--grpc_port={grpc}",
        f"--model_uri={model_dir}",
        "--enable_latency_logging=false",
    ]


@dataclass(frozen=True)
class KServeEndpoint:
    http: str  # 127.0.0.1:PORT
    grpc: str  # 127.0.0.1:PORT
    model: str  # the model name it serves (and <model>-image, <model>-text)


@dataclass
class Launched:
    """Servers and jobs started together at the first runtime test, so that their start-ups
    (seconds of imports each) overlap; each is started only when a selected test needs it
    (by fixture), and its fixture waits for it."""

    kserve: Subprocess | None
    kserve_ports: tuple[int, int]
    bento: Subprocess | None
    bento_port: int
    build: Subprocess | None
    build_home: Path


def bento_env(tmp: Path, model_dir: Path, home: Path) -> dict[str, str]:
    return {
        **runtime_env(tmp),
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "true",
        "CONCORD_ENCODER_MODEL": str(model_dir),
    }


@pytest.fixture(scope="session", autouse=True)
def launched(
    request: pytest.FixtureRequest, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Launched]:
    needed = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    tmp = tmp_path_factory.mktemp("runtimes")
    http, grpc, bento_port = free_ports(3)
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    kserve = bento = build = None
    build_home = tmp / "bentoml-build"
    if "kserve_endpoint" in needed:
        kserve = Subprocess(
            kserve_command(model_dir, http, grpc),
            runtime_env(tmp),
            tmp / "kserve.log",
        )
    if "bento" in needed:
        bento = Subprocess(
            [bentoml, "serve", BENTO_SERVICE, "--host", "127.0.0.1", "--port", str(bento_port)],
            bento_env(tmp, model_dir, tmp / "bentoml-serve"),
            tmp / "bento.log",
        )
    if "bento_build" in needed:
        build = Subprocess(
            [bentoml, "build", "--output", "tag", str(REPO)],
            bento_env(tmp, model_dir, build_home),
            tmp / "bento-build.log",
        )
    try:
        yield Launched(kserve, (http, grpc), bento, bento_port, build, build_home)
    finally:
        for job in (kserve, bento, build):
            if job is not None:
                job.stop()


@pytest.fixture(scope="session")
def kserve_endpoint(launched: Launched) -> KServeEndpoint:
    """`python -m services.encoder.kserve` on free ports with the chart's flags. KServe binds
    every interface (it has no flag for the host); the tests only talk to 127.0.0.1."""
    http, grpc = launched.kserve_ports
    assert launched.kserve is not None
    launched.kserve.wait_http(f"http://127.0.0.1:{http}/v2/models/encoder/ready")
    return KServeEndpoint(f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", "encoder")


@pytest.fixture(scope="session")
def bento_build(launched: Launched) -> tuple[int, str, Path]:
    """`bentoml build --output tag REPO` (BENTOML_HOME in tmp). Returns: (exit code, log, home)."""
    assert launched.build is not None
    code, log = launched.build.wait()
    return code, log, launched.build_home


TOKEN = "kserve-test-token"


# Session scope: test_kserve and test_triton_backend share one guarded server.
@pytest.fixture(scope="session")
def kserve_with_token(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KServeEndpoint]:
    """The runtime with CONCORD_SERVING__AUTH_TOKEN set, as the chart's InferenceService runs it."""
    tmp = tmp_path_factory.mktemp("kserve-auth")
    http, grpc = free_ports(2)
    server = Subprocess(
        kserve_command(model_dir, http, grpc),
        {**runtime_env(tmp), "CONCORD_SERVING__AUTH_TOKEN": TOKEN},
        tmp / "kserve.log",
    )
    try:
        # readiness needs no token (the kubelet's probes carry none)
        server.wait_http(f"http://127.0.0.1:{http}/v2/models/encoder/ready")
        yield KServeEndpoint(f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", "encoder")
    finally:
        server.stop()
