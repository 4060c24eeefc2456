"""Shared test harness: the real Kafka broker and MLflow server fixtures live in tests/fixtures."""

pytest_plugins = ["tests.fixtures.kafka", "tests.fixtures.mlflow"]
