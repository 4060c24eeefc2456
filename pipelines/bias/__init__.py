"""The bias detector's pipeline (issue 14, method card 5): ShapeNews data, training the ViLBias
classifier variants, evaluation on the gold-checked test split, the package (`concord-bias`) and
reports/bias.md. `concord bias-model ...` or `python -m pipelines.bias ...`."""
