"""Shared test harness: the real Kafka broker and MLflow server fixtures live in tests/fixtures.

Nothing may reach a model hub here: the text tower loads from its PyPI package.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# MLflow's usage telemetry would call out of the machine, and its thread sets and unsets an
# environment variable while other threads iterate os.environ (a KeyError seen in urllib).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

pytest_plugins = ["tests.fixtures.kafka", "tests.fixtures.mlflow"]
