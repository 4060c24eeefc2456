"""`concord demo` (what `make run` runs): register the demo models when missing, start the six
services in this process, run one flow through every one of them over gRPC and the embedded
bus, and write `demo/index.html`.

- `models` (the lead's): `ensure_models`, the shipped demo weights registered @production.
- `flow`: the options, the services' lifetime and the order of the steps (the orchestration).
- `data`: the held-out data (scenes, wrong-word pair, small KB, biased headline) from `DEMO_SEED`.
- `steps`: the steps that call the SDK, each returning a `Step` that prints one line.
- `results`: `Step`, `DemoFailed` and `Say`, shared by the modules above.
- `page`: the self-contained HTML page of a finished flow.
- `cli`: the typer app mounted as `concord demo` (entry point `concord.cli`).
"""
