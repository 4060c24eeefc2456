"""Generator and concept directories round-trip through disk with the real MiniLM text tower."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from concord.checkpoints import (
    build_generator,
    is_generator_dir,
    load_concept,
    load_generator,
    save_concept,
    save_generator,
)
from concord.models.diffusion import ConceptWeights, GeneratorConfig


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The machine is shared: one intra-op thread is faster than two oversubscribed ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


MINI = GeneratorConfig(
    name="mini",
    image_size=16,
    patch=2,
    base_channels=16,
    channel_mult=(1, 2),
    attn_resolutions=(4,),
    heads=2,
    train_timesteps=50,
    max_text_tokens=8,
)


def test_generator_round_trip_generates_the_same_images(tmp_path: Path) -> None:
    pipe = build_generator(MINI, seed=1)
    with torch.no_grad():
        for p in pipe.unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    save_generator(pipe, tmp_path / "gen")
    assert is_generator_dir(tmp_path / "gen") and not is_generator_dir(tmp_path)
    loaded = load_generator(tmp_path / "gen")
    assert loaded.config == MINI
    a = pipe.generate(["a red circle above a blue square"], seed=3, steps=3, guidance_scale=3.0)
    b = loaded.generate(["a red circle above a blue square"], seed=3, steps=3, guidance_scale=3.0)
    assert (a[0].image == b[0].image).all() and (a[0].layout == b[0].layout).all()
    with pytest.raises(FileNotFoundError, match="not a generator directory"):
        load_generator(tmp_path)


def test_concept_round_trip(tmp_path: Path) -> None:
    state = {"a.to_k.down.weight": torch.randn(4, 8), "a.to_k.up.weight": torch.randn(8, 4)}
    concept = ConceptWeights("zorv", "shape", 4, state, 5)
    back = load_concept(save_concept(concept, tmp_path / "c"))
    assert (back.name, back.class_word, back.rank, back.reference_count) == ("zorv", "shape", 4, 5)
    assert back.state.keys() == state.keys()
    assert all(torch.equal(back.state[k], state[k]) for k in state)
    with pytest.raises(FileNotFoundError):
        load_concept(tmp_path)
