"""`python -m pipelines.demo`: the same as `concord demo`."""

from pipelines.demo.cli import app

if __name__ == "__main__":
    app()
