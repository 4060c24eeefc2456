"""XBT's psi beside a new encoder (services.retrieval.upgrade): written and read back with the
old model it maps into; absent when the files are not there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from concord.models.xbt import CompatibleProjection
from concord.wire import ModelId
from services.retrieval.upgrade import PSI_CONFIG, load_psi, save_psi


@pytest.mark.parametrize("hidden", [0, 8])
def test_psi_round_trips_with_the_old_model_it_maps_into(tmp_path: Path, hidden: int) -> None:
    torch.manual_seed(0)
    psi = CompatibleProjection(6, 4, hidden)
    save_psi(tmp_path, psi, ModelId("concord-encoder", "3"))
    found = load_psi(tmp_path)
    assert found is not None
    loaded, old = found
    assert old == ModelId("concord-encoder", "3")
    x = torch.randn(5, 6)
    with torch.no_grad():
        assert torch.allclose(loaded(x), psi(x), atol=1e-6)


def test_no_psi_without_its_files(tmp_path: Path) -> None:
    assert load_psi(tmp_path) is None
    (tmp_path / PSI_CONFIG).write_text("{}")  # a config without weights is not a psi
    assert load_psi(tmp_path) is None
