"""`python -m pipelines.data ...` runs the dataset CLI."""

from pipelines.data.cli import app

app()
