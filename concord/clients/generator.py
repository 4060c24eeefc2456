"""Typed blocking client of the generator service: generate images with their layouts
(streamed progress, cancellable from the progress callback), customize a concept from
reference images (an asynchronous job), follow jobs and list concepts."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import grpc
import numpy as np

from concord.clients.convert import error_from_rpc
from concord.clients.encoder import ImageInput, Metadata, image_proto
from concord.clients.scorer import PairScore, WordAlignment, pair_score_from_proto
from concord.errors import ConcordError, InvalidArgument
from concord.proto.v1 import common_pb2, generator_pb2, generator_pb2_grpc, scorer_pb2
from concord.wire import SAMPLER_PREFIX, ModelId, model_id
from concord.wire import sampler_value as sampler_value  # re-exported for the SDK's users

# For type checkers; the names are the proto `Sampler` enum's, which a test checks against the
# model's sampler registry (`concord.models.diffusion.samplers`, not imported here: it needs torch).
Sampler = Literal["ddim", "ddpm"]
JobState = Literal["UNSPECIFIED", "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"]
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})

# Sampler name -> proto enum value, read from the enum (SAMPLER_DDIM -> "ddim"), by name.
# (The generated stub types the enum's items() as plain ints; they are its values.)
SAMPLERS: dict[str, generator_pb2.Sampler] = {
    key.removeprefix(SAMPLER_PREFIX).lower(): cast("generator_pb2.Sampler", value)
    for key, value in sorted(generator_pb2.Sampler.items())
    if value != generator_pb2.SAMPLER_UNSPECIFIED
}


class GenerationCancelled(ConcordError):
    """The progress callback returned False: the call was cancelled (the server stops too)."""

    status = "CANCELLED"


@dataclass(frozen=True)
class Progress:
    """One denoising step: `preview` is a PNG of prompt `prompt_index`'s current estimate
    (only on preview steps; otherwise the event stands for the whole batch)."""

    step: int
    total_steps: int
    prompt_index: int = 0
    preview: bytes | None = None


@dataclass(frozen=True, eq=False)
class GeneratedImage:
    """One generated image: PNG bytes, its semantic layout and what made it."""

    prompt_index: int
    png: bytes
    seed: int  # the seed this image was drawn with (request seed + prompt index)
    model: ModelId
    layout: np.ndarray | None = None  # uint8 (H, W) class ids; None for image-only models
    legend: Mapping[int, str] = field(default_factory=dict)  # class id -> name

    @property
    def array(self) -> np.ndarray:
        """Returns: the image as uint8 (H, W, 3)."""
        from PIL import Image

        with Image.open(io.BytesIO(self.png)) as image:
            return np.asarray(image.convert("RGB"))

    def classes_present(self) -> dict[int, str]:
        """Returns: class id -> name for the classes the layout contains (background too)."""
        if self.layout is None:
            return {}
        return {int(i): self.legend.get(int(i), str(int(i))) for i in np.unique(self.layout)}


@dataclass(frozen=True)
class AlignmentTry:
    """One try of an aligned generation: what it drew with and the scorer's audit of it.

    prompt: what the image was drawn from (flagged words of earlier tries repeated).
    score: the image against the requested prompt (`score.aligned_probability` is the audit score).
    flagged: the words the scorer flagged; spans index the requested prompt.
    passed: no word flagged and the audit score above the pass threshold.
    """

    index: int
    seed: int
    guidance_scale: float
    prompt: str
    score: PairScore
    flagged: tuple[WordAlignment, ...]
    passed: bool


@dataclass(frozen=True, eq=False)
class AlignedGeneration:
    """The answer of `generate_aligned`: the best image (the passing try, else the highest
    audit score) and every try's audit, in order."""

    image: GeneratedImage
    best_try: int
    passed: bool
    tries: tuple[AlignmentTry, ...]
    min_score: float  # the pass threshold the server applied
    scorer: ModelId


def word_from_proto(word: scorer_pb2.WordAlignment) -> WordAlignment:
    return WordAlignment(
        word=word.word,
        span=(word.span.start, word.span.end),
        attribution=word.attribution,
        similarity=word.similarity,
        misaligned=word.misaligned,
        best_patch=word.best_patch,
    )


def alignment_try_from_proto(attempt: generator_pb2.AlignmentTry) -> AlignmentTry:
    return AlignmentTry(
        index=attempt.index,
        seed=attempt.seed,
        guidance_scale=attempt.guidance_scale,
        prompt=attempt.prompt,
        score=pair_score_from_proto(attempt.score, has_references=False),
        flagged=tuple(word_from_proto(w) for w in attempt.flagged),
        passed=attempt.passed,
    )


def aligned_from_proto(reply: generator_pb2.GenerateAlignedResponse) -> AlignedGeneration:
    return AlignedGeneration(
        image=image_from_proto(reply.best),
        best_try=reply.best_try,
        passed=reply.passed,
        tries=tuple(alignment_try_from_proto(t) for t in reply.tries),
        min_score=reply.min_score,
        scorer=model_id(reply.scorer_model),
    )


@dataclass(frozen=True)
class Job:
    """A customization or generation job as GetJob reports it."""

    id: str
    state: JobState
    message: str = ""
    progress: float = 0.0
    concept: str = ""

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class Concept:
    """A registered concept: use its name as a word in prompts and in `concept=`."""

    name: str
    class_word: str
    model: ModelId
    reference_count: int


def layout_from_tensor(tensor: common_pb2.Tensor) -> np.ndarray:
    """Returns: the (H, W) uint8 class map. Raises: InvalidArgument on a malformed tensor."""
    if tensor.dtype != common_pb2.DTYPE_UINT8:
        raise InvalidArgument("layout.class_map.dtype", "expected DTYPE_UINT8")
    shape = tuple(int(s) for s in tensor.shape)
    if len(shape) != 2 or len(tensor.data) != shape[0] * shape[1]:
        raise InvalidArgument("layout.class_map", f"{len(tensor.data)} bytes for shape {shape}")
    return np.frombuffer(tensor.data, dtype=np.uint8).reshape(shape).copy()


def image_from_proto(result: generator_pb2.GeneratedImage) -> GeneratedImage:
    layout = None
    legend: dict[int, str] = {}
    if result.HasField("layout"):
        layout = layout_from_tensor(result.layout.class_map)
        legend = dict(sorted(result.layout.legend.items()))
    return GeneratedImage(
        prompt_index=result.prompt_index,
        png=result.image.data,
        seed=result.seed,
        model=model_id(result.model),
        layout=layout,
        legend=legend,
    )


def job_from_proto(job: generator_pb2.Job) -> Job:
    state = generator_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")
    return Job(job.id, state, job.message, float(job.progress), job.concept)  # type: ignore[arg-type]


def concept_from_proto(concept: generator_pb2.Concept) -> Concept:
    return Concept(
        concept.name, concept.class_word, model_id(concept.model), concept.reference_count
    )


def generate_request(
    prompts: Sequence[str],
    *,
    seed: int = 0,
    steps: int = 0,
    guidance_scale: float = 0.0,
    sampler: Sampler | None = None,
    with_layout: bool = True,
    preview_every: int = 0,
    concept: str = "",
    unwanted: Sequence[str] = (),
    alpha: float = 0.0,
    directions: int = 0,
) -> generator_pb2.GenerateRequest:
    """The wire request; 0 / None / "" mean the server's default. See `GeneratorClient`."""
    if sampler is not None and sampler not in SAMPLERS:
        raise InvalidArgument("sampler", f"{sampler!r} is not one of {', '.join(SAMPLERS)}")
    request = generator_pb2.GenerateRequest(
        prompts=list(prompts),
        seed=seed,
        steps=steps,
        guidance_scale=guidance_scale,
        sampler=SAMPLERS[sampler] if sampler else generator_pb2.SAMPLER_UNSPECIFIED,
        with_layout=with_layout,
        preview_every=preview_every,
    )
    if concept or unwanted:
        request.concept.CopyFrom(
            generator_pb2.ConceptGuidance(
                concept=concept, unwanted=list(unwanted), alpha=alpha, directions=directions
            )
        )
    return request


class GeneratorClient:
    """Blocking generator calls; failures raise the domain error the server raised.

    Args:
        channel: a channel to the generator service.
        metadata: call metadata (the bearer token).
        timeout: seconds per call (None: no deadline); a generation streams for its whole run.
    """

    def __init__(
        self, channel: grpc.Channel, metadata: Metadata = (), timeout: float | None = 600.0
    ) -> None:
        self._stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        self._metadata = metadata
        self._timeout = timeout

    def stream(self, request: generator_pb2.GenerateRequest) -> Iterator[Progress | GeneratedImage]:
        """Yield Progress events, then one GeneratedImage per prompt, as the server sends them.
        Closing the iterator early cancels the call (and the server's work)."""
        call = self._stub.Generate(request, timeout=self._timeout, metadata=self._metadata)
        try:
            for event in call:
                if event.HasField("progress"):
                    p = event.progress
                    preview = p.preview.data if p.HasField("preview") else None
                    yield Progress(p.step, p.total_steps, p.prompt_index, preview)
                else:
                    yield image_from_proto(event.result)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        finally:
            call.cancel()  # no-op once the stream finished

    def generate(
        self,
        prompts: Sequence[str],
        *,
        seed: int = 0,
        steps: int = 0,
        guidance_scale: float = 0.0,
        sampler: Sampler | None = None,
        with_layout: bool = True,
        preview_every: int = 0,
        concept: str = "",
        unwanted: Sequence[str] = (),
        alpha: float = 0.0,
        directions: int = 0,
        on_progress: Callable[[Progress], bool | None] | None = None,
    ) -> list[GeneratedImage]:
        """Generate one image (and its layout) per prompt.

        Args:
            prompts: the prompts (a concept's name may appear in them as a word).
            seed: image i is drawn with seed + i: the same seed gives the same images.
            steps: denoising steps (0: the server's default).
            guidance_scale: classifier-free guidance (0: the server's default).
            sampler: a name in `SAMPLERS`, e.g. "ddim" (None: the server's default).
            with_layout: also return the semantic layout (class map + legend).
            preview_every: send a preview of each image every N steps (0: none).
            concept: a registered concept's name (see `list_concepts`).
            unwanted, alpha, directions: DECOR: project the text embedding away from the
                top `directions` singular directions of these tokens, with strength alpha.
            on_progress: called per Progress event; returning False cancels the call.
        Returns:
            The images in prompt order.
        Raises:
            GenerationCancelled: `on_progress` returned False.
        """
        request = generate_request(
            prompts,
            seed=seed,
            steps=steps,
            guidance_scale=guidance_scale,
            sampler=sampler,
            with_layout=with_layout,
            preview_every=preview_every,
            concept=concept,
            unwanted=unwanted,
            alpha=alpha,
            directions=directions,
        )
        images: list[GeneratedImage] = []
        events = self.stream(request)
        try:
            for event in events:
                if isinstance(event, GeneratedImage):
                    images.append(event)
                elif on_progress is not None and on_progress(event) is False:
                    raise GenerationCancelled(f"cancelled at step {event.step}")
        finally:
            events.close()  # type: ignore[attr-defined]
        return sorted(images, key=lambda image: image.prompt_index)

    def generate_aligned(
        self,
        prompt: str,
        *,
        max_tries: int = 0,
        min_score: float = 0.0,
        word_threshold: float = 0.0,
        guidance_step: float = 0.0,
        emphasis: bool = True,
        seed: int = 0,
        steps: int = 0,
        guidance_scale: float = 0.0,
        sampler: Sampler | None = None,
        with_layout: bool = True,
    ) -> AlignedGeneration:
        """Generate an image for `prompt` until the scorer's audit passes: each try is audited
        (CLIP4DM word flags, calibrated P(aligned)); a failed try is redrawn with the next seed,
        more guidance and the flagged words emphasised, up to `max_tries`.

        Args:
            prompt: the prompt.
            max_tries: 1..8 (0: the server's default, 4).
            min_score: a try passes when no word is flagged and P(aligned) is above this,
                0..1 (0: the server's default, 0.5).
            word_threshold: the scorer's flag threshold (0: the scorer's default).
            guidance_step: guidance added per retry (0: the server's default, 1.0).
            emphasis: repeat the flagged words in the retries' prompts.
            seed: try i draws with seed + i.
            steps, guidance_scale, sampler, with_layout: as in `generate` (the first try's
                guidance).
        Returns:
            The best image with its layout, and every try's seed, guidance, score and flags.
        Raises:
            InvalidArgument: a bad field; Unavailable / FailedPrecondition: the generator
                cannot reach the scorer, or the scorer has no model.
        """
        if sampler is not None and sampler not in SAMPLERS:
            raise InvalidArgument("sampler", f"{sampler!r} is not one of {', '.join(SAMPLERS)}")
        request = generator_pb2.GenerateAlignedRequest(
            prompt=prompt,
            seed=seed,
            steps=steps,
            guidance_scale=guidance_scale,
            sampler=SAMPLERS[sampler] if sampler else generator_pb2.SAMPLER_UNSPECIFIED,
            with_layout=with_layout,
            policy=generator_pb2.AlignmentPolicy(
                max_tries=max_tries,
                min_score=min_score,
                word_threshold=word_threshold,
                guidance_step=guidance_step,
                no_emphasis=not emphasis,
            ),
        )
        return aligned_from_proto(self._call("GenerateAligned", request))

    def customize(
        self,
        concept: str,
        references: Sequence[ImageInput],
        *,
        class_word: str = "",
        steps: int = 0,
    ) -> Job:
        """Start teaching the generator a concept from reference images.

        Args:
            concept: the new concept's name (one lowercase word, used in prompts).
            references: the reference images (bytes, PIL images or file paths).
            class_word: what kind of thing it is ("shape"); default "object".
            steps: fine-tuning steps (0: the server's default).
        Returns:
            The QUEUED job; follow it with `get_job` or `wait_job`.
        """
        request = generator_pb2.CustomizeRequest(
            concept=concept,
            references=[image_proto(r) for r in references],
            class_word=class_word,
            steps=steps,
        )
        return job_from_proto(self._call("Customize", request))

    def get_job(self, job_id: str) -> Job:
        return job_from_proto(self._call("GetJob", generator_pb2.GetJobRequest(id=job_id)))

    def wait_job(
        self,
        job_id: str,
        *,
        timeout: float = 600.0,
        poll: float = 0.5,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll a job until it ends. Returns: the final job. Raises: TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if on_update is not None:
                on_update(job)
            if job.done:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout}s")
            time.sleep(poll)

    def list_concepts(self, page_size: int = 100) -> list[Concept]:
        """Returns: every registered concept (all pages), by name."""
        found: list[Concept] = []
        token = ""
        while True:
            page = common_pb2.PageRequest(page_size=page_size, page_token=token)
            reply: generator_pb2.ListConceptsResponse = self._call(
                "ListConcepts", generator_pb2.ListConceptsRequest(page=page)
            )
            found.extend(concept_from_proto(c) for c in reply.concepts)
            token = reply.page.next_page_token
            if not token:
                return found

    def model(self) -> ModelId | None:
        """Returns: the model the generator serves, or None when it has none loaded."""
        info = self._call("GetInfo", common_pb2.GetInfoRequest())
        return model_id(info.models[0]) if info.ready and info.models else None

    def _call(self, method: str, request: object):
        try:
            return getattr(self._stub, method)(
                request, timeout=self._timeout, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
