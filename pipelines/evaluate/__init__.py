"""Concord's evaluation harness: metric functions (numpy in, typed results out) and the
report writer that puts each method beside its baseline in markdown, JSON and MLflow."""
