"""The peer comparison's parts that need no clip-server (benchmarks/peers): the random CLIP it
saves is one network on both sides, and the A/B rounds and report rows are assembled right."""

from __future__ import annotations

import io
import json
import sys

import pytest
import torch
import torch.nn.functional as F

from benchmarks.peers import ab, worker
from benchmarks.peers.model import OPENAI_MEAN, OPENAI_STD, reference_model, save_model
from concord.checkpoints import open_checkpoint
from concord.checkpoints.kinds import load_weights
from pipelines.evaluate.report import check_rows

TEXTS = ["a red circle left of a blue square", "A photo of a dog!", "x", "über café, 2 cats"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return save_model(tmp_path_factory.mktemp("peers") / "tiny", "tiny")


def test_saved_clip_is_one_network_for_concord_and_the_peer(saved) -> None:  # type: ignore[no-untyped-def]
    """Concord's public-CLIP loader reads the open_clip directory; the peer's OpenAI-layout file
    loads strictly into the network clip-server builds (open_clip's CLIP, plain GELU); both give
    the same pooled embeddings, and the tokenizers the same ids."""
    import open_clip  # type: ignore[import-untyped]

    checkpoint = open_checkpoint(saved.concord_dir)
    assert checkpoint.kind == "open_clip"
    assert checkpoint.image_size == saved.image_size
    ours = load_weights(checkpoint)
    state = torch.load(saved.peer_file, map_location="cpu", weights_only=True)
    # clip-server casts to fp16 and back on the CPU: that must not change the weights.
    for key, value in state.items():
        if value.is_floating_point():
            assert torch.equal(value, value.half().float()), key
    theirs = reference_model(saved.variant, state)

    tokens = checkpoint.tokenizer(TEXTS)
    peer_ids = open_clip.tokenize(TEXTS)  # OpenAI's SimpleTokenizer, as clip-server's
    for row, ids in enumerate(peer_ids):
        n = int(tokens.attention_mask[row].sum())
        assert tokens.input_ids[row, :n].tolist() == ids[:n].tolist()
        assert not ids[n:].any()

    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(3, 3, saved.image_size, saved.image_size, generator=generator)
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        image_ours = ours.encode_image(pixels).pooled
        image_theirs = F.normalize(theirs.encode_image((pixels - mean) / std), dim=-1)
        text_ours = ours.encode_text(tokens.input_ids, tokens.attention_mask).pooled
        text_theirs = F.normalize(theirs.encode_text(peer_ids), dim=-1)
    torch.testing.assert_close(image_ours, image_theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(text_ours, text_theirs, atol=1e-5, rtol=0)
    # Different inputs give different embeddings (the comparison above is not vacuous).
    assert (text_ours[0] - text_ours[1]).abs().max() > 1e-3


def test_save_model_reuses_what_is_there(saved) -> None:  # type: ignore[no-untyped-def]
    before = saved.peer_file.stat().st_mtime_ns
    again = save_model(saved.concord_dir.parent, "tiny")
    assert again == saved and saved.peer_file.stat().st_mtime_ns == before


FIGURES = [
    ab.Figure("images/s", "batch=32", "rate", 1.5),
    ab.Figure("latency", "batch=1 text", "latency", 1.0),
]


def fake_measure(calls: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    """Concord: 30 images/s, 10 ms; the peer: 20 images/s, 12 ms; load drifts up by round."""

    def measure(figure: ab.Figure, side: str) -> list[float]:
        calls.append((figure.key, side))
        drift = 1 + 0.1 * (len(calls) // 4)
        if figure.kind == "rate":
            return [(30.0 if side == ab.CONCORD else 20.0) / drift]
        base = 0.010 if side == ab.CONCORD else 0.012
        return [base * drift, base * drift * 1.01, base * drift * 3]

    return measure


def test_rounds_alternate_who_goes_first_and_pair_each_figure() -> None:
    calls: list[tuple[str, str]] = []
    results = ab.alternate(3, FIGURES, fake_measure(calls))
    assert results.order == [
        (ab.CONCORD, ab.PEER),
        (ab.PEER, ab.CONCORD),
        (ab.CONCORD, ab.PEER),
    ]
    # Each figure is measured on both sides back to back, in that round's order.
    assert calls[:4] == [
        ("images/s batch=32", ab.CONCORD),
        ("images/s batch=32", ab.PEER),
        ("latency batch=1 text", ab.CONCORD),
        ("latency batch=1 text", ab.PEER),
    ]
    assert calls[4:6] == [("images/s batch=32", ab.PEER), ("images/s batch=32", ab.CONCORD)]
    assert all(len(v) == 3 for s in results.samples.values() for v in s.values())


def test_summary_rows_and_verdict_from_fake_timings() -> None:
    summaries = ab.summarise(ab.alternate(4, FIGURES, fake_measure([])))
    rate, latency = summaries
    assert rate.concord > rate.peer
    # Within-round ratios cancel the drift only partly (the two sides of a round straddle
    # drift steps), but each stays near 30/20.
    assert all(1.3 < r < 1.7 for r in rate.ratios)
    assert latency.p99 is not None and latency.p99[0] > latency.concord
    assert 1.1 < latency.ratio < 1.3 and latency.met
    rows = check_rows(ab.rows(summaries))
    by_key = {(r.metric, r.split, r.method): r for r in rows}
    assert by_key[("images/s", "batch=32", ab.CONCORD)].baseline == ab.PEER
    assert by_key[("p50 ms", "batch=1 text", ab.CONCORD)].value == pytest.approx(latency.concord)
    text = ab.verdict(summaries)
    assert "latency batch=1 text" in text and "goal >= 1x: **met**" in text


def test_verdict_says_when_a_goal_is_missed() -> None:
    def even(figure: ab.Figure, side: str) -> list[float]:
        return [10.0] if figure.kind == "rate" else [0.01]

    summaries = ab.summarise(ab.alternate(2, FIGURES, even))
    assert not summaries[0].met and summaries[1].met
    assert "images/s batch=32: Concord advantage 1.00x" in ab.verdict(summaries)
    assert "**NOT met**" in ab.verdict(summaries)


def test_worker_protocol_on_a_fake_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, list[object]]] = []

    def encode(kind: str, items, want: bool):  # type: ignore[no-untyped-def]
        seen.append((kind, list(items)))
        return [[1.0, 0.0]] * len(items) if want else len(items)

    commands = [
        {"op": "latency", "kind": "texts", "n": 2},
        {"op": "rate", "kind": "images", "batch": 3, "seconds": 0.01},
        {"op": "embed", "kind": "texts", "n": 2},
        {"op": "quit"},
    ]
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(json.dumps(c) + "\n" for c in commands)))
    monkeypatch.setattr(sys, "stdout", stdout)
    worker.run(encode, {"images": [b"a", b"b"], "texts": ["t0", "t1", "t2"]})
    latency, rate, embed = (json.loads(line) for line in stdout.getvalue().splitlines())
    assert len(latency["seconds"]) == 2
    assert rate["calls"] >= 1 and rate["items_per_s"] > 0
    assert embed == {"embeddings": [[1.0, 0.0], [1.0, 0.0]]}
    # Batches cycle through the pool instead of resending one input.
    assert (
        "images",
        [b"a", b"b", b"a"],
    ) in seen and worker.batch_of(["a", "b"], 3, 1) == ["b", "a", "b"]
