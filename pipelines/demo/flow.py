"""The demo flow: start every service in this process, wait for their models, then one pass
through all of them as a product team would make it (the public SDK over gRPC, the embedded
bus, vectors and registry), each step printing one line of what it found.

Steps: ingest held-out Concord Scenes through the bus -> search by text -> search by image ->
score and explain a pair with a wrong word -> generate an image with its layout -> audit it
-> link a mention to a small knowledge base -> check a pair for bias.

The data is rendered here from the Concord Scenes generators with `DEMO_SEED`, a seed no
training recipe uses, so every scene, mention and headline is held out from the demo models.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import io
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from concord.bus import make_bus, topics
from concord.bus.records import Delivery, DlqHeaders, dlq_topic
from concord.clients import Concord, Entity, Mention, status_of
from concord.config import SERVICE_NAMES, Settings
from concord.media import colour_layout, layout_colour
from concord.proto.v1 import common_pb2, events_pb2
from concord.wire import ModelId, model_id, payload_from_dict
from pipelines.data.render import render
from pipelines.data.scene import Scene, make_object, sample_background
from pipelines.data.store import encode_png, item_rng

Say = Callable[[str], None]

DEMO_SEED = 1616  # no training recipe uses it: every item below is held out
SPLIT = "test"
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


class DemoFailed(RuntimeError):
    """A step of the demo failed; the message names the step and why."""


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
class Step:
    """One step's result: the line it printed and its facts (JSON values, image names)."""

    key: str
    line: str
    data: dict[str, Any] = field(default_factory=dict)


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


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class SceneItem:
    """One held-out scene: its id, PNG, captions and the scene it was rendered from."""

    id: str
    png: bytes
    captions: tuple[str, ...]
    scene: Scene

    @property
    def objects(self) -> tuple[str, ...]:
        """Returns: "colour shape" of each object, in drawing order."""
        return tuple(f"{o.colour} {o.shape}" for o in self.scene.objects)


def held_out_scenes(seed: int, count: int, size: int) -> list[SceneItem]:
    """`count` scenes of the retrieval set's test distribution, rendered with `seed`."""
    from pipelines.data.sets.retrieval import make_item

    items = []
    for index in range(count):
        made = make_item(seed, SPLIT, size, index)
        record = made["record"]
        items.append(
            SceneItem(
                id=record["id"],
                png=made["files"][record["image"]],
                captions=tuple(record["captions"]),
                scene=Scene.from_dict(record["scene"]),
            )
        )
    return items


def rerendered(item: SceneItem, size: int) -> bytes:
    """The same scene drawn again with other pixel noise: a new image of the same content."""
    return encode_png(render(replace(item.scene, noise_seed=item.scene.noise_seed + 1), size).image)


def _png(array: np.ndarray) -> bytes:
    return encode_png(np.ascontiguousarray(array, dtype=np.uint8))


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


# ----------------------------------------------------------------------------- steps


def _fmt_model(model: ModelId) -> str:
    return f"{model.name} v{model.version}"


def point_id(collection: str, scene: SceneItem) -> str:
    """A UUID of the scene's content in the collection."""
    digest = hashlib.sha256(scene.png).hexdigest()
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"concord-demo:{collection}:{digest}"))


def _canonical(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return raw


def ingest(
    settings: Settings,
    scenes: Sequence[SceneItem],
    collection: str,
    demo_set: str,
    timeout: float,
) -> Step:
    """Publish one IngestRequest per scene on `concord.ingest` and wait until the retrieval
    service's worker has published `concord.indexed` for each (or dead-lettered it). Each
    point's payload names `demo_set`, which the searches filter on: a collection an earlier
    run filled with other scenes (another --scenes or --seed) adds no hits."""
    # Point ids named here, not left to the content hash, so that only this flow's Indexed
    # events count; a function of the content, so a re-run rewrites the same points.
    ids = {point_id(collection, s): s for s in scenes}
    expected = len(ids)
    lock = threading.Lock()
    indexed: dict[str, events_pb2.Indexed] = {}
    dead: list[str] = []

    def on_indexed(message: events_pb2.Indexed, _: Delivery) -> None:
        if message.collection == collection and _canonical(message.id) in ids:
            with lock:
                indexed[_canonical(message.id)] = message

    def on_dead(value: bytes, delivery: Delivery) -> None:
        request = events_pb2.IngestRequest()
        try:
            request.ParseFromString(value)
        except Exception:  # not ours to judge: count only this flow's requests
            return
        if request.collection == collection and _canonical(request.id) in ids:
            with lock:
                dead.append(delivery.headers.get(DlqHeaders.ERROR, "no reason given"))

    group = f"demo-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    with make_bus(settings) as bus:
        observers = [
            bus.subscribe(
                topics.INDEXED, f"{group}-indexed", on_indexed, events_pb2.Indexed
            ).start(),
            bus.subscribe_raw(dlq_topic(topics.INGEST), f"{group}-dlq", on_dead).start(),
        ]
        try:
            for pid, s in ids.items():
                event = events_pb2.IngestRequest(
                    id=pid,
                    collection=collection,
                    item=common_pb2.Item(
                        image=common_pb2.Image(data=s.png, media_type="image/png")
                    ),
                    payload=payload_from_dict(
                        {
                            "scene_id": s.id,
                            "caption": s.captions[0],
                            "objects": list(s.objects),
                            "demo_set": demo_set,
                        }
                    ),
                )
                bus.publish(topics.INGEST, f"{collection}/{s.id}", event)
            bus.flush()
            deadline = time.monotonic() + timeout
            while True:
                with lock:
                    done, failed = len(indexed), list(dead)
                if failed:
                    raise DemoFailed(f"{len(failed)} scene(s) dead-lettered: {failed[0]}")
                if done >= expected:
                    break
                if time.monotonic() > deadline:
                    raise DemoFailed(f"only {done}/{expected} scenes indexed after {timeout:.0f} s")
                time.sleep(0.05)
        finally:
            for observer in observers:
                observer.stop()
    seconds = time.perf_counter() - t0
    models = sorted({_fmt_model(model_id(m.model)) for m in indexed.values()})
    line = (
        f"{len(scenes)} held-out scenes published on {topics.INGEST}, {done} indexed into "
        f"{collection!r} by {', '.join(models)} in {seconds:.1f} s"
    )
    return Step(
        "ingest",
        line,
        {
            "published": len(scenes),
            "indexed": done,
            "collection": collection,
            "demo_set": demo_set,
            "seconds": round(seconds, 2),
            "models": models,
        },
    )


def _hit_rows(
    hits: Sequence[Any], scenes: dict[str, SceneItem], query: SceneItem
) -> list[dict[str, Any]]:
    wanted = set(query.objects)
    rows = []
    for rank, hit in enumerate(hits, 1):
        sid = str(hit.payload.get("scene_id", ""))
        item = scenes.get(sid)
        shared = len(wanted & set(item.objects)) if item else 0
        rows.append(
            {
                "rank": rank,
                "scene_id": sid,
                "score": round(float(hit.score), 4),
                "same_scene": sid == query.id,
                "shared_objects": shared,
                "objects": list(item.objects) if item else [],
                "image": f"scene:{sid}",
            }
        )
    return rows


def _hits_line(rows: Sequence[dict[str, Any]], query: SceneItem) -> str:
    found = next((r["rank"] for r in rows if r["same_scene"]), None)
    where = f"its scene at rank {found}" if found else f"its scene not in the top {len(rows)}"
    parts = []
    for r in rows[:3]:
        mark = (
            "= its scene"
            if r["same_scene"]
            else f"{r['shared_objects']}/{len(query.objects)} objects"
        )
        parts.append(f"#{r['rank']} {r['scene_id']} {r['score']:.3f} ({mark})")
    return f"{where}; " + ", ".join(parts)


def _search(sdk: Concord, text: str, options: dict[str, Any]) -> tuple[Any, bool]:
    """Search by text, with `explain` when the retrieval client offers it (explained search
    hits: the words each hit's image supports and contradicts). Returns: (result, explained)."""
    if "explain" in inspect.signature(sdk.retrieval.search).parameters:
        return sdk.search_text(text, explain=True, **options), True
    return sdk.search_text(text, **options), False


def _explanations(result: Any) -> list[dict[str, Any]]:
    """Per hit, the query words its image supports and contradicts (the retrieval client's
    `explanation`, from a search with explain=True); {} for a hit without one."""
    rows: list[dict[str, Any]] = []
    for hit in result.hits:
        explanation = getattr(hit, "explanation", None)
        if explanation is None:
            rows.append({})
            continue
        score = getattr(explanation, "score", None)
        rows.append(
            {
                "supported": [w.word for w in explanation.supported],
                "contradicted": [w.word for w in explanation.contradicted],
                "p_aligned": float(score.aligned_probability) if score is not None else None,
                "unexplained": explanation.unavailable,
            }
        )
    return rows


def _options(collection: str, demo_set: str, top_k: int) -> dict[str, Any]:
    return {
        "collection": collection,
        "top_k": top_k,
        "target": "image",
        "filter": {"demo_set": demo_set},
    }


def search_text(
    sdk: Concord,
    scenes: dict[str, SceneItem],
    query: SceneItem,
    collection: str,
    demo_set: str,
    top_k: int,
) -> Step:
    """Search the collection with a held-out scene's detailed caption (the captions come
    short, detailed, relational, counting, positional)."""
    text = query.captions[1] if len(query.captions) > 1 else query.captions[0]
    result, explained = _search(sdk, text, _options(collection, demo_set, top_k))
    rows = _hit_rows(result.hits, scenes, query)
    line = f'"{text}" -> {_hits_line(rows, query)}'
    if explained:
        for row, extra in zip(rows, _explanations(result), strict=False):
            row.update(extra)
        top = rows[0] if rows else {}
        if top.get("supported") is not None:
            supported = ", ".join(top["supported"]) or "no word"
            contradicted = ", ".join(top["contradicted"]) or "no word"
            line += f"; #1's image supports {supported}, contradicts {contradicted}"
    return Step(
        "search_text",
        line,
        {
            "query": text,
            "query_scene": query.id,
            "hits": rows,
            "model": _fmt_model(result.model),
            "explained": explained,
        },
    )


def search_image(
    sdk: Concord,
    scenes: dict[str, SceneItem],
    query: SceneItem,
    collection: str,
    demo_set: str,
    top_k: int,
    size: int,
    images: dict[str, bytes],
) -> Step:
    """Search the collection with a new rendering of a held-out scene (other pixel noise)."""
    png = rerendered(query, size)
    images["search_image_query"] = png
    result = sdk.search_image(png, **_options(collection, demo_set, top_k))
    rows = _hit_rows(result.hits, scenes, query)
    line = f"{query.id} re-rendered ({', '.join(query.objects)}) -> {_hits_line(rows, query)}"
    return Step(
        "search_image",
        line,
        {
            "query_scene": query.id,
            "query_image": "search_image_query",
            "hits": rows,
            "model": _fmt_model(result.model),
        },
    )


def wrong_word_pair(seed: int, size: int) -> tuple[bytes, str, str, list[tuple[int, int]]]:
    """A held-out misalignment item whose caption has one attribute (preferably a colour)
    swapped. Returns: (png, true caption, wrong caption, the changed spans in it)."""
    from pipelines.data.sets.misalignment import make_item

    fallback = None
    for index in range(64):
        made = make_item(seed, SPLIT, size, index)
        record = made["record"]
        png = made["files"][record["image"]]
        for caption in record["captions"]:
            for variant in caption["variants"]:
                found = (
                    png,
                    caption["text"],
                    variant["text"],
                    [tuple(s) for s in variant["spans"]],
                )
                if variant["kind"] == "attribute" and variant["slot"] == "colour":
                    return found
                fallback = fallback or found
    if fallback is None:
        raise DemoFailed("no misalignment item with a changed word")
    return fallback


def heat_overlay(image_png: bytes, grid: np.ndarray, scale: int = 2) -> bytes:
    """The image (upscaled `scale`x) under a word's word-patch similarity map, as a PNG."""
    from matplotlib import colormaps
    from PIL import Image

    with Image.open(io.BytesIO(image_png)) as opened:
        base = opened.convert("RGB")
    width, height = base.size[0] * scale, base.size[1] * scale
    base = base.resize((width, height), Image.Resampling.NEAREST)
    values = np.asarray(grid, dtype=np.float64)
    span = float(values.max() - values.min())
    norm = (values - values.min()) / span if span > 1e-12 else np.zeros_like(values)
    heat = (colormaps["inferno"](norm)[..., :3] * 255).astype(np.uint8)
    heat_image = Image.fromarray(heat).resize((width, height), Image.Resampling.BILINEAR)
    blended = Image.blend(base, heat_image, 0.55)
    out = io.BytesIO()
    blended.save(out, format="PNG")
    return out.getvalue()


def explain(sdk: Concord, seed: int, size: int, images: dict[str, bytes]) -> Step:
    """Score an image with its caption and with the caption one word wrong, then explain the
    wrong one: the flagged words (with spans) and the word-patch heat map."""
    png, right, wrong, spans = wrong_word_pair(seed, size)
    images["explain_image"] = png
    scores = sdk.score([(png, right), (png, wrong)])
    result = sdk.explain(png, wrong, include_heatmap=True)
    changed = [wrong[s:e] for s, e in spans]
    flagged = [{"word": w.word, "span": list(w.span)} for w in result.flagged]
    words = []
    for k, w in enumerate(result.words):
        name = None
        if result.heatmap is not None and k < len(result.heatmap):
            name = f"explain_heat_{k}"
            images[name] = heat_overlay(png, result.heatmap[k])
        words.append(
            {
                "word": w.word,
                "span": list(w.span),
                "attribution": float(w.attribution),
                "similarity": float(w.similarity),
                "misaligned": bool(w.misaligned),
                "changed": any(s <= w.span[0] and w.span[1] <= e for s, e in spans),
                "heat": name,
            }
        )
    caught = bool(set(changed) & {f["word"] for f in flagged})
    p_right, p_wrong = (s.aligned_probability for s in scores.scores)
    flagged_text = ", ".join(f"'{f['word']}' [{f['span'][0]}:{f['span'][1]}]" for f in flagged)
    line = (
        f'"{wrong}" (the image shows: "{right}"): flagged {flagged_text or "no words"}; '
        f"wrong word {'/'.join(changed)} {'caught' if caught else 'missed'}; "
        f"P(aligned) {p_right:.2f} right vs {p_wrong:.2f} wrong"
    )
    return Step(
        "explain",
        line,
        {
            "image": "explain_image",
            "right": right,
            "wrong": wrong,
            "changed": changed,
            "changed_spans": [list(s) for s in spans],
            "flagged": flagged,
            "caught": caught,
            "words": words,
            "p_aligned_right": float(p_right),
            "p_aligned_wrong": float(p_wrong),
            "clip_score_right": float(scores.scores[0].clip_score),
            "clip_score_wrong": float(scores.scores[1].clip_score),
            "model": _fmt_model(result.model),
            "heatmap": result.heatmap is not None,
        },
    )


def generate(sdk: Concord, prompt: str, steps: int, images: dict[str, bytes]) -> Step:
    """Generate one image with its semantic layout from `prompt`."""
    aligned = getattr(sdk.generator, "generate_aligned", None)
    t0 = time.perf_counter()
    (image,) = sdk.generate([prompt], seed=0, steps=steps, with_layout=True)
    seconds = time.perf_counter() - t0
    images["generated"] = image.png
    present: dict[int, str] = {}
    if image.layout is not None:
        images["generated_layout"] = _png(colour_layout(image.layout))
        present = {k: v for k, v in image.classes_present().items() if k != 0}
    colours = {v: "#{:02x}{:02x}{:02x}".format(*layout_colour(k)) for k, v in present.items()}
    height, width = image.array.shape[:2]
    classes = ", ".join(present.values()) or "no layout"
    line = (
        f'"{prompt}" -> {width}x{height} image by {_fmt_model(image.model)} in {seconds:.1f} s; '
        f"its layout: {classes}"
    )
    return Step(
        "generate",
        line,
        {
            "prompt": prompt,
            "image": "generated",
            "layout": "generated_layout" if image.layout is not None else None,
            "size": [width, height],
            "classes": list(present.values()),
            "legend": {str(k): v for k, v in present.items()},
            "colours": colours,
            "seconds": round(seconds, 2),
            "model": _fmt_model(image.model),
            "generate_aligned_available": aligned is not None,
        },
    )


def audit(sdk: Concord, prompt: str, png: bytes) -> Step:
    """Audit the generated image with the scorer: calibrated alignment and flagged words."""
    result = sdk.explain(png, prompt)
    flagged = [{"word": w.word, "span": list(w.span)} for w in result.flagged]
    verdict = "passes" if not flagged else "flags " + ", ".join(f"'{f['word']}'" for f in flagged)
    line = (
        f"the scorer {verdict} (P(aligned) {result.score.aligned_probability:.2f}, "
        f"CLIPScore {result.score.clip_score:.3f}, by {_fmt_model(result.model)})"
    )
    return Step(
        "audit",
        line,
        {
            "prompt": prompt,
            "passed": not flagged,
            "flagged": flagged,
            "p_aligned": float(result.score.aligned_probability),
            "clip_score": float(result.score.clip_score),
            "words": [
                {"word": w.word, "attribution": float(w.attribution), "misaligned": w.misaligned}
                for w in result.words
            ],
            "model": _fmt_model(result.model),
        },
    )


def generate_aligned(
    sdk: Concord, prompt: str, steps: int, max_tries: int, images: dict[str, bytes]
) -> Step:
    """Generate until the scorer's audit passes (the generator's GenerateAligned): every
    try's score and flagged words, and the best image."""
    t0 = time.perf_counter()
    answer = sdk.generator.generate_aligned(
        prompt, max_tries=max_tries, steps=steps, with_layout=True
    )
    seconds = time.perf_counter() - t0
    images["aligned"] = answer.image.png
    if answer.image.layout is not None:
        images["aligned_layout"] = _png(colour_layout(answer.image.layout))
    tries: list[dict[str, Any]] = [
        {
            "index": t.index,
            "seed": t.seed,
            "guidance_scale": float(t.guidance_scale),
            "prompt": t.prompt,
            "p_aligned": float(t.score.aligned_probability),
            "flagged": [{"word": w.word, "span": list(w.span)} for w in t.flagged],
            "passed": bool(t.passed),
        }
        for t in answer.tries
    ]
    shown = "; ".join(
        f"try {t.index + 1} P {t.score.aligned_probability:.2f} "
        + ("passes" if t.passed else "flags " + (", ".join(w.word for w in t.flagged) or "-"))
        for t in answer.tries
    )
    verdict = "passes" if answer.passed else "no try passed"
    line = (
        f"{len(tries)} tries in {seconds:.1f} s ({shown}); best try {answer.best_try + 1}: "
        f"{verdict} (threshold {answer.min_score:.2f})"
    )
    return Step(
        "aligned",
        line,
        {
            "prompt": prompt,
            "image": "aligned",
            "layout": "aligned_layout" if answer.image.layout is not None else None,
            "best_try": answer.best_try,
            "passed": bool(answer.passed),
            "min_score": float(answer.min_score),
            "tries": tries,
            "scorer": _fmt_model(answer.scorer),
            "seconds": round(seconds, 2),
        },
    )


def small_kb(seed: int, count: int, size: int) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """A knowledge base of `count` entities in the entities set's style (names shared by ~4
    entities, looks by ~2), each with one image. Returns: (entities, id -> PNG)."""
    from pipelines.data.sets.entities import make_kb

    kb = make_kb(item_rng(seed, "demo-entities", "kb", 0), count, name_share=4.0, look_share=2.0)
    pngs = {e["id"]: entity_image(seed, e["latent"], k, size, 0.03) for k, e in enumerate(kb)}
    return kb, pngs


def entity_image(seed: int, look: dict[str, str], index: int, size: int, jitter: float) -> bytes:
    """An entity's object alone on a fresh background, its position jittered in its region."""
    from pipelines.data.sets.entities import POSITIONS

    rng = item_rng(seed, "demo-entities", "images", index)
    obj = make_object(rng, look["colour"], look["shape"], look["size"], look["texture"])
    cx, cy = POSITIONS[look["position"]]
    lo = obj.r + 0.02
    x = float(np.clip(cx + rng.uniform(-jitter, jitter), lo, 1 - lo))
    y = float(np.clip(cy + rng.uniform(-jitter, jitter), lo, 1 - lo))
    scene = Scene((replace(obj, x=x, y=y),), (), sample_background(rng), int(rng.integers(2**31)))
    return encode_png(render(scene, size).image)


def link(sdk: Concord, seed: int, count: int, size: int, images: dict[str, bytes]) -> Step:
    """Upsert a small KB into the linker, then link a mention (text + photo) whose name alone
    is ambiguous: the attribute it adds is only in the entity's image."""
    from pipelines.data.sets.entities import ATTRIBUTES, MENTION, TEMPLATES

    kb, pngs = small_kb(seed, count, size)
    name = f"demo-kb-{seed}"
    written = sdk.upsert_entities(
        name,
        [
            Entity(
                id=e["id"],
                name=e["name"],
                description=e["description"],
                images=(pngs[e["id"]],),
                attributes=e["attributes"],
            )
            for e in kb
        ],
    )
    rng = item_rng(seed, "demo-entities", "mention", 0)
    gold = kb[int(rng.integers(len(kb)))]
    hidden = [a for a in ATTRIBUTES if a not in gold["attributes"]] or list(ATTRIBUTES)
    attribute = hidden[int(rng.integers(len(hidden)))]
    phrase = MENTION[attribute].format(v=gold["latent"][attribute])
    text = TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(name=gold["name"], phrase=phrase)
    start = text.index(gold["name"])
    span = (start, start + len(gold["name"]))
    photo = entity_image(seed, gold["latent"], 10_000, size, 0.08)
    images["link_mention"] = photo
    links = sdk.link(name, [Mention(text, span, image=photo)], top_k=3)
    candidates = links.candidates[0]
    if not candidates:
        raise DemoFailed(f"the linker returned no candidate for {text!r}")
    same_name = sum(e["name"] == gold["name"] for e in kb)
    rank = next((k for k, c in enumerate(candidates, 1) if c.entity_id == gold["id"]), None)
    rows = []
    for c in candidates:
        images[f"entity:{c.entity_id}"] = pngs.get(c.entity_id, b"")
        rows.append(
            {
                "entity_id": c.entity_id,
                "name": c.name,
                "description": c.description,
                "score": float(c.score),
                "gold": c.entity_id == gold["id"],
                "image": f"entity:{c.entity_id}",
            }
        )
    best = candidates[0]
    verdict = (
        f"right (gold at rank 1 of {same_name} named {gold['name']})"
        if rank == 1
        else (
            f"gold {gold['id']} at rank {rank}" if rank else f"gold {gold['id']} not in the top 3"
        )
    )
    line = (
        f'"{text[span[0] : span[1]]}" in "{text}" + photo -> {best.entity_id} {best.name} '
        f"(score {best.score:.3f}): {verdict}; KB {name!r} of {written} entities"
    )
    return Step(
        "link",
        line,
        {
            "knowledge_base": name,
            "entities": written,
            "text": text,
            "span": list(span),
            "mention_image": "link_mention",
            "gold": gold["id"],
            "gold_rank": rank,
            "same_name": same_name,
            "candidates": rows,
            "model": _fmt_model(links.model),
        },
    )


def biased_pair(seed: int, size: int) -> tuple[bytes, dict[str, Any]]:
    """A held-out ShapeNews headline with loaded wording. Returns: (png, its record)."""
    from pipelines.data.sets.bias import make_item

    for index in range(200):
        made = make_item(seed, SPLIT, size, index)
        record = made["record"]
        if record["loaded"] and not record["inconsistent"]:
            return made["files"][record["image"]], record
    raise DemoFailed("no loaded headline among 200 held-out ShapeNews items")


def bias(sdk: Concord, seed: int, size: int, images: dict[str, bytes]) -> Step:
    """Check a headline-image pair for bias: the verdict, its cues and rationale."""
    png, record = biased_pair(seed, size)
    images["bias_image"] = png
    text = record["caption"]
    detection = sdk.detect_bias([(png, text)])
    verdict = detection.verdicts[0]
    cues = [
        {
            "kind": c.kind,
            "weight": float(c.weight),
            "text": c.text,
            "span": list(c.span) if c.span else None,
            "region": list(c.region) if c.region else None,
            "description": c.description,
        }
        for c in verdict.cues
    ]
    truth = "biased" if record["true_label"] else "neutral"
    gold_words = [text[s:e] for s, e in record["cue_spans"]]
    shown = ", ".join(
        f"{c['kind']} '{c['text']}' {c['weight']:+.2f}"
        if c["text"]
        else f"{c['kind']} {c['weight']:+.2f}"
        for c in cues[:3]
    )
    line = (
        f'"{text}" -> {verdict.label.upper()} (P {verdict.probability:.2f}, truth {truth}, '
        f"loaded words {', '.join(repr(w) for w in gold_words)}); cues: {shown or 'none'}"
    )
    return Step(
        "bias",
        line,
        {
            "text": text,
            "image": "bias_image",
            "label": verdict.label,
            "probability": float(verdict.probability),
            "threshold": float(verdict.threshold),
            "truth": truth,
            "gold_words": gold_words,
            "gold_spans": [list(s) for s in record["cue_spans"]],
            "cues": cues,
            "rationale": verdict.rationale,
            "model": _fmt_model(detection.model),
        },
    )


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
