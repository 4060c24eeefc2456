"""The sampler registry: sampler name -> the class that implements it (one algorithm per file).

The generator's request checks and wire mapping read `SAMPLERS`; a new sampler is a file with
a class that has `name` and `step`, a line here, and a value in the proto `Sampler` enum (a
test checks the enum and this registry agree)."""

from __future__ import annotations

from typing import Any

from concord.models.diffusion.ddim import DDIMSampler
from concord.models.diffusion.ddpm import DDPMSampler
from concord.models.diffusion.sampling import Sampler

SAMPLERS: dict[str, type[Sampler]] = {cls.name: cls for cls in (DDIMSampler, DDPMSampler)}
DEFAULT_SAMPLER = DDIMSampler.name


def get_sampler(name: str, **options: Any) -> Sampler:
    """A sampler by name: "ddpm" (ancestral) or "ddim" (eta = 0: deterministic image path).

    Args:
        name: a key of `SAMPLERS`.
        options: that sampler's constructor arguments (ddim: `eta`).

    Returns:
        A new sampler.
    """
    cls = SAMPLERS.get(name)
    if cls is None:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    return cls(**options)
