"""The held-out data the demo builds: Concord Scenes rendered with `DEMO_SEED`, a seed no
training recipe uses, so every scene, mention and headline is held out from the demo models.

- `held_out_scenes` / `rerendered`: the retrieval set's test scenes (and a new rendering of one).
- `wrong_word_pair` / `heat_overlay`: a misalignment pair with one word wrong, and a word's heat map.
- `small_kb` / `entity_image`: a small knowledge base in the entities set's style, with images.
- `biased_pair`: a held-out ShapeNews headline with loaded wording.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pipelines.data.render import render
from pipelines.data.scene import Scene, make_object, sample_background
from pipelines.data.store import encode_png, item_rng
from pipelines.demo.results import DemoFailed

DEMO_SEED = 1616  # no training recipe uses it: every item below is held out
SPLIT = "test"


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


def biased_pair(seed: int, size: int) -> tuple[bytes, dict[str, Any]]:
    """A held-out ShapeNews headline with loaded wording. Returns: (png, its record)."""
    from pipelines.data.sets.bias import make_item

    for index in range(200):
        made = make_item(seed, SPLIT, size, index)
        record = made["record"]
        if record["loaded"] and not record["inconsistent"]:
            return made["files"][record["image"]], record
    raise DemoFailed("no loaded headline among 200 held-out ShapeNews items")
