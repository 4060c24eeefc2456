"""Generator wire <-> domain: requests and Kafka job specs into validated parameters (field
names as the caller wrote them), samples and jobs into protos."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from concord.config import GeneratorSettings
from concord.errors import InvalidArgument
from concord.media import decode_images, encode_png
from concord.models.diffusion.pipeline import Sample
from concord.models.diffusion.samplers import SAMPLERS
from concord.proto.v1 import common_pb2, events_pb2, generator_pb2, scorer_pb2
from concord.wire import ModelId, model_ref, sampler_value
from services.generator.aligned import AlignedResult, Try
from services.generator.concepts import ConceptInfo
from services.generator.jobs import JobRecord
from services.generator.params import (
    MAX_REFERENCES,
    AlignedParams,
    AlignmentPolicy,
    CustomizeParams,
    GenerateParams,
    ModelShape,
    Violations,
    aligned_params,
    alignment_policy,
    check_seed,
    customize_params,
    generate_params,
)

# Proto enum value -> sampler name, for every sampler in the model's registry ("": default).
SAMPLER_NAMES = {
    generator_pb2.SAMPLER_UNSPECIFIED: "",
    **{sampler_value(name): name for name in SAMPLERS},
}
JOB_STATES = {
    "QUEUED": generator_pb2.JOB_STATE_QUEUED,
    "RUNNING": generator_pb2.JOB_STATE_RUNNING,
    "SUCCEEDED": generator_pb2.JOB_STATE_SUCCEEDED,
    "FAILED": generator_pb2.JOB_STATE_FAILED,
    "CANCELLED": generator_pb2.JOB_STATE_CANCELLED,
}


# ----------------------------------------------------------------------------- requests


def generate_request(
    request: generator_pb2.GenerateRequest, model: ModelShape, limits: GeneratorSettings
) -> GenerateParams:
    """Raises: InvalidArgument naming every bad field (`prompts[2]`, `concept.alpha`, ...)."""
    sampler = SAMPLER_NAMES.get(request.sampler)
    if sampler is None:
        known = " or ".join(name.upper() for name in SAMPLERS)
        raise InvalidArgument("sampler", f"unknown sampler {request.sampler}; use {known}")
    guidance = request.concept
    return generate_params(
        prompts=list(request.prompts),
        seed=request.seed,
        steps=request.steps,
        guidance_scale=request.guidance_scale,
        sampler=sampler,
        width=request.width,
        height=request.height,
        with_layout=request.with_layout,
        preview_every=request.preview_every,
        concept=guidance.concept.strip(),
        unwanted=list(guidance.unwanted),
        alpha=guidance.alpha,
        directions=guidance.directions,
        model=model,
        limits=limits,
    )


def generation_spec(
    spec: events_pb2.GenerationSpec, model: ModelShape, limits: GeneratorSettings
) -> GenerateParams:
    """A Kafka generation job; field names are prefixed `generate.`. Raises: InvalidArgument."""
    return generate_params(
        prompts=list(spec.prompts),
        seed=spec.seed,
        steps=spec.steps,
        guidance_scale=spec.guidance_scale,
        sampler="",
        width=0,
        height=0,
        with_layout=spec.with_layout,
        preview_every=0,
        concept=spec.concept.strip(),
        unwanted=(),
        alpha=0.0,
        directions=0,
        model=model,
        limits=limits,
        prefix="generate.",
    )


def _policy(policy: generator_pb2.AlignmentPolicy, bad: Violations, field: str) -> AlignmentPolicy:
    return alignment_policy(
        max_tries=policy.max_tries,
        min_score=policy.min_score,
        word_threshold=policy.word_threshold,
        guidance_step=policy.guidance_step,
        no_emphasis=policy.no_emphasis,
        bad=bad,
        field=field,
    )


def aligned_request(
    request: generator_pb2.GenerateAlignedRequest, limits: GeneratorSettings
) -> AlignedParams:
    """Raises: InvalidArgument naming every bad field (`prompt`, `policy.max_tries`, ...)."""
    bad = Violations()
    sampler = SAMPLER_NAMES.get(request.sampler)
    if sampler is None:
        bad.add("sampler", f"unknown sampler {request.sampler}")
    policy = _policy(request.policy, bad, "policy.")
    return aligned_params(
        prompt=request.prompt,
        seed=request.seed,
        steps=request.steps,
        guidance_scale=request.guidance_scale,
        sampler=sampler or "",
        with_layout=request.with_layout,
        policy=policy,
        limits=limits,
        bad=bad,
    )


def aligned_spec(spec: events_pb2.GenerationSpec, base: GenerateParams) -> list[AlignedParams]:
    """A Kafka generation job with `aligned` set: one aligned run per prompt, prompt i's tries
    drawn with seeds seed + i * max_tries + k. Raises: InvalidArgument (`generate.aligned.*`)."""
    bad = Violations("generate.")
    policy = _policy(spec.aligned, bad, "aligned.")
    if spec.concept:
        bad.add("concept", "aligned generation does not take a concept yet")
    check_seed(base.seed, len(base.prompts) * policy.max_tries, bad)
    bad.raise_any()
    return [
        AlignedParams(
            GenerateParams(
                prompts=(prompt,),
                seed=base.seed + i * policy.max_tries,
                steps=base.steps,
                guidance_scale=base.guidance_scale,
                sampler=base.sampler,
                with_layout=base.with_layout,
                preview_every=0,
            ),
            policy,
        )
        for i, prompt in enumerate(base.prompts)
    ]


def customize_request(
    request: generator_pb2.CustomizeRequest | events_pb2.CustomizationSpec, prefix: str = ""
) -> CustomizeParams:
    """Validate a customization (the RPC or a Kafka job's spec with `prefix` "customize.").

    Raises:
        InvalidArgument: naming every bad field, `references[i].data` for a bad image.
    """
    name = request.concept.strip()
    if len(request.references) > MAX_REFERENCES:  # counted before a single image is decoded
        raise InvalidArgument(
            f"{prefix}references",
            f"has {len(request.references)} images; the limit is {MAX_REFERENCES}",
        )
    try:
        references = decode_images(request.references, f"{prefix}references")
    except InvalidArgument as bad_images:
        try:  # report the other fields' problems in the same answer
            customize_params(
                concept=name,
                class_word=request.class_word,
                steps=request.steps,
                references=[None],
                prefix=prefix,
            )
        except InvalidArgument as bad_fields:
            raise InvalidArgument.from_violations(
                [*bad_fields.violations, *bad_images.violations]
            ) from None
        raise
    return customize_params(
        concept=name,
        class_word=request.class_word,
        steps=request.steps,
        references=references,
        prefix=prefix,
    )


# ----------------------------------------------------------------------------- results


def layout_tensor(layout: np.ndarray) -> common_pb2.Tensor:
    """Returns: the (H, W) class map as a uint8 Tensor."""
    data = np.ascontiguousarray(layout, dtype=np.uint8)
    return common_pb2.Tensor(
        dtype=common_pb2.DTYPE_UINT8, shape=list(data.shape), data=data.tobytes()
    )


def png_image(pixels: np.ndarray) -> common_pb2.Image:
    return common_pb2.Image(data=encode_png(pixels), media_type="image/png")


def progress_event(
    step: int, total: int, prompt_index: int = 0, preview: np.ndarray | None = None
) -> generator_pb2.GenerateEvent:
    progress = generator_pb2.Progress(prompt_index=prompt_index, step=step, total_steps=total)
    if preview is not None:
        progress.preview.CopyFrom(png_image(preview))
    return generator_pb2.GenerateEvent(progress=progress)


def progress_events(
    step: int, total: int, previews: np.ndarray | None
) -> list[generator_pb2.GenerateEvent]:
    """One Progress per step for the whole batch; on preview steps one per prompt instead,
    each carrying that prompt's current x0 estimate as a PNG."""
    if previews is None:
        return [progress_event(step, total)]
    return [progress_event(step, total, i, p) for i, p in enumerate(previews)]


def result_event(
    index: int,
    sample: Sample,
    model: ModelId,
    class_names: Sequence[str],
    with_layout: bool,
) -> generator_pb2.GenerateEvent:
    result = generator_pb2.GeneratedImage(
        prompt_index=index, image=png_image(sample.image), seed=sample.seed, model=model_ref(model)
    )
    if with_layout and sample.layout is not None:
        result.layout.CopyFrom(
            generator_pb2.Layout(
                class_map=layout_tensor(sample.layout),
                legend={i: name for i, name in enumerate(class_names)},
            )
        )
    return generator_pb2.GenerateEvent(result=result)


def generated_event(
    job_id: str, index: int, prompt: str, sample: Sample, model: ModelId, with_layout: bool
) -> events_pb2.Generated:
    now = Timestamp()
    now.GetCurrentTime()
    event = events_pb2.Generated(
        job_id=job_id,
        prompt_index=index,
        prompt=prompt,
        image=png_image(sample.image),
        seed=sample.seed,
        model=model_ref(model),
        generated_at=now,
    )
    if with_layout and sample.layout is not None:
        event.layout.CopyFrom(layout_tensor(sample.layout))
    return event


def alignment_try(attempt: Try) -> generator_pb2.AlignmentTry:
    score = attempt.audit.score
    return generator_pb2.AlignmentTry(
        index=attempt.index,
        seed=attempt.seed,
        guidance_scale=attempt.guidance_scale,
        prompt=attempt.prompt,
        score=scorer_pb2.PairScore(
            clip_score=score.clip_score,
            ref_clip_score=score.ref_clip_score or 0.0,
            fine_grained_score=score.fine_grained_score,
            f_clip_score=score.f_clip_score,
            aligned_probability=score.aligned_probability,
        ),
        flagged=[
            scorer_pb2.WordAlignment(
                word=w.word,
                span=common_pb2.Span(start=w.span[0], end=w.span[1]),
                attribution=w.attribution,
                similarity=w.similarity,
                misaligned=w.misaligned,
                best_patch=w.best_patch,
            )
            for w in attempt.audit.flagged
        ],
        passed=attempt.passed,
    )


def aligned_response(
    result: AlignedResult, with_layout: bool
) -> generator_pb2.GenerateAlignedResponse:
    best = result.tries[result.best]
    image = result_event(0, best.sample, result.model, result.class_names, with_layout).result
    return generator_pb2.GenerateAlignedResponse(
        best=image,
        best_try=result.best,
        passed=result.passed,
        tries=[alignment_try(t) for t in result.tries],
        min_score=result.min_score,
        scorer_model=model_ref(best.audit.model),
    )


def aligned_event(
    job_id: str, index: int, prompt: str, result: AlignedResult, with_layout: bool
) -> events_pb2.Generated:
    """The Generated event of an aligned job's prompt: the best try's image, every try."""
    event = generated_event(
        job_id, index, prompt, result.tries[result.best].sample, result.model, with_layout
    )
    event.tries.extend(alignment_try(t) for t in result.tries)
    event.aligned_passed = result.passed
    return event


def job_proto(record: JobRecord) -> generator_pb2.Job:
    return generator_pb2.Job(
        id=record.id,
        state=JOB_STATES[record.state],
        message=record.message,
        progress=record.progress,
        concept=record.concept,
    )


def concept_proto(info: ConceptInfo) -> generator_pb2.Concept:
    return generator_pb2.Concept(
        name=info.name,
        class_word=info.class_word,
        model=model_ref(info.model),
        reference_count=info.reference_count,
    )
