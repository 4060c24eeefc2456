"""The demo's steps that call the SDK (the public client over gRPC, and the embedded bus for
ingest), each returning one `Step`: its printed line and its facts.

ingest -> search_text -> search_image -> explain -> generate -> audit -> generate_aligned ->
link -> bias; `flow.steps` runs them in that order.
"""

from __future__ import annotations

import hashlib
import inspect
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from concord.bus import make_bus, topics
from concord.bus.records import Delivery, DlqHeaders, dlq_topic
from concord.clients import Concord, Entity, Mention
from concord.config import Settings
from concord.media import colour_layout, layout_colour
from concord.proto.v1 import common_pb2, events_pb2
from concord.wire import ModelId, model_id, payload_from_dict
from pipelines.data.store import item_rng
from pipelines.demo.data import (
    SceneItem,
    _png,
    biased_pair,
    entity_image,
    heat_overlay,
    rerendered,
    small_kb,
    wrong_word_pair,
)
from pipelines.demo.results import DemoFailed, Step


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
