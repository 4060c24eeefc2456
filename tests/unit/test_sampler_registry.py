"""The generator's samplers: one registry (concord.models.diffusion.samplers) that the proto enum,
the SDK, the CLI and the service's request checks all agree with."""

from __future__ import annotations

from typing import get_args

import pytest

from concord.clients import generator as sdk
from concord.errors import InvalidArgument
from concord.models.diffusion.ddim import DDIMSampler
from concord.models.diffusion.ddpm import DDPMSampler
from concord.models.diffusion.samplers import DEFAULT_SAMPLER, SAMPLERS, get_sampler
from concord.proto.v1 import generator_pb2
from services.generator.convert import SAMPLER_NAMES


def test_proto_enum_and_registry_name_the_same_samplers() -> None:
    enum_names = {
        key.removeprefix("SAMPLER_").lower()
        for key, value in generator_pb2.Sampler.items()
        if value != generator_pb2.SAMPLER_UNSPECIFIED
    }
    assert enum_names == set(SAMPLERS)
    assert set(sdk.SAMPLERS) == set(SAMPLERS)
    assert set(get_args(sdk.Sampler)) == set(SAMPLERS)
    assert DEFAULT_SAMPLER in SAMPLERS


def test_wire_mapping_round_trips_every_registered_sampler() -> None:
    for name in SAMPLERS:
        value = sdk.sampler_value(name)
        assert sdk.SAMPLERS[name] == value
        assert SAMPLER_NAMES[value] == name
    assert SAMPLER_NAMES[generator_pb2.SAMPLER_UNSPECIFIED] == ""
    assert (sdk.SAMPLERS["ddim"], sdk.SAMPLERS["ddpm"]) == (
        generator_pb2.SAMPLER_DDIM,
        generator_pb2.SAMPLER_DDPM,
    )


def test_get_sampler_builds_the_registered_class() -> None:
    assert isinstance(get_sampler("ddpm"), DDPMSampler)
    ddim = get_sampler("ddim", eta=0.5)
    assert isinstance(ddim, DDIMSampler) and ddim.eta == 0.5
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        get_sampler("euler")


def test_sdk_refuses_an_unregistered_sampler_by_field() -> None:
    with pytest.raises(InvalidArgument) as info:
        sdk.generate_request(["a red square"], sampler="euler")  # type: ignore[arg-type]
    assert "sampler" in str(info.value)
