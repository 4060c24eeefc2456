"""The demo flow: start every service in this process, wait for their models, then one pass
through all of them as a product team would make it (the public SDK over gRPC, the embedded
bus, vectors and registry), each step printing one line of what it found.

Steps: ingest held-out Concord Scenes through the bus -> search by text -> search by image ->
score and explain a pair with a wrong word -> generate an image with its layout -> audit it
-> link a mention to a small knowledge base -> check a pair for bias.

This module holds the orchestration: the options, the result, the services' lifetime and the
order of the steps. The held-out data is built in `pipelines.demo.data` (with `DEMO_SEED`, a
seed no training recipe uses), the steps that call the SDK live in `pipelines.demo.steps`, and
`Step` / `DemoFailed` in `pipelines.demo.results` (re-exported here).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from concord.clients import Concord, status_of
from concord.config import SERVICE_NAMES, Settings
from pipelines.demo.data import DEMO_SEED, SPLIT, held_out_scenes
from pipelines.demo.results import DemoFailed, Say, Step
from pipelines.demo.steps import (
    audit,
    bias,
    explain,
    generate,
    generate_aligned,
    ingest,
    link,
    search_image,
    search_text,
)

__all__ = [
    "DEMO_SEED",
    "PROMPT",
    "SPLIT",
    "STEP_KEYS",
    "DemoFailed",
    "DemoOptions",
    "DemoResult",
    "Say",
    "Step",
    "run_demo",
    "run_services",
    "steps",
    "wait_ready",
]

PROMPT = "a red circle above a blue square"
STEP_KEYS = (
    "models",
    "services",
    "ingest",
    "search_text",
    "search_image",
    "explain",
    "generate",
    "audit",
    "aligned",  # when the generator offers GenerateAligned
    "link",
    "bias",
)


@dataclass(frozen=True)
class DemoOptions:
    """What the flow does; the defaults are `make run`'s."""

    scenes: int = 300  # held-out scenes ingested through the bus
    seed: int = DEMO_SEED
    image_size: int = 64  # the resolution the demo models were trained at
    top_k: int = 5
    prompt: str = PROMPT
    generate_steps: int = 0  # denoising steps; 0: the generator's default
    kb_entities: int = 16
    aligned_tries: int = 3  # tries of the generate-until-aligned step (0: skip it)
    ready_timeout: float = 600.0  # seconds for every service to load its model
    index_timeout: float = 600.0  # seconds for every scene to be indexed


@dataclass
class DemoResult:
    """The finished flow: its steps in order and the PNGs the page shows, by name."""

    steps: dict[str, Step] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, step: Step, say: Say) -> Step:
        self.steps[step.key] = step
        say(f"{step.key:<13}{step.line}")
        return step

    def summary(self) -> dict[str, Any]:
        """Returns: the steps as JSON values (what `summary.json` holds)."""
        return {
            "seconds": round(self.seconds, 1),
            "steps": {k: {"line": s.line, **s.data} for k, s in self.steps.items()},
        }


# ----------------------------------------------------------------------------- services


def wait_ready(settings: Settings, names: Sequence[str], timeout: float) -> dict[str, list[str]]:
    """Poll every service's health and GetInfo until each serves a loaded model.

    Returns:
        service -> the models it reports ("name@version").
    Raises:
        DemoFailed: naming the services still not ready after `timeout` and why.
    """
    deadline = time.monotonic() + timeout
    pending = list(names)
    ready: dict[str, list[str]] = {}
    why: dict[str, str] = {}
    while pending:
        for name in list(pending):
            status = status_of(name, settings)
            if status.health == "SERVING" and not status.not_ready and status.models:
                ready[name] = list(status.models)
                pending.remove(name)
            else:
                why[name] = status.not_ready or status.error or status.health
        if not pending:
            break
        if time.monotonic() > deadline:
            reasons = "; ".join(f"{n}: {why[n]}" for n in pending)
            raise DemoFailed(f"services without a model after {timeout:.0f} s: {reasons}")
        time.sleep(0.25)
    return {n: ready[n] for n in names}


def run_services(
    settings: Settings,
    body: Callable[[], DemoResult],
    names: Sequence[str] = SERVICE_NAMES,
) -> DemoResult:
    """Start `names` in this process (as `concord up` does), run `body` in a worker thread
    while they serve, then stop them (also when `body` fails)."""
    from concord.serving.runner import Deployment

    async def main() -> DemoResult:
        deployment = Deployment(names, settings)
        await deployment.start()
        try:
            return await asyncio.to_thread(body)
        finally:
            await deployment.stop()

    return asyncio.run(main())


# ----------------------------------------------------------------------------- the flow


def steps(settings: Settings, options: DemoOptions, result: DemoResult, say: Say) -> DemoResult:
    """Every step after the services serve, in order (each adds itself to `result`)."""

    def attempt(key: str, fn: Callable[[], Step]) -> Step:
        try:
            return result.add(fn(), say)
        except DemoFailed as err:
            raise DemoFailed(f"{key}: {err}") from err
        except Exception as err:
            raise DemoFailed(f"{key}: {type(err).__name__}: {err}") from err

    ready = wait_ready(settings, SERVICE_NAMES, options.ready_timeout)
    result.add(
        Step(
            "services",
            f"{len(ready)} serving: " + ", ".join(f"{n} {'+'.join(m)}" for n, m in ready.items()),
            {"models": ready},
        ),
        say,
    )
    scenes = held_out_scenes(options.seed, options.scenes, options.image_size)
    for s in scenes:
        result.images[f"scene:{s.id}"] = s.png
    by_id = {s.id: s for s in scenes}
    with Concord(settings, timeout=600.0) as sdk:
        encoder = sdk.encoder.model()
        if encoder is None:
            raise DemoFailed("services: the encoder serves no model")
        collection = f"demo-scenes-{encoder.name}-v{encoder.version}"
        demo_set = f"{options.seed}/{SPLIT}/{options.image_size}px/{len(scenes)}"
        attempt(
            "ingest",
            lambda: ingest(settings, scenes, collection, demo_set, options.index_timeout),
        )
        text_query = scenes[len(scenes) // 3]
        image_query = scenes[(2 * len(scenes)) // 3]
        attempt(
            "search_text",
            lambda: search_text(sdk, by_id, text_query, collection, demo_set, options.top_k),
        )
        attempt(
            "search_image",
            lambda: search_image(
                sdk,
                by_id,
                image_query,
                collection,
                demo_set,
                options.top_k,
                options.image_size,
                result.images,
            ),
        )
        attempt("explain", lambda: explain(sdk, options.seed, options.image_size, result.images))
        attempt(
            "generate",
            lambda: generate(sdk, options.prompt, options.generate_steps, result.images),
        )
        attempt("audit", lambda: audit(sdk, options.prompt, result.images["generated"]))
        if options.aligned_tries and hasattr(sdk.generator, "generate_aligned"):
            attempt(
                "aligned",
                lambda: generate_aligned(
                    sdk,
                    options.prompt,
                    options.generate_steps,
                    options.aligned_tries,
                    result.images,
                ),
            )
        attempt(
            "link",
            lambda: link(sdk, options.seed, options.kb_entities, options.image_size, result.images),
        )
        attempt("bias", lambda: bias(sdk, options.seed, options.image_size, result.images))
    # Only the images the page shows travel on: the scenes that are hits or queries.
    shown = {
        f"scene:{row['scene_id']}"
        for key in ("search_text", "search_image")
        for row in result.steps[key].data["hits"]
    } | {f"scene:{text_query.id}", f"scene:{image_query.id}"}
    result.images = {
        k: v for k, v in result.images.items() if not k.startswith("scene:") or k in shown
    }
    return result


def _uri_name(uri: str) -> str:
    """models:/NAME/VERSION -> "NAME vVERSION" (anything else as it is)."""
    name, _, version = uri.removeprefix("models:/").rpartition("/")
    return f"{name} v{version}" if uri.startswith("models:/") and name else uri


def run_demo(
    settings: Settings,
    options: DemoOptions,
    say: Say = print,
    models: dict[str, str] | None = None,
) -> DemoResult:
    """Start the services, run every step, stop the services.

    Args:
        models: what `ensure_models` returned (model name -> URI), shown as the first step.
    Raises:
        DemoFailed: naming the step that failed and why (the services are stopped).
    """
    t0 = time.perf_counter()
    result = DemoResult()
    if models is not None:
        shown = ", ".join(_uri_name(u) for u in models.values()) or "none"
        result.add(
            Step("models", f"{len(models)} at production: {shown}", {"registered": dict(models)}),
            say,
        )
    run_services(settings, lambda: steps(settings, options, result, say))
    result.seconds = time.perf_counter() - t0
    return result
