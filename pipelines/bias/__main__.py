from pipelines.bias.cli import app

app()
