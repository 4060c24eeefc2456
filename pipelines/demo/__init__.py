"""`concord demo` (what `make run` runs): register the demo models when missing, start the six
services in this process, run one flow through every one of them over gRPC and the embedded
bus, and write `demo/index.html`.

- `models` (the lead's): `ensure_models`, the shipped demo weights registered @production.
- `flow`: the held-out data, the services' lifetime and the steps, each printing one line.
- `page`: the self-contained HTML page of a finished flow.
- `cli`: the typer app mounted as `concord demo` (entry point `concord.cli`).
"""
