"""The fuzzed deployment (all six services on tiny models, one module)
and, when `CONCORD_FUZZ_REPORT` names a file (`make fuzz`), the tally written there."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from concord.bus import MemoryLog
from concord.config import Settings
from tests.fixtures.models import (
    bias_package,
    linker_package,
    scorer_package,
    tiny_encoder,
    tiny_generator,
)
from tests.fixtures.serving import InProcessDeployment
from tests.fuzz.harness import SERVICES, fuzz_settings, write_report


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[InProcessDeployment, Settings]]:
    encoder = tiny_encoder(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("fuzz")
    settings = fuzz_settings(
        tmp / "home",
        str(encoder),
        str(tiny_generator(tmp_path_factory)),
        str(scorer_package(tmp / "scorer", encoder)),
        str(linker_package(tmp / "linker", encoder)),
        str(bias_package(tmp / "bias", encoder)),
    )
    with pytest.MonkeyPatch.context() as patch:
        # The services' embedded bus, apart from other tests' events (customization jobs).
        patch.setattr("concord.bus.memory.EMBEDDED_LOG", MemoryLog())
        server = InProcessDeployment(list(SERVICES), settings)
        try:
            yield server, settings
        finally:
            server.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = os.environ.get("CONCORD_FUZZ_REPORT")
    if target:
        write_report(Path(target))
