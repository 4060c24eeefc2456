"""What a generation or customization asks for, validated: typed parameters built from plain
values (the gRPC request and the Kafka job spec both map onto them), every bad field named."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from concord.config import GeneratorSettings
from concord.errors import FieldViolation, InvalidArgument
from concord.models.diffusion.samplers import DEFAULT_SAMPLER, SAMPLERS
from concord.serving.requests import count_violations, text_violations, texts_violations

MAX_UNWANTED = 16  # DECOR: unwanted tokens per request
INT64_MAX = 2**63 - 1  # seeds are int64 on the wire; image i is drawn with seed + i
MAX_DIRECTIONS = 16  # DECOR: singular directions removed
# Customization (no settings of their own yet: constants the lead may move into config.py).
DEFAULT_CUSTOMIZE_STEPS = 100
MAX_CUSTOMIZE_STEPS = 2000
MAX_REFERENCES = 32
MAX_CLASS_WORD_CHARS = 40
DEFAULT_CLASS_WORD = "object"
# A concept name is one lowercase word: it is used as a token in prompts and in the
# registered model name `concord-concept-<name>`.
CONCEPT_NAME = re.compile(r"^[a-z][a-z0-9]{1,31}$")
CLASS_WORD = re.compile(r"^[a-z][a-z ]*[a-z]$|^[a-z]$")


@dataclass(frozen=True)
class GenerateParams:
    """One validated generation: every default already applied."""

    prompts: tuple[str, ...]
    seed: int
    steps: int
    guidance_scale: float
    sampler: str  # one of SAMPLERS
    with_layout: bool  # an image-only model returns no layout either way
    preview_every: int  # 0: no previews
    concept: str = ""  # a registered concept name, "" for none
    unwanted: tuple[str, ...] = ()  # DECOR: tokens projected away from the text embedding
    alpha: float = 0.0
    directions: int = 1


@dataclass(frozen=True)
class CustomizeParams:
    """One validated customization; `references` are decoded RGB images (PIL)."""

    concept: str
    class_word: str
    steps: int
    references: tuple[object, ...]


@dataclass(frozen=True)
class ModelShape:
    """What validation needs to know of the served model."""

    image_size: int
    layout: bool


class Violations:
    """Collects every bad field of one request before raising once."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.found: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.found.append(FieldViolation(self.prefix + field, description))

    def extend(self, found: Sequence[FieldViolation]) -> None:
        for v in found:
            self.add(v.field, v.description)

    def raise_any(self) -> None:
        if self.found:
            raise InvalidArgument.from_violations(self.found)


def check_prompts(prompts: Sequence[str], limits: GeneratorSettings, bad: Violations) -> None:
    bad.extend(count_violations(len(prompts), "prompts", limits.max_prompts_per_request, "prompts"))
    bad.extend(texts_violations(prompts, "prompts", limits.max_prompt_chars))


def check_seed(seed: int, prompts: int, bad: Violations) -> None:
    """Image i carries seed + i in its int64 result field: refuse a seed that would overflow
    it before any work (it used to fail as INTERNAL after the images were made)."""
    last = INT64_MAX - max(prompts - 1, 0)
    if seed > last:
        bad.add("seed", f"is {seed}; with {prompts} prompts it must be at most {last}")


def check_steps(steps: int, limits: GeneratorSettings, bad: Violations) -> int:
    """Returns: the steps to run (0 means settings.generator.default_steps)."""
    if steps == 0:
        return min(limits.default_steps, limits.max_steps)
    if not 1 <= steps <= limits.max_steps:
        bad.add("steps", f"is {steps}; must be between 1 and {limits.max_steps} (0: default)")
    return steps


def check_guidance(scale: float, limits: GeneratorSettings, bad: Violations) -> float:
    """Returns: the guidance scale (0 means settings.generator.default_guidance_scale)."""
    if not math.isfinite(scale) or scale < 0:
        bad.add("guidance_scale", f"is {scale}; must be a finite number >= 0 (0: default)")
    elif scale > 50:
        bad.add("guidance_scale", f"is {scale}; the limit is 50")
    return scale or limits.default_guidance_scale


def check_size(
    width: int, height: int, model: ModelShape, limits: GeneratorSettings, bad: Violations
) -> None:
    """Only the model's own size is served (0 = that size); say so instead of resizing."""
    for field, value in (("width", width), ("height", height)):
        if value == 0 or value == model.image_size:
            continue
        if value < 0 or value > limits.max_resolution:
            bad.add(field, f"is {value}; must be between 1 and {limits.max_resolution} (0: model)")
        else:
            bad.add(
                field,
                f"is {value}; this model generates {model.image_size}x{model.image_size} "
                "only (send 0 or that size)",
            )


def check_concept_guidance(
    unwanted: Sequence[str], alpha: float, directions: int, bad: Violations
) -> int:
    """DECOR's request parameters. Returns: the number of directions (0 means 1)."""
    if len(unwanted) > MAX_UNWANTED:
        bad.add("concept.unwanted", f"has {len(unwanted)} tokens; the limit is {MAX_UNWANTED}")
    for i, token in enumerate(unwanted):
        if not token.strip():
            bad.add(f"concept.unwanted[{i}]", "is empty")
    if not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        bad.add("concept.alpha", f"is {alpha}; must be between 0 and 1")
    if directions < 0 or directions > MAX_DIRECTIONS:
        bad.add("concept.directions", f"is {directions}; must be between 1 and {MAX_DIRECTIONS}")
    return directions or 1


def check_concept_name(name: str, field: str, bad: Violations) -> None:
    if not CONCEPT_NAME.match(name):
        bad.add(
            field,
            f"{name!r} is not a concept name: one lowercase word of 2-32 letters or digits, "
            "starting with a letter",
        )


def generate_params(
    *,
    prompts: Sequence[str],
    seed: int,
    steps: int,
    guidance_scale: float,
    sampler: str,
    width: int,
    height: int,
    with_layout: bool,
    preview_every: int,
    concept: str,
    unwanted: Sequence[str],
    alpha: float,
    directions: int,
    model: ModelShape,
    limits: GeneratorSettings,
    prefix: str = "",
) -> GenerateParams:
    """Validate a generation against the limits and the served model.

    Args:
        sampler: a name in the model's `SAMPLERS` or "" (default); anything else is refused.
        model: the served model's size and whether it makes layouts.
        limits: settings.generator.
        prefix: prepended to field names (e.g. "generate." for a Kafka job spec).
    Returns:
        The parameters with defaults applied.
    Raises:
        InvalidArgument: naming every bad field.
    """
    bad = Violations(prefix)
    check_prompts(prompts, limits, bad)
    check_seed(seed, len(prompts), bad)
    steps = check_steps(steps, limits, bad)
    scale = check_guidance(guidance_scale, limits, bad)
    check_size(width, height, model, limits, bad)
    sampler = sampler or DEFAULT_SAMPLER
    if sampler not in SAMPLERS:
        bad.add("sampler", f"{sampler!r} is not one of {', '.join(SAMPLERS)}")
    if preview_every < 0:
        bad.add("preview_every", f"is {preview_every}; must be >= 0 (0: no previews)")
    if concept:
        check_concept_name(concept, "concept.concept", bad)
    directions = check_concept_guidance(unwanted, alpha, directions, bad)
    bad.raise_any()
    return GenerateParams(
        prompts=tuple(prompts),
        seed=seed,
        steps=steps,
        guidance_scale=scale,
        sampler=sampler,
        with_layout=with_layout,
        preview_every=preview_every,
        concept=concept,
        unwanted=tuple(t.strip() for t in unwanted),
        alpha=alpha,
        directions=directions,
    )


def customize_params(
    *, concept: str, class_word: str, steps: int, references: Sequence[object], prefix: str = ""
) -> CustomizeParams:
    """Validate a customization whose reference images are already decoded.

    Raises:
        InvalidArgument: naming every bad field.
    """
    bad = Violations(prefix)
    check_concept_name(concept, "concept", bad)
    class_word = class_word.strip().lower() or DEFAULT_CLASS_WORD
    if len(class_word) > MAX_CLASS_WORD_CHARS or not CLASS_WORD.match(class_word):
        bad.add("class_word", f"{class_word!r} must be 1-{MAX_CLASS_WORD_CHARS} letters or spaces")
    if not references:
        bad.add("references", "is empty; send at least one reference image")
    elif len(references) > MAX_REFERENCES:
        bad.add("references", f"has {len(references)} images; the limit is {MAX_REFERENCES}")
    steps = steps or DEFAULT_CUSTOMIZE_STEPS
    if not 1 <= steps <= MAX_CUSTOMIZE_STEPS:
        bad.add("steps", f"is {steps}; must be between 1 and {MAX_CUSTOMIZE_STEPS} (0: default)")
    bad.raise_any()
    return CustomizeParams(concept, class_word, steps, tuple(references))


# Generate until aligned (GenerateAligned and aligned generation jobs).
DEFAULT_MAX_TRIES = 4
MAX_TRIES = 8
# A try passes above this calibrated P(aligned): the scorer's calibration is a logistic map
# fitted to aligned vs misaligned pairs, so 0.5 is its decision boundary.
DEFAULT_MIN_SCORE = 0.5
DEFAULT_GUIDANCE_STEP = 1.0
MAX_GUIDANCE = 50.0  # check_guidance's limit; retries never exceed it


@dataclass(frozen=True)
class AlignmentPolicy:
    """How an aligned generation retries, defaults applied."""

    max_tries: int = DEFAULT_MAX_TRIES
    min_score: float = DEFAULT_MIN_SCORE  # passed: no flagged word and P(aligned) > min_score
    word_threshold: float = 0.0  # the scorer's CLIP4DM flag threshold; 0 = its default
    guidance_step: float = DEFAULT_GUIDANCE_STEP  # guidance added per retry
    emphasis: bool = True  # retries repeat the flagged words in the prompt

    def guidance(self, first: float, index: int) -> float:
        """The guidance scale of try `index` (0-based), capped at MAX_GUIDANCE."""
        return min(first + index * self.guidance_step, MAX_GUIDANCE)


@dataclass(frozen=True)
class AlignedParams:
    """One validated aligned generation: `base` is the first try (one prompt)."""

    base: GenerateParams
    policy: AlignmentPolicy

    @property
    def prompt(self) -> str:
        return self.base.prompts[0]


def alignment_policy(
    *,
    max_tries: int,
    min_score: float,
    word_threshold: float,
    guidance_step: float,
    no_emphasis: bool,
    bad: Violations,
    field: str = "policy.",
) -> AlignmentPolicy:
    """Validate an AlignmentPolicy message's fields into `bad` (names prefixed `field`).

    Returns: the policy with defaults applied (0 = default everywhere).
    """
    if not 0 <= max_tries <= MAX_TRIES:
        bad.add(f"{field}max_tries", f"is {max_tries}; must be between 1 and {MAX_TRIES} (0: 4)")
    if not math.isfinite(min_score) or not 0.0 <= min_score <= 1.0:
        bad.add(f"{field}min_score", f"is {min_score}; must be between 0 and 1 (0: 0.5)")
    if not math.isfinite(word_threshold) or word_threshold < 0:
        bad.add(
            f"{field}word_threshold",
            f"is {word_threshold}; must be a finite number >= 0 (0: the scorer's default)",
        )
    if not math.isfinite(guidance_step) or not 0.0 <= guidance_step <= MAX_GUIDANCE:
        bad.add(
            f"{field}guidance_step",
            f"is {guidance_step}; must be between 0 and {MAX_GUIDANCE:g} (0: 1)",
        )
    return AlignmentPolicy(
        max_tries=max_tries or DEFAULT_MAX_TRIES,
        min_score=min_score or DEFAULT_MIN_SCORE,
        word_threshold=word_threshold,
        guidance_step=guidance_step or DEFAULT_GUIDANCE_STEP,
        emphasis=not no_emphasis,
    )


def aligned_params(
    *,
    prompt: str,
    seed: int,
    steps: int,
    guidance_scale: float,
    sampler: str,
    with_layout: bool,
    policy: AlignmentPolicy,
    limits: GeneratorSettings,
    bad: Violations,
) -> AlignedParams:
    """Validate one aligned generation of `prompt`; `policy` was validated into `bad` already.

    Raises:
        InvalidArgument: naming every bad field (`prompt`, `seed`, `policy.max_tries`, ...).
    """
    bad.extend(text_violations(prompt, "prompt", limits.max_prompt_chars))
    check_seed(seed, policy.max_tries, bad)  # try i draws with seed + i
    steps = check_steps(steps, limits, bad)
    scale = check_guidance(guidance_scale, limits, bad)
    sampler = sampler or DEFAULT_SAMPLER
    if sampler not in SAMPLERS:
        bad.add("sampler", f"{sampler!r} is not one of {', '.join(SAMPLERS)}")
    bad.raise_any()
    base = GenerateParams(
        prompts=(prompt,),
        seed=seed,
        steps=steps,
        guidance_scale=scale,
        sampler=sampler,
        with_layout=with_layout,
        preview_every=0,
    )
    return AlignedParams(base, policy)
