"""The scorer service over real sockets, on a scorer package built from a tiny randomly
initialised encoder saved to tmp: scores in order with the package's name and version,
RefCLIPScore only with references, word spans and heat maps, thresholds, dynamic batching,
errors naming fields, and a service that stays up (FAILED_PRECONDITION) without a model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from typer.testing import CliRunner

from concord.clients import Concord, Connection
from concord.clients.scorer import ScorePair
from concord.config import Settings
from concord.errors import FailedPrecondition, InvalidArgument
from concord.proto.v1 import common_pb2, scorer_pb2, scorer_pb2_grpc
from concord.serving.errors import field_violations
from tests.fixtures.media import png
from tests.fixtures.models import scorer_package, tiny_config, tiny_encoder
from tests.fixtures.serving import (
    SCORER_MAX_CHARS,
    SCORER_MAX_PAIRS,
    InProcessDeployment,
    scorer_settings,
)


def env_of(settings: Settings) -> dict[str, str]:
    """The settings a CLI process reads from the environment."""
    return {
        "CONCORD_HOME": str(settings.home),
        "CONCORD_SERVING__PORTS": json.dumps(settings.serving.ports),
    }


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scorer")
    # The package's own epsilon is the service default (no scorer.threshold in the settings).
    return scorer_package(root / "tiny-scorer", tiny_encoder(tmp_path_factory), threshold=1e-4)


@pytest.fixture(scope="module")
def served(
    package: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[InProcessDeployment, Settings]]:
    settings = scorer_settings(
        tmp_path_factory.mktemp("scorer-home"),
        str(package),
        batching={"max_batch_size": 16, "max_delay_ms": 50, "max_queue": 64},
    )
    server = InProcessDeployment(["scorer"], settings)
    yield server, settings
    server.close()


@pytest.fixture(scope="module")
def sdk(served: tuple[InProcessDeployment, Settings]) -> Iterator[Concord]:
    with Concord(served[1]) as client:
        yield client


@pytest.fixture(scope="module")
def stub(
    served: tuple[InProcessDeployment, Settings],
) -> Iterator[scorer_pb2_grpc.ScorerServiceStub]:
    with Connection(f"127.0.0.1:{served[1].serving.port_for('scorer')}") as conn:
        yield scorer_pb2_grpc.ScorerServiceStub(conn.channel)


RED, BLUE = png((220, 30, 30)), png((30, 30, 220))


def test_scores_in_order_with_package_model(sdk: Concord) -> None:
    out = sdk.score([(RED, "a red circle"), (BLUE, "a blue square"), (RED, "a blue square")])
    assert out.model.name == "tiny-scorer" and out.model.version.startswith("local-")
    assert len(out.scores) == 3
    for s in out.scores:
        assert s.ref_clip_score is None  # no references given
        assert 0.0 <= s.clip_score <= 2.5
        assert 0.0 <= s.aligned_probability <= 1.0
        assert np.isfinite([s.fine_grained_score, s.f_clip_score]).all()
    alone = sdk.score([(BLUE, "a blue square")]).scores[0]
    assert alone.clip_score == pytest.approx(out.scores[1].clip_score, abs=1e-5)
    assert alone.f_clip_score == pytest.approx(out.scores[1].f_clip_score, abs=1e-4)
    # A random encoder's cosines may all clamp to 0; the word-patch similarities still differ.
    assert out.scores[0].fine_grained_score != pytest.approx(out.scores[2].fine_grained_score)


def test_references_give_ref_clip_score_only_where_given(sdk: Concord) -> None:
    out = sdk.score(
        [
            ScorePair(RED, "a red circle", ("a red circle on grey", "one red disc")),
            ScorePair(BLUE, "a blue square"),
        ]
    )
    with_refs, without = out.scores
    assert with_refs.ref_clip_score is not None and without.ref_clip_score is None
    # RefCLIPScore is a harmonic mean with the CLIPScore: never above twice the smaller part.
    assert 0.0 <= with_refs.ref_clip_score <= 2 * with_refs.clip_score + 1e-6


def test_explain_words_spans_and_heatmap(sdk: Concord) -> None:
    text = "a small red circle left of a blue square"
    out = sdk.explain(RED, text, include_heatmap=True)
    assert out.model.name == "tiny-scorer"
    assert [w.word for w in out.words] == [text[a:b] for a, b in (w.span for w in out.words)]
    assert {"red", "circle", "blue", "square"} <= {w.word for w in out.words}
    config = tiny_config()
    grid = config.image.image_size // config.image.patch_size
    assert out.heatmap is not None and out.heatmap.shape == (len(out.words), grid, grid)
    assert all(0 <= w.best_patch < grid * grid for w in out.words)
    assert all(w.misaligned == (w.attribution < -1e-4) for w in out.words)
    assert 0.0 <= out.score.aligned_probability <= 1.0
    assert sdk.explain(RED, text).heatmap is None  # only when asked
    lenient = sdk.explain(RED, text, threshold=1e9)  # no attribution is that negative
    assert not lenient.flagged
    assert [w.attribution for w in lenient.words] == pytest.approx(
        [w.attribution for w in out.words], abs=1e-6
    )


def test_concurrent_callers_coalesce_into_batches(
    served: tuple[InProcessDeployment, Settings], sdk: Concord
) -> None:
    batcher = served[0].servicer("scorer").servable.pairs
    batcher.batch_sizes.clear()
    texts = [f"a red shape number {i}" for i in range(10)]
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda t: sdk.score([(RED, t)]), texts))
    assert sum(batcher.batch_sizes) == 10
    assert max(batcher.batch_sizes) > 1, batcher.batch_sizes
    solo = sdk.score([(RED, texts[4])]).scores[0]
    assert results[4].scores[0].clip_score == pytest.approx(solo.clip_score, abs=1e-5)


def test_errors_name_fields_and_service_keeps_serving(
    sdk: Concord, stub: scorer_pb2_grpc.ScorerServiceStub
) -> None:
    corrupt = png((1, 2, 3))[:40]
    with pytest.raises(InvalidArgument) as bad:
        sdk.score(
            [
                (RED, "fine"),
                (RED, "   "),
                (corrupt, "a red circle"),
                ScorePair(BLUE, "x" * (SCORER_MAX_CHARS + 1), ("ok", "")),
            ]
        )
    fields = {v.field: v.description for v in bad.value.violations}
    assert set(fields) == {
        "pairs[1].text",
        "pairs[2].image.data",
        "pairs[3].text",
        "pairs[3].references[1]",
    }
    assert "limit" in fields["pairs[3].text"]
    with pytest.raises(grpc.RpcError) as empty:
        stub.Score(scorer_pb2.ScoreRequest(), timeout=10)
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pairs" in field_violations(empty.value)
    pair = scorer_pb2.ScorePair(image=common_pb2.Image(data=RED), text="a red circle")
    with pytest.raises(grpc.RpcError) as too_many:
        stub.Score(scorer_pb2.ScoreRequest(pairs=[pair] * (SCORER_MAX_PAIRS + 1)), timeout=10)
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limit" in field_violations(too_many.value)["pairs"]
    # References are counted before anything is decoded or encoded (default: 8 per pair).
    loaded = scorer_pb2.ScorePair(
        image=common_pb2.Image(data=b"not decoded"), text="a red circle", references=["r"] * 9
    )
    with pytest.raises(grpc.RpcError) as refs:
        stub.Score(scorer_pb2.ScoreRequest(pairs=[loaded]), timeout=10)
    assert refs.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(refs.value)) == {"pairs[0].references"}
    with pytest.raises(grpc.RpcError) as other_model:
        stub.Score(
            scorer_pb2.ScoreRequest(pairs=[pair], model=common_pb2.ModelRef(name="other")),
            timeout=10,
        )
    assert other_model.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(InvalidArgument) as no_text:
        sdk.explain(RED, "")
    assert [v.field for v in no_text.value.violations] == ["text"]
    with pytest.raises(InvalidArgument) as bad_image:
        sdk.explain(corrupt, "a red circle")
    assert [v.field for v in bad_image.value.violations] == ["image.data"]
    with pytest.raises(InvalidArgument) as negative:
        sdk.explain(RED, "a red circle", threshold=-1.0)
    assert [v.field for v in negative.value.violations] == ["threshold"]
    assert len(sdk.score([(RED, "still serving")]).scores) == 1


def test_info_lists_package_and_encoder(
    served: tuple[InProcessDeployment, Settings], sdk: Concord
) -> None:
    with Connection(f"127.0.0.1:{served[1].serving.port_for('scorer')}") as conn:
        info = conn.info("scorer")
        assert conn.health() == "SERVING"
    assert info.ready and [m.name for m in info.models] == ["tiny-scorer", "tiny-encoder"]
    assert [m.name for m in sdk.scorer.models()] == ["tiny-scorer", "tiny-encoder"]


def test_cli_prints_scores_and_words(
    served: tuple[InProcessDeployment, Settings], tmp_path: Path
) -> None:
    from concord.cli import app

    image = tmp_path / "red.png"
    image.write_bytes(RED)
    runner = CliRunner()
    env = env_of(served[1])
    result = runner.invoke(
        app, ["score", str(image), "a red circle", "-r", "a red disc", "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["model"]["name"] == "tiny-scorer"
    assert out["score"]["ref_clip_score"] is not None
    assert [w["word"] for w in out["words"]] == ["a", "red", "circle"]
    table = runner.invoke(app, ["score", str(image), "a red circle"], env=env)
    assert table.exit_code == 0 and "flagged words" in table.output
    failed = runner.invoke(app, ["score", str(image), "  "], env=env)
    assert failed.exit_code == 1 and "INVALID_ARGUMENT" in failed.output


def test_incomplete_package_answers_failed_precondition(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    package = scorer_package(tmp_path / "no-calibration", tiny_encoder(tmp_path_factory))
    manifest = json.loads((package / "scorer.json").read_text())
    del manifest["calibration"]
    (package / "scorer.json").write_text(json.dumps(manifest))
    missing = tmp_path / "no-such-scorer"
    for model, expected in ((package, "calibration"), (missing, str(missing))):
        settings = scorer_settings(tmp_path / model.name, str(model))
        server = InProcessDeployment(["scorer"], settings)
        try:
            with Concord(settings) as client:
                with pytest.raises(FailedPrecondition) as caught:
                    client.score([(RED, "hello")])
                assert expected in caught.value.message
                with pytest.raises(FailedPrecondition):
                    client.explain(RED, "hello")
            with Connection(f"127.0.0.1:{settings.serving.port_for('scorer')}") as conn:
                assert conn.health() == "SERVING"
                info = conn.info("scorer")
                assert not info.ready and not info.models
        finally:
            server.close()


def test_unregistered_default_model_still_serves(tmp_path: Path) -> None:
    """`concord up` before any scorer is registered: SERVING, and a clear precondition."""
    settings = scorer_settings(tmp_path, Settings().scorer.model)
    server = InProcessDeployment(["scorer"], settings)
    try:
        with Concord(settings) as client, pytest.raises(FailedPrecondition) as caught:
            client.score([(RED, "hello")])
        assert "concord-scorer" in caught.value.message
    finally:
        server.close()
