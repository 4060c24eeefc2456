"""Concepts in the model registry: a customization is registered as `concord-concept-<name>`
(tagged `concord.kind=concept`, alias `production`), found by tag for ListConcepts, and
loaded (cached per version) when a prompt asks for it."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from concord.checkpoints import load_concept, save_concept
from concord.errors import NotFound
from concord.models.diffusion.pipeline import ConceptWeights
from concord.registry import REGISTRY_PREFIX, ModelNotFound, Registry
from concord.wire import ModelId

PREFIX = "concord-concept-"
ALIAS = "production"
EXPERIMENT = "concord-concepts"
KIND_TAG, KIND = "concord.kind", "concept"
NAME_TAG = "concord.concept.name"
CLASS_WORD_TAG = "concord.concept.class-word"
REFERENCES_TAG = "concord.concept.references"
JOB_TAG = "concord.job-id"  # on each version: which job made it (replays are skipped)


def registered_name(concept: str) -> str:
    return PREFIX + concept


@dataclass(frozen=True)
class ConceptInfo:
    """A registered concept as ListConcepts reports it."""

    name: str
    class_word: str
    model: ModelId  # registered name and the version `production` points at
    reference_count: int


class ConceptCatalog:
    """Registers, lists and loads concepts.

    Args:
        registry: returns the platform registry.
    """

    def __init__(self, registry: Callable[[], Registry]) -> None:
        self._registry = registry
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, ConceptWeights]] = {}  # name -> (version, weights)

    def load(self, name: str, field: str = "concept.concept") -> tuple[ConceptWeights, ModelId]:
        """The concept `production` names now (re-resolved each call, so a new registration
        is picked up at once; the weights are cached per version).

        Raises:
            NotFound: no such concept (the message names `field`).
        """
        uri = f"{REGISTRY_PREFIX}{registered_name(name)}@{ALIAS}"
        try:
            info = self._registry().resolve(uri)
        except ModelNotFound:
            raise NotFound(
                f"{field}: concept {name!r} is not registered (no {uri}); "
                "ListConcepts shows the registered ones"
            ) from None
        model = ModelId(info.name, str(info.version))
        with self._lock:
            cached = self._cache.get(name)
        if cached is not None and cached[0] == info.version:
            return cached[1], model
        _, directory = self._registry().download(info)
        weights = load_concept(directory)
        with self._lock:
            self._cache[name] = (info.version, weights)
        return weights, model

    def register(self, concept: ConceptWeights, job_id: str) -> ModelId:
        """Save, log, register and promote a finished customization.

        Returns:
            The new version (or, when `job_id` already registered one, that version).
        """
        registry = self._registry()
        name = registered_name(concept.name)
        done = self._version_of_job(registry, name, job_id)
        if done is not None:
            return done
        tags = {
            KIND_TAG: KIND,
            NAME_TAG: concept.name,
            CLASS_WORD_TAG: concept.class_word,
            REFERENCES_TAG: str(concept.reference_count),
        }
        params = {"concept": concept.name, "class_word": concept.class_word, "rank": concept.rank}
        with tempfile.TemporaryDirectory(prefix="concept-") as tmp:
            save_concept(concept, Path(tmp))
            with registry.start_run(
                f"concept-{concept.name}", experiment=EXPERIMENT, params=params, tags=tags
            ) as run:
                path = run.log_model_dir(tmp)
            version = registry.register_model(
                name, run.run_id, path, tags={**tags, JOB_TAG: job_id}
            )
        registry.set_model_tags(name, tags)
        registry.set_alias(name, ALIAS, version.version)
        return ModelId(name, str(version.version))

    @staticmethod
    def _version_of_job(registry: Registry, name: str, job_id: str) -> ModelId | None:
        try:
            versions = registry.list_versions(name)
        except ModelNotFound:
            return None
        for v in versions:
            if v.tags.get(JOB_TAG) == job_id:
                return ModelId(name, str(v.version))
        return None

    def list(self) -> list[ConceptInfo]:
        """Every registered concept with a `production` version, by name."""
        out = []
        for model in self._registry().list_models({KIND_TAG: KIND}):
            version = model.aliases.get(ALIAS)
            if version is None:
                continue
            tags = model.tags
            out.append(
                ConceptInfo(
                    name=tags.get(NAME_TAG) or model.name.removeprefix(PREFIX),
                    class_word=tags.get(CLASS_WORD_TAG, ""),
                    model=ModelId(model.name, str(version)),
                    reference_count=int(tags.get(REFERENCES_TAG, "0") or 0),
                )
            )
        return out
