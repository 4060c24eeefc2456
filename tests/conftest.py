"""Shared test harness: the real Kafka broker and MLflow server fixtures live in tests/fixtures.

Nothing may reach a model hub here: the text tower loads from its PyPI package.
"""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# MLflow's usage telemetry would call out of the machine, and its thread sets and unsets an
# environment variable while other threads iterate os.environ (a KeyError seen in urllib).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

pytest_plugins = ["tests.fixtures.kafka", "tests.fixtures.mlflow"]

# A crash of the interpreter itself (a C-level abort) ends pytest before it can report which
# test was running; `make test` prints this file when pytest fails, so the log names it.
PROGRESS = Path(".cache/pytest-progress")


def pytest_sessionstart(session: pytest.Session) -> None:
    PROGRESS.parent.mkdir(parents=True, exist_ok=True)
    PROGRESS.write_text("session started\n")


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    PROGRESS.write_text(f"running {nodeid} (or its fixtures' setup/teardown)\n")


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    PROGRESS.write_text(f"finished {nodeid}; then between tests or in session teardown\n")
