"""The linker's model state: load the linker package once, then

- embed entities (encoder text + image globals, M3EL's fused vector) through a batcher, for
  UpsertEntities and the entity events;
- link mentions through a batcher: featurize the batch's mentions in one encoder call, take
  ANN candidates from every modality the mention has ("text", "image" when it has an image,
  "fused"), `candidates` each, and re-rank their union with M3EL's matchers;
- align two graphs with UMAEA (image features from the encoder; training on the CPU).

Torch runs in worker threads, one encoder / M3EL call at a time. No proto types here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from concord.config import Settings
from concord.devices import service_device
from concord.errors import ConcordError, FailedPrecondition
from concord.models.linking.features import (
    EntityFeatures,
    MentionFeatures,
    entity_text,
    featurize_entities,
    featurize_mentions,
)
from concord.models.linking.umaea import GraphTensors, Progress, align
from concord.models.preprocess import images_to_tensor
from concord.registry import Registry
from concord.serving import DynamicBatcher
from concord.serving.servable import Servable, batcher
from concord.vectors import ScoredPoint
from concord.wire import ModelId
from services.linker import kb as kbs_
from services.linker.kb import EntityRecord, KBEntry, KnowledgeBases, StoredEntity
from services.linker.loading import LoadedLinker, load
from services.linker.types import AlignIn, EntityIn, GraphIn, LinkIn, Pair, Ranked

IMAGE_CHUNK = 64  # images per encoder call when featurizing a graph
# Mentions x union candidates scored in one M3EL call. Candidate sets of a batch barely
# overlap, so one joint call costs ~batch times the useful work: worth it only while small
# (fewer calls); larger batches are scored mention by mention against their own candidates.
MAX_JOINT_SCORES = 1 << 14
# The text of an image-only entity: the tokenizer needs one, and a fixed one gives every such
# entity the same text features, so only the visual matchers tell them apart.
NO_TEXT = "entity"


def text_of(entity: EntityIn) -> str:
    """The one text an entity is read as (`entity_text`; NO_TEXT for an image-only entity)."""
    return entity_text(entity.name, entity.description, entity.attributes) or NO_TEXT


@dataclass(frozen=True)
class _Failed:
    """A mention of a batch that could not be linked (its knowledge base went away)."""

    error: ConcordError


class LinkerServable(Servable[LoadedLinker]):
    """Holds the served linker and its batchers.

    Args:
        settings: `linker.model` names the package; `linker.candidates` sizes each modality's
            ANN search; `batching` sizes the batchers.
        registry: returns the platform registry (called only for `models:/` URIs).
        kbs: returns the knowledge bases (opened at start).
    """

    missing_hint = (
        " (train and register one with pipelines/linker, or set CONCORD_LINKER__MODEL to a "
        "linker package directory)"
    )
    # Knowledge bases hold vectors of the linker that built them (`check_kb`): swapping the
    # model while serving would strand every one of them, so a moved alias waits for a restart.
    reloadable = False

    def __init__(
        self,
        settings: Settings,
        registry: Callable[[], Registry],
        kbs: Callable[[], KnowledgeBases],
    ) -> None:
        self.candidates = settings.linker.candidates
        self._registry = registry
        self._kbs = kbs
        self._device_settings = settings.device
        self._model_lock = threading.Lock()
        self.mentions: DynamicBatcher[LinkIn, list[Ranked] | _Failed] = batcher(
            self._link_batch, "linker-mentions", settings.batching
        )
        self.entities: DynamicBatcher[EntityIn, EntityRecord] = batcher(
            self._embed_batch, "linker-entities", settings.batching
        )
        super().__init__("linker", settings.linker.model, [self.mentions, self.entities])

    def load(self) -> LoadedLinker:
        """Resolve the device, then load the package, its M3EL and its encoder onto it."""
        self.device = service_device(self._device_settings, "linker")
        return load(self.uri, self._registry, self.device)

    @property
    def models(self) -> list[ModelId]:
        """The package, then the encoder it featurizes with."""
        loaded = self.loaded
        return [loaded.id, loaded.encoder.id] if loaded is not None else []

    def check_kb(self, entry: KBEntry) -> None:
        """Raises: FailedPrecondition when the knowledge base holds another model's vectors."""
        loaded = self.require()
        if entry.model != loaded.id:
            raise FailedPrecondition(
                f"knowledge base {entry.name!r} holds vectors of {entry.model}, the linker "
                f"serves {loaded.id}: upsert its entities again into a new knowledge base"
            )

    # ----------------------------------------------------------------- entities

    async def embed(self, entities: Sequence[EntityIn]) -> list[EntityRecord]:
        """Vectors of decoded entities; each goes through the batcher so callers coalesce."""
        self.require()
        return await self.entities.submit_many(entities)

    def embed_sync(self, entities: Sequence[EntityIn]) -> list[EntityRecord]:
        """The same as `embed` for callers in other threads (the entity worker)."""
        return self._embed_batch(list(entities)) if entities else []

    def _embed_batch(self, items: list[EntityIn]) -> list[EntityRecord]:
        loaded = self.require()
        texts = [text_of(e) for e in items]
        pixels = [
            images_to_tensor(list(e.images), loaded.image_size) if e.images else None for e in items
        ]
        encoder = loaded.encoder.torch_model()
        with self._model_lock, torch.inference_mode():
            features = featurize_entities(
                encoder, loaded.encoder.tokenizer, texts, pixels, self.device
            )
            fused = loaded.m3el.entity_embedding(features)
        text = features.text_global.float().cpu().numpy()
        image = features.image_global.float().cpu().numpy()
        has_image = features.has_image.cpu().numpy()
        fused_np = fused.float().cpu().numpy()
        return [
            EntityRecord(
                e.id,
                e.name,
                e.description,
                dict(e.attributes),
                len(e.images),
                text[i],
                image[i] if has_image[i] else None,
                fused_np[i],
            )
            for i, e in enumerate(items)
        ]

    # ----------------------------------------------------------------- linking

    async def link(self, items: Sequence[LinkIn]) -> list[list[Ranked]]:
        """Ranked candidates per mention, best first (through the batcher).

        Raises:
            NotFound: a knowledge base was dropped while the mentions waited.
        """
        self.require()
        return _unwrap(await self.mentions.submit_many(items))

    def link_sync(self, items: Sequence[LinkIn]) -> list[list[Ranked]]:
        """The same as `link` in the calling thread (benchmarks, other threads)."""
        return _unwrap(self._link_batch(list(items)))

    def _link_batch(self, items: list[LinkIn]) -> list[list[Ranked] | _Failed]:
        loaded = self.require()
        kbs = self._kbs()
        mentions = [item.mention for item in items]
        pixels = [
            images_to_tensor([m.image], loaded.image_size)[0] if m.image is not None else None
            for m in mentions
        ]
        encoder = loaded.encoder.torch_model()
        with self._model_lock, torch.inference_mode():
            features = featurize_mentions(
                encoder,
                loaded.encoder.tokenizer,
                [m.text for m in mentions],
                [m.span for m in mentions],
                pixels,
                self.device,
            )
            fused = loaded.m3el.mention_embedding(features).float().cpu().numpy()
        text = features.text_global.float().cpu().numpy()
        image = features.image_global.float().cpu().numpy()
        has_image = features.has_image.cpu().numpy()

        # ANN candidates per mention, from every modality it has (union, first hit kept).
        found: list[list[str] | _Failed] = []
        wanted: dict[tuple[str, str], None] = {}
        for i, item in enumerate(items):
            queries = [(kbs_.TEXT, text[i]), (kbs_.FUSED, fused[i])]
            if has_image[i]:
                queries.insert(1, (kbs_.IMAGE, image[i]))
            try:
                hits: list[ScoredPoint] = []
                for using, vector in queries:
                    hits += kbs.search(item.kb, using, vector, self.candidates)
            except ConcordError as err:
                found.append(_Failed(err))
                continue
            points = list(dict.fromkeys(str(h.id) for h in hits))
            found.append(points)
            wanted.update(dict.fromkeys((item.kb, p) for p in points))

        # The union's raw features, once per knowledge base.
        by_kb: dict[str, list[str]] = {}
        for kb, point in wanted:
            by_kb.setdefault(kb, []).append(point)
        stored: dict[tuple[str, str], StoredEntity] = {}
        for kb, points in by_kb.items():
            stored.update({(kb, s.point): s for s in kbs.fetch(kb, points)})
        keys = list(stored)
        column = {key: j for j, key in enumerate(keys)}
        entities = _entity_features(
            [stored[k] for k in keys], loaded.m3el.text_dim, loaded.m3el.image_dim
        )

        out: list[list[Ranked] | _Failed] = []
        joint = None
        if keys and len(items) * len(keys) <= MAX_JOINT_SCORES:
            joint = self._match(loaded, features, entities)
        for i, (item, listed) in enumerate(zip(items, found, strict=True)):
            if isinstance(listed, _Failed):
                out.append(listed)
                continue
            cols = [column[(item.kb, p)] for p in listed if (item.kb, p) in column]
            if not cols:
                out.append([])
                continue
            if joint is not None:
                scores = {name: s[i, cols] for name, s in joint.items()}
            else:
                scores = {
                    name: s[0]
                    for name, s in self._match(
                        loaded, features[i : i + 1], entities[torch.tensor(cols)]
                    ).items()
                }
            out.append(_ranked([stored[keys[c]] for c in cols], scores, item.top_k))
        return out

    def _match(
        self, loaded: LoadedLinker, mentions: MentionFeatures, entities: EntityFeatures
    ) -> dict[str, np.ndarray]:
        with self._model_lock, torch.inference_mode():
            scores = loaded.m3el.match(mentions.to(self.device), entities.to(self.device))
        out = {name: t.float().cpu().numpy() for name, t in scores.matchers().items()}
        out["final"] = scores.final.float().cpu().numpy()
        return out

    # ----------------------------------------------------------------- alignment

    def align_sync(self, request: AlignIn, progress: Progress | None = None) -> list[Pair]:
        """Train UMAEA on the seeds and align every non-seed source entity (in this thread).

        Returns:
            `top_k` pairs per source entity that is not a seed, grouped by source, sources
            ordered by their best score (best first).
        """
        loaded = self.require()
        g1 = self.graph_tensors(request.source)
        g2 = self.graph_tensors(request.target)
        seeds = torch.tensor(request.seeds, dtype=torch.long).reshape(-1, 2)
        alignment = align(g1, g2, seeds, loaded.umaea, progress)
        seeded = {s for s, _ in request.seeds}
        sources = torch.tensor(
            [i for i in range(g1.num_entities) if i not in seeded], dtype=torch.long
        )
        if not len(sources):
            return []
        k = min(request.top_k, g2.num_entities)
        index, score = alignment.top_k(k, sources=sources)
        order = torch.argsort(score[:, 0], descending=True)
        source_ids, target_ids = request.source.ids, request.target.ids
        return [
            Pair(source_ids[int(sources[r])], target_ids[int(index[r, j])], float(score[r, j]))
            for r in order.tolist()
            for j in range(k)
        ]

    def graph_tensors(self, graph: GraphIn) -> GraphTensors:
        """One graph as UMAEA reads it: its own relation and attribute-key vocabularies, and
        the encoder's image globals (mean of an entity's images), zeros where it has none."""
        n = len(graph.entities)
        relations = {r: i for i, r in enumerate(sorted({t[1] for t in graph.triples}))}
        edges = torch.tensor([(h, t) for h, _, t in graph.triples], dtype=torch.long)
        keys = {
            k: i for i, k in enumerate(sorted({k for e in graph.entities for k in e.attributes}))
        }
        attributes = torch.zeros(n, len(keys))
        for i, entity in enumerate(graph.entities):
            for key in entity.attributes:
                attributes[i, keys[key]] = 1.0
        images, has_image = self._image_globals([e.images for e in graph.entities])
        return GraphTensors(
            num_entities=n,
            edges=edges.reshape(-1, 2),
            edge_relations=torch.tensor(
                [relations[r] for _, r, _ in graph.triples], dtype=torch.long
            ),
            num_relations=len(relations),
            attributes=attributes,
            images=images,
            has_image=has_image,
        )

    def _image_globals(
        self, images: Sequence[Sequence[Image.Image]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loaded = self.require()
        counts = torch.tensor([len(x) for x in images], dtype=torch.long)
        has_image = counts > 0
        flat = [im for x in images for im in x]
        dim = loaded.m3el.image_dim
        if not flat:
            return torch.zeros(len(images), dim), has_image
        encoder = loaded.encoder.torch_model()
        parts = []
        for start in range(0, len(flat), IMAGE_CHUNK):
            pixels = images_to_tensor(flat[start : start + IMAGE_CHUNK], loaded.image_size)
            with self._model_lock, torch.inference_mode():
                parts.append(encoder.encode_image(pixels.to(self.device)).pooled.float().cpu())
        pooled = torch.cat(parts)
        owner = torch.repeat_interleave(torch.arange(len(images)), counts)
        summed = torch.zeros(len(images), pooled.shape[1]).index_add_(0, owner, pooled)
        return F.normalize(summed, dim=-1) * has_image.unsqueeze(1), has_image


def _unwrap(results: Sequence[list[Ranked] | _Failed]) -> list[list[Ranked]]:
    for result in results:
        if isinstance(result, _Failed):
            raise result.error
    return [r for r in results if not isinstance(r, _Failed)]


def _entity_features(
    entities: Sequence[StoredEntity], text_dim: int, image_dim: int
) -> EntityFeatures:
    text = np.zeros((len(entities), text_dim), dtype=np.float32)
    image = np.zeros((len(entities), image_dim), dtype=np.float32)
    has_image = np.zeros(len(entities), dtype=bool)
    for j, entity in enumerate(entities):
        if entity.text is not None:
            text[j] = entity.text
        if entity.image is not None:
            image[j] = entity.image
            has_image[j] = True
    return EntityFeatures(
        torch.from_numpy(text), torch.from_numpy(image), torch.from_numpy(has_image)
    )


def _ranked(
    entities: Sequence[StoredEntity], scores: dict[str, np.ndarray], top_k: int
) -> list[Ranked]:
    final = scores["final"]
    order = np.argsort(-final, kind="stable")[:top_k]

    def value(name: str, j: int) -> float | None:
        v = float(scores[name][j])
        return None if np.isnan(v) else v

    return [
        Ranked(
            entities[j].id,
            entities[j].name,
            entities[j].description,
            float(final[j]),
            value("text_coarse", j),
            value("text_fine", j),
            value("visual", j),
            value("cross_modal", j),
        )
        for j in order.tolist()
    ]
