"""The generator's model state: load once, then run one torch job (a generation or a concept
fine-tune) at a time in a worker thread, behind a bounded gate. No proto types here.

Why one at a time: a denoising loop already uses every core; two at once only make both
slower and double the memory. Callers beyond the bound are refused (RESOURCE_EXHAUSTED) so
latency does not grow without limit; Kafka jobs wait instead (their queue is the topic).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from concord.checkpoints.generator import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    is_generator_dir,
    load_generator,
)
from concord.config import Settings
from concord.devices import autocast, service_device
from concord.errors import ConcordError, FailedPrecondition, ResourceExhausted
from concord.models.diffusion.pipeline import (
    ConceptWeights,
    GenerationCancelled,
    Sample,
    TextToImage,
    finetune_concept,
)
from concord.registry import Registry, resolve_model
from concord.serving.servable import Servable
from concord.wire import ModelId
from services.generator.concepts import ConceptCatalog
from services.generator.params import CustomizeParams, GenerateParams, ModelShape

MAX_WAITING = 4  # generations queued behind the running one before RESOURCE_EXHAUSTED

# on_progress(step, total, previews): previews is uint8 (B, H, W, 3) on preview steps, else None.
ProgressFn = Callable[[int, int, np.ndarray | None], None]


class Cancelled(ConcordError):
    """The caller went away (or asked to stop): the generation stopped between two steps."""

    status = "CANCELLED"


class Gate:
    """Admits one torch job at a time; at most `max_waiting` more may wait for it.

    `admit()` happens on the caller's side (so an overloaded service answers at once);
    the returned ticket's `run()` blocks in the worker thread until it is this job's turn.
    """

    def __init__(self, max_waiting: int = MAX_WAITING) -> None:
        self.max_waiting = max_waiting
        self._run = threading.Lock()
        self._mutex = threading.Lock()
        self.admitted = 0  # running + waiting

    def admit(self, *, wait: bool = False) -> Ticket:
        """Args: wait: never refuse (Kafka jobs). Raises: ResourceExhausted when full."""
        with self._mutex:
            if not wait and self.admitted > self.max_waiting:
                raise ResourceExhausted(
                    f"the generator is busy ({self.admitted} generations running or queued); "
                    "retry later"
                )
            self.admitted += 1
        return Ticket(self)

    def _leave(self) -> None:
        with self._mutex:
            self.admitted -= 1


class Ticket:
    """One admitted job: `with ticket.run(): ...` holds the gate; leaving always frees it."""

    def __init__(self, gate: Gate) -> None:
        self._gate = gate
        self._left = False

    @contextmanager
    def run(self) -> Iterator[None]:
        try:
            with self._gate._run:
                yield
        finally:
            self.release()

    def release(self) -> None:
        """Give up the place (idempotent): for a job that never got to `run`."""
        if not self._left:
            self._left = True
            self._gate._leave()


@dataclass(frozen=True)
class Generated:
    """The samples of one generation and what made them."""

    samples: list[Sample]
    model: ModelId
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class LoadedGenerator:
    """The served pipeline and what to call it in responses."""

    pipe: TextToImage
    id: ModelId


class GeneratorServable(Servable[LoadedGenerator]):
    """Holds the served generator, its concepts and the gate.

    Args:
        settings: `generator.model` names the model; `generator.*` holds the limits.
        registry: returns the platform registry (models:/ URIs and concepts).
    """

    missing_hint = " (train and register one: python -m pipelines.train_generator --preset tiny)"

    def __init__(self, settings: Settings, registry: Callable[[], Registry]) -> None:
        super().__init__("generator", settings.generator.model)
        self.limits = settings.generator
        self._registry = registry
        self.concepts = ConceptCatalog(registry)
        self.gate = Gate()
        self._device_settings = settings.device
        self.precision = settings.device.precision
        self.steps_done = 0  # denoising steps run since start (tests, benchmarks)

    def load(self) -> LoadedGenerator:
        """Resolve the device, then load the model onto it."""
        self.device = service_device(self._device_settings, "generator")
        pipe, model_id = load_pipeline(self.uri, self._registry, self.device)
        pipe.unet.eval()
        return LoadedGenerator(pipe, model_id)

    def shape(self) -> ModelShape:
        config = self.require().pipe.config
        return ModelShape(config.image_size, config.layout)

    def fits_prompt(self, prompt: str) -> bool:
        """Whether the text encoder reads all of `prompt` (longer prompts are truncated to the
        model's max_text_tokens, [CLS] and [SEP] included)."""
        pipe = self.require().pipe
        ids = pipe.hf_tokenizer(prompt, truncation=False)["input_ids"]
        return len(ids) <= pipe.config.max_text_tokens

    # ----------------------------------------------------------------- predict

    def concept(self, name: str, field: str = "concept.concept") -> ConceptWeights | None:
        """Returns: the registered concept (None for ""). Raises: NotFound naming `field`."""
        return self.concepts.load(name, field)[0] if name else None

    def generate(
        self,
        params: GenerateParams,
        ticket: Ticket,
        on_progress: ProgressFn | None = None,
        cancelled: threading.Event | None = None,
    ) -> Generated:
        """Run one generation in the calling (worker) thread once the gate admits it.

        Args:
            params: validated parameters.
            ticket: from `gate.admit()`; released when this returns.
            on_progress: called after every denoising step (from this thread).
            cancelled: set by the caller to stop between two steps.
        Raises:
            Cancelled: `cancelled` was set; NotFound: the concept is not registered.
        """
        stop = cancelled or threading.Event()
        with ticket.run():
            if stop.is_set():  # the caller left while waiting for the gate
                raise Cancelled("generation cancelled before it started")
            loaded = self.require()
            pipe = loaded.pipe
            concept = self.concept(params.concept)

            def on_step(step: int, total: int, preview: torch.Tensor) -> bool:
                self.steps_done += 1
                if on_progress is not None:
                    wanted = params.preview_every and (step % params.preview_every == 0)
                    on_progress(step, total, _to_uint8(preview) if wanted else None)
                return not stop.is_set()

            # generate() runs under no_grad (a concept's LoRA is patched in for the call); on a
            # GPU the U-Net runs under autocast, the sampler's arithmetic stays fp32.
            try:
                with autocast(self.device, self.precision):
                    samples = pipe.generate(
                        list(params.prompts),
                        seed=params.seed,
                        steps=params.steps,
                        guidance_scale=params.guidance_scale,
                        sampler=params.sampler,  # type: ignore[arg-type]
                        concept=concept,
                        unwanted=params.unwanted,
                        alpha=params.alpha,
                        directions=params.directions,
                        on_step=on_step,
                    )
            except GenerationCancelled:
                raise Cancelled("generation cancelled by the caller") from None
        return Generated(samples, loaded.id, pipe.config.class_names)

    def finetune(
        self,
        params: CustomizeParams,
        ticket: Ticket,
        on_step: Callable[[int, int], bool] | None = None,
    ) -> ConceptWeights:
        """Fit a concept on its references (in the calling thread, holding the gate).

        Args:
            params: validated customization (decoded PIL references).
            ticket: from `gate.admit(wait=True)`; released when this returns.
            on_step: (step, total) -> keep going.
        """
        with ticket.run():
            pipe = self.require().pipe
            size = pipe.config.image_size
            references = references_tensor(params.references, size)  # type: ignore[arg-type]
            references = references.to(self.device)  # fine-tuned in fp32, on the model's device
            prompt = concept_prompt(params.concept, params.class_word)
            concept = finetune_concept(
                pipe,
                references,
                prompt,
                name=params.concept,
                class_word=params.class_word,
                steps=params.steps,
                on_step=on_step,
            )
            pipe.unet.eval()
            return concept


def concept_prompt(name: str, class_word: str) -> str:
    """The training prompt of a concept (DreamBooth style: "a zorv object")."""
    return f"a {name} {class_word}".strip()


def references_tensor(images: list[Image.Image], size: int) -> torch.Tensor:
    """Returns: (N, 3, size, size) float32 in [0, 1], each image resized (bicubic)."""
    arrays = [
        np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
        for image in images
    ]
    stacked = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
    return stacked.contiguous()


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> uint8 (B, H, W, 3)."""
    pixels = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def load_pipeline(
    uri: str, registry: Callable[[], Registry], device: torch.device | str = "cpu"
) -> tuple[TextToImage, ModelId]:
    """Load the generator named by `uri` onto `device`: `models:/NAME@ALIAS`,
    `models:/NAME/VERSION`, or a directory written by `save_generator`.

    Returns:
        The pipeline and its id: registered name and version, or for a directory its name and
        `local-<8 hex of the sha256 of its config and weights>` (`concord.registry.resolve_model`).
    Raises:
        FailedPrecondition: no such model, or not a generator directory.
    """

    def model_files(directory: Path) -> tuple[Path, Path]:  # a local model is named by these
        if not is_generator_dir(directory):
            raise FailedPrecondition(
                f"generator model {uri!r} is not a generator directory "
                f"(needs {CONFIG_FILE} and {WEIGHTS_FILE})"
            )
        return directory / CONFIG_FILE, directory / WEIGHTS_FILE

    model_id, directory = resolve_model(uri, registry, kind="generator", files=model_files)
    return load_generator(directory, device), model_id
