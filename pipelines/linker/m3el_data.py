"""The entities set as frozen encoder features, computed ONCE per (encoder, dataset) and cached:
the KB as `EntityFeatures` (global vectors), each split's mentions as `MentionFeatures` with
their gold entity index and a few tags (has image, occluded) for the report's breakdowns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from concord.checkpoints import load_model
from concord.models.linking import (
    EntityFeatures,
    MentionFeatures,
    entity_text,
    featurize_entities,
    featurize_mentions,
)
from concord.models.linking.features import PATCH_GRID, pool_patches
from concord.models.preprocess import images_to_tensor
from pipelines.data.store import Manifest, read_jsonl

SPLITS = ("train", "val", "test")
CACHE_VERSION = 1  # bump when what is cached changes


@dataclass(frozen=True)
class MentionSet:
    features: MentionFeatures
    targets: torch.Tensor  # (B,) long: gold entity index into the KB
    occluded: torch.Tensor  # (B,) bool
    ids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: torch.Tensor) -> MentionSet:
        return MentionSet(
            self.features[index],
            self.targets[index],
            self.occluded[index],
            tuple(self.ids[int(i)] for i in index),
        )


@dataclass(frozen=True)
class LinkingData:
    kb: EntityFeatures
    entity_ids: tuple[str, ...]
    splits: dict[str, MentionSet]
    encoder: str  # the encoder URI the features came from
    text_dim: int
    image_dim: int


def ensure_entities(out: Path, size: str, seed: int, image_size: int = 64) -> Path:
    """`out` if it holds this version of the entities set with `seed`, else build it there."""
    from pipelines.data.sets import BuildArgs, registry

    spec = registry()["entities"]
    out = Path(out)
    if (out / "manifest.json").is_file():
        m = Manifest.load(out)
        if (m.name, m.seed, m.version) == ("entities", seed, spec.version):
            return out
        raise ValueError(
            f"{out} holds {m.name} v{m.version} seed {m.seed}, wanted entities "
            f"v{spec.version} seed {seed}"
        )
    spec.build(BuildArgs(out, seed, dict(spec.presets[size]), image_size, 1))
    return out


def _png(root: Path, rel: str, size: int) -> torch.Tensor:
    with Image.open(root / rel) as image:
        return images_to_tensor([image.convert("RGB")], size)[0]


def _digest(encoder_dir: Path, data: Path) -> str:
    sha = hashlib.sha256(f"{CACHE_VERSION}".encode())
    for path in sorted(p for p in encoder_dir.rglob("*") if p.is_file()):
        if path.suffix in (".safetensors", ".json", ".pt", ".bin"):
            sha.update(path.name.encode())
            sha.update(str(path.stat().st_size).encode())
            sha.update(hashlib.sha256(path.read_bytes()).digest())
    sha.update((data / "manifest.json").read_bytes())
    return sha.hexdigest()[:12]


def load_features(
    data: Path,
    encoder_uri: str,
    cache_dir: Path,
    *,
    registry: Any = None,
    device: str = "cpu",
    log: Any = print,
) -> LinkingData:
    """Featurise the KB and every split of `data` with the frozen encoder (cached on disk by
    encoder weights + dataset manifest, so ablation runs never re-encode)."""
    from concord.registry import resolve_model

    def tracking() -> Any:
        if registry is None:
            raise ValueError(f"{encoder_uri} is a registry URI: give a tracking URI")
        return registry

    _, encoder_dir = resolve_model(encoder_uri, tracking, kind="encoder")
    key = _digest(Path(encoder_dir), Path(data))
    cache = Path(cache_dir) / f"m3el-features-{key}.pt"
    if cache.is_file():
        return _from_state(torch.load(cache, weights_only=False), encoder_uri)
    loaded = load_model(str(encoder_dir), lambda: tracking())
    encoder, tokenizer, size = (
        loaded.torch_model().to(device).eval(),
        loaded.tokenizer,
        loaded.image_size,
    )
    kb = read_jsonl(Path(data) / "kb.jsonl")
    index = {e["id"]: i for i, e in enumerate(kb)}
    log(f"featurising {len(kb)} entities with {encoder_uri}")
    entities = featurize_entities(
        encoder,
        tokenizer,
        [entity_text(e["name"], e["description"], e.get("attributes")) for e in kb],
        [[_png(Path(data), p, size) for p in e["images"]] for e in kb],
        device,
    ).to("cpu")
    splits = {}
    for split in SPLITS:
        path = Path(data) / f"mentions/{split}.jsonl"
        records = read_jsonl(path) if path.is_file() else []
        if not records:
            continue
        log(f"featurising {len(records)} {split} mentions")
        feats = featurize_mentions(
            encoder,
            tokenizer,
            [m["text"] for m in records],
            [tuple(m["span"]) for m in records],
            [_png(Path(data), m["image"], size) if m.get("image") else None for m in records],
            device,
        ).to("cpu")
        splits[split] = {
            "features": feats,
            "targets": torch.tensor([index[m["gold"]] for m in records]),
            "occluded": torch.tensor([bool(m.get("occluded")) for m in records]),
            "ids": [m["id"] for m in records],
        }
    state = {"kb": entities, "entity_ids": [e["id"] for e in kb], "splits": splits}
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, cache)
    return _from_state(state, encoder_uri)


def _from_state(state: dict[str, Any], encoder_uri: str) -> LinkingData:
    kb: EntityFeatures = state["kb"]
    splits = {
        name: MentionSet(_pooled(s["features"]), s["targets"], s["occluded"], tuple(s["ids"]))
        for name, s in state["splits"].items()
    }
    return LinkingData(
        kb,
        tuple(state["entity_ids"]),
        splits,
        encoder_uri,
        int(kb.text_global.shape[1]),
        int(kb.image_global.shape[1]),
    )


def _pooled(features: MentionFeatures) -> MentionFeatures:
    """Features cached before patch pooling: pool them as `featurize_mentions` now does."""
    patches = pool_patches(features.image_patches, PATCH_GRID)
    if patches is features.image_patches:
        return features
    return replace(features, image_patches=patches)


def training_subset(mentions: MentionSet, fraction: float, seed: int) -> MentionSet:
    """A seeded `fraction` of the training mentions (all of them at 1.0)."""
    if fraction >= 1.0:
        return mentions
    rng = np.random.default_rng([seed, 20])
    keep = max(1, round(fraction * len(mentions)))
    index = torch.from_numpy(np.sort(rng.permutation(len(mentions))[:keep]))
    return mentions.subset(index)
