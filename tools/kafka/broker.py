"""A real single-node Apache Kafka broker (KRaft, broker+controller) for tests and benchmarks.

Runs the jars that tools/kafka/fetch.sh put in .cache/kafka/lib; no docker.
`python -m tools.kafka.broker` runs one in the foreground and prints its bootstrap address.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LIB = REPO_ROOT / ".cache" / "kafka" / "lib"
FETCH_HINT = "bash tools/kafka/fetch.sh"


class BrokerError(RuntimeError):
    """The broker could not be started or stopped; the message carries its log tail."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cluster_id() -> str:
    """Kafka's Uuid text form: url-safe base64 of 16 bytes, no padding. Like Kafka's own
    Uuid.randomUuid, never one starting with "-": the storage tool's argument parser reads
    `-t -Abc...` as a missing value (1 id in 64 failed that way)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class KafkaBroker:
    """One broker process on 127.0.0.1 with its own temp dir, stoppable and restartable in place.

    Args:
        lib_dir: folder of the broker jars (default .cache/kafka/lib).
        work_dir: where config, data and log go (default: a fresh temp dir, removed on cleanup()).
        heap: JVM -Xmx value.
        extra_config: server.properties entries that override the defaults below.
    """

    def __init__(
        self,
        lib_dir: Path = DEFAULT_LIB,
        work_dir: Path | None = None,
        heap: str = "512m",
        extra_config: dict[str, str] | None = None,
    ) -> None:
        self.lib_dir = Path(lib_dir)
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="concord-kafka-"))
        self.heap = heap
        self.port = _free_port()
        self.controller_port = _free_port()
        self.config_path = self.work_dir / "server.properties"
        self.log_path = self.work_dir / "broker.log"
        self._extra = dict(extra_config or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._formatted = False

    @property
    def bootstrap(self) -> str:
        """The PLAINTEXT bootstrap address, e.g. ``127.0.0.1:40123``."""
        return f"127.0.0.1:{self.port}"

    def _properties(self) -> dict[str, str]:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "log.dirs": str(self.work_dir / "data"),
            # One node: every internal topic must live with a single replica.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",  # fewer coordinator partitions: faster start
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Tests use short consumer sessions so a killed consumer is noticed quickly.
            "group.min.session.timeout.ms": "500",
            # Concord creates its topics explicitly (concord.bus.kafka.ensure_topics).
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
        }
        props.update(self._extra)
        return props

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java",
            f"-Xmx{self.heap}",
            "-XX:+UseSerialGC",  # 2-core machines: no parallel GC threads fighting the tests
            "-XX:TieredStopAtLevel=1",  # C1 only: starts noticeably faster
            "-Djava.awt.headless=true",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-cp",
            str(self.lib_dir / "*"),
            main,
            *args,
        ]

    def _check_lib(self) -> None:
        if not any(self.lib_dir.glob("kafka_2.13-*.jar")):
            raise BrokerError(f"no Kafka jars in {self.lib_dir}; run `{FETCH_HINT}` first")
        if shutil.which("java") is None:
            raise BrokerError("java not found on PATH (Kafka 4.x needs Java 17+)")

    def log_tail(self, lines: int = 60) -> str:
        """Return the last lines of the broker's log (for failure messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no broker log yet)"
        return "\n".join(text.splitlines()[-lines:])

    def _format(self) -> None:
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in self._properties().items()))
        cmd = self._java(
            "kafka.tools.StorageTool",
            "format",
            "-t",
            _cluster_id(),
            "-c",
            str(self.config_path),
            "--standalone",
        )
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise BrokerError(
                f"kafka storage format failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        self._formatted = True

    def start(self, timeout: float = 90.0) -> None:
        """Start the broker (formatting storage the first time) and wait until it serves metadata.

        Args:
            timeout: seconds to wait for the broker to answer.

        Raises:
            BrokerError: with the broker's log tail when it exits or does not answer in time.
        """
        if self._proc is not None and self._proc.poll() is None:
            return
        self._check_lib()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not self._formatted:
            self._format()
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                self._java("kafka.Kafka", str(self.config_path)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.work_dir,
                start_new_session=True,  # Ctrl-C in a test run must not kill it mid-shutdown
            )
        finally:
            log.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        # Imported here so `fetch`-only users of this module need no kafka-python.
        from kafka import KafkaAdminClient

        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise BrokerError(
                    f"kafka broker exited with {self._proc.returncode} while starting; "
                    f"log tail ({self.log_path}):\n{self.log_tail()}"
                )
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap, request_timeout_ms=5000,
                    bootstrap_timeout_ms=5000,
                )
                try:
                    cluster = admin.describe_cluster()
                finally:
                    admin.close()
                if cluster.get("brokers"):
                    return
            except Exception as exc:  # not up yet: connection refused, no controller, ...
                last_error = exc
            time.sleep(0.5)
        self.stop()
        raise BrokerError(
            f"kafka broker did not answer on {self.bootstrap} within {timeout:.0f}s "
            f"(last error: {last_error!r}); log tail ({self.log_path}):\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the broker: SIGTERM (controlled shutdown), SIGKILL if it does not exit in time."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self, timeout: float = 90.0) -> None:
        """Stop and start again on the same data dir and ports (clients reconnect by themselves)."""
        self.stop()
        self.start(timeout=timeout)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def cleanup(self) -> None:
        """Stop the broker and remove its temp dir (only when this object created it)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def main() -> int:
    """Run a broker in the foreground until Ctrl-C; prints its bootstrap address."""
    broker = KafkaBroker()
    try:
        broker.start()
        print(f"kafka broker ready: bootstrap={broker.bootstrap} dir={broker.work_dir}", flush=True)
        while broker.running:
            time.sleep(1)
        print(broker.log_tail(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        broker.cleanup()


if __name__ == "__main__":
    os.chdir(REPO_ROOT)
    raise SystemExit(main())
