"""The bias service over real sockets, on a bias package built from a tiny randomly initialised
encoder saved to tmp: verdicts in order with the package's name and version, calibrated
probabilities labelled by the threshold, linguistic cues whose spans point into the text,
visual regions inside the image, a rationale; the text-reliance probe; dynamic batching; every
bad input INVALID_ARGUMENT naming its field (a text that is not UTF-8 included) while the
service keeps serving; the workers on the embedded bus; the CLI; a service that stays up
(FAILED_PRECONDITION) without a model; and the default model resolved through the registry."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from concord.bus import Delivery, dlq_topic, topics
from concord.clients import Concord, Connection
from concord.config import Settings
from concord.errors import FailedPrecondition, InvalidArgument
from concord.proto.v1 import bias_pb2, bias_pb2_grpc, common_pb2, events_pb2
from concord.registry import Registry
from concord.serving.errors import field_violations
from services.bias import convert
from tests.fixtures.media import png
from tests.fixtures.models import bias_package, tiny_encoder
from tests.fixtures.serving import InProcessDeployment, free_ports
from tests.fixtures.waiting import wait_until

MAX_PAIRS, MAX_CHARS, MAX_COUNTERFACTUALS = 8, 120, 4
RED, BLUE = png((220, 30, 30)), png((30, 30, 220))
LOADED = "a reckless mob storms the red square"


def noise(seed: int = 0, size: int = 64) -> bytes:
    """A PNG of random pixels: occluding any region of it changes what the image tower sees."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def bias_settings(
    tmp: Path, model: str, *, threshold: float | None = None, **extra: object
) -> Settings:
    """Settings for the bias service serving `model` with small request limits (and, when
    given, a threshold of its own)."""
    (port,) = free_ports(1)
    bias: dict[str, object] = {
        "model": model,
        "max_pairs_per_request": MAX_PAIRS,
        "max_text_chars": MAX_CHARS,
        "max_counterfactuals": MAX_COUNTERFACTUALS,
    }
    if threshold is not None:
        bias["threshold"] = threshold
    return Settings(
        home=tmp / "home",
        bias=bias,
        serving={"ports": {"bias": port}, "metrics_port": 0},
        **extra,
    )


def loud_bias_package(directory: Path, encoder: Path) -> Path:
    """`bias_package` with its head scaled up, so that random weights give P(biased) far from
    0.5 and word occlusions that move it past the cue threshold."""
    bias_package(directory, encoder)
    weights = directory / "bias.pt"
    state = torch.load(weights, weights_only=True)
    state["head.weight"] = state["head.weight"] * 10
    torch.save(state, weights)
    return directory


def env_of(settings: Settings) -> dict[str, str]:
    """The settings a CLI process reads from the environment."""
    return {
        "CONCORD_HOME": str(settings.home),
        "CONCORD_SERVING__PORTS": json.dumps(settings.serving.ports),
    }


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bias")
    return loud_bias_package(root / "tiny-bias", tiny_encoder(tmp_path_factory))


@pytest.fixture(scope="module")
def served(
    package: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[InProcessDeployment, Settings]]:
    settings = bias_settings(
        tmp_path_factory.mktemp("bias-home"),
        str(package),
        batching={"max_batch_size": 16, "max_delay_ms": 50, "max_queue": 64},
    )
    server = InProcessDeployment(["bias"], settings)
    yield server, settings
    server.close()


@pytest.fixture(scope="module")
def sdk(served: tuple[InProcessDeployment, Settings]) -> Iterator[Concord]:
    with Concord(served[1]) as client:
        yield client


@pytest.fixture(scope="module")
def channel(served: tuple[InProcessDeployment, Settings]) -> Iterator[grpc.Channel]:
    with Connection(f"127.0.0.1:{served[1].serving.port_for('bias')}") as conn:
        yield conn.channel


def pair(image: bytes, text: str) -> bias_pb2.BiasPair:
    return bias_pb2.BiasPair(image=common_pb2.Image(data=image), text=text)


# ----------------------------------------------------------------------------- Detect


def test_detect_in_order_with_cues_and_rationale(sdk: Concord) -> None:
    texts = [LOADED, "a blue square", "a green circle"]
    out = sdk.detect_bias([(RED, texts[0]), (BLUE, texts[1]), (noise(), texts[2])])
    assert out.model.name == "tiny-bias" and out.model.version.startswith("local-")
    assert len(out.verdicts) == 3
    for text, v in zip(texts, out.verdicts, strict=True):
        assert 0.0 <= v.probability <= 1.0 and 0.0 <= v.inconsistency <= 1.0
        assert v.threshold == pytest.approx(0.5)
        assert v.biased == (v.probability >= v.threshold)
        assert v.rationale.startswith(v.label)
        for cue in v.linguistic:
            assert cue.span is not None and text[cue.span[0] : cue.span[1]] == cue.text
            assert cue.text and cue.text in v.rationale
        for cue in v.cues:
            if cue.kind == "visual":
                assert cue.region is not None
                x0, y0, x1, y1 = cue.region
                assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0
    assert any(v.linguistic for v in out.verdicts), out.verdicts
    assert any(c.kind == "visual" for c in out.verdicts[2].cues), out.verdicts[2]
    alone = sdk.detect_bias([(BLUE, texts[1])]).verdicts[0]
    assert alone.probability == pytest.approx(out.verdicts[1].probability, abs=1e-5)
    fast = sdk.detect_bias([(RED, texts[0])], labels_only=True).verdicts[0]
    assert fast.cues == () and fast.rationale == ""
    assert fast.probability == pytest.approx(out.verdicts[0].probability, abs=1e-5)
    assert fast.inconsistency == pytest.approx(out.verdicts[0].inconsistency, abs=1e-5)


def test_settings_threshold_overrides_the_package(package: Path, tmp_path: Path) -> None:
    strict = bias_settings(tmp_path, str(package), threshold=0.999)
    server = InProcessDeployment(["bias"], strict)
    try:
        with Concord(strict) as client:
            (v,) = client.detect_bias([(RED, LOADED)], labels_only=True).verdicts
        assert v.threshold == pytest.approx(0.999) and v.label == "neutral"
    finally:
        server.close()


def test_probe_text_reliance(sdk: Concord) -> None:
    counterfactuals = ["a crowd walks to the red square", "people near a red square"]
    out = sdk.probe_text_reliance(RED, LOADED, counterfactuals)
    assert out.model.name == "tiny-bias"
    assert 0.0 <= out.text_reliance <= 1.0
    assert len(out.counterfactuals) == 2 and all(v.cues == () for v in out.counterfactuals)
    assert out.original.rationale
    direct = sdk.detect_bias([(RED, LOADED), (RED, counterfactuals[0])], labels_only=True)
    assert out.original.probability == pytest.approx(direct.verdicts[0].probability, abs=1e-5)
    assert out.counterfactuals[0].probability == pytest.approx(
        direct.verdicts[1].probability, abs=1e-5
    )
    text_effect = np.mean(
        [abs(v.probability - out.original.probability) for v in out.counterfactuals]
    )
    assert out.text_effect == pytest.approx(text_effect, abs=1e-5)
    total = out.text_effect + out.image_effect
    assert out.text_reliance == pytest.approx(out.text_effect / total if total > 1e-6 else 0.0)


def test_concurrent_callers_coalesce_into_batches(
    served: tuple[InProcessDeployment, Settings], sdk: Concord
) -> None:
    batcher = served[0].servicer("bias").servable.pairs
    batcher.batch_sizes.clear()
    texts = [f"a red shape number {i}" for i in range(10)]
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda t: sdk.detect_bias([(RED, t)], labels_only=True), texts))
    assert sum(batcher.batch_sizes) == 10
    assert max(batcher.batch_sizes) > 1, batcher.batch_sizes
    solo = sdk.detect_bias([(RED, texts[4])], labels_only=True).verdicts[0]
    assert results[4].verdicts[0].probability == pytest.approx(solo.probability, abs=1e-5)


# ----------------------------------------------------------------------------- bad input


def detect_raw(channel: grpc.Channel, body: bytes) -> grpc.RpcError:
    """Send raw bytes as a Detect request (what a client with a broken encoder would send)."""
    call = channel.unary_unary(
        "/concord.v1.BiasService/Detect",
        request_serializer=None,
        response_deserializer=bias_pb2.DetectResponse.FromString,
    )
    with pytest.raises(grpc.RpcError) as caught:
        call(body, timeout=10)
    return caught.value  # type: ignore[return-value]


def test_bad_pairs_name_their_fields_and_the_service_keeps_serving(
    sdk: Concord, channel: grpc.Channel
) -> None:
    corrupt = png((1, 2, 3))[:40]
    with pytest.raises(InvalidArgument) as bad:
        sdk.detect_bias(
            [(RED, "fine"), (RED, "   "), (corrupt, "a red circle"), (BLUE, "x" * (MAX_CHARS + 1))]
        )
    fields = {v.field: v.description for v in bad.value.violations}
    assert set(fields) == {"pairs[1].text", "pairs[2].image.data", "pairs[3].text"}
    assert "limit" in fields["pairs[3].text"]
    stub = bias_pb2_grpc.BiasServiceStub(channel)
    with pytest.raises(grpc.RpcError) as empty:
        stub.Detect(bias_pb2.DetectRequest(), timeout=10)
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pairs" in field_violations(empty.value)
    with pytest.raises(grpc.RpcError) as too_many:
        stub.Detect(bias_pb2.DetectRequest(pairs=[pair(RED, "a")] * (MAX_PAIRS + 1)), timeout=10)
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limit" in field_violations(too_many.value)["pairs"]
    with pytest.raises(grpc.RpcError) as other_model:
        stub.Detect(
            bias_pb2.DetectRequest(pairs=[pair(RED, "a")], model=common_pb2.ModelRef(name="x")),
            timeout=10,
        )
    assert other_model.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert len(sdk.detect_bias([(RED, "still serving")]).verdicts) == 1


def test_text_that_is_not_utf8_is_named(sdk: Concord, channel: grpc.Channel) -> None:
    marker = "PLACEHOLDER"
    request = bias_pb2.DetectRequest(
        pairs=[pair(RED, "ok"), pair(BLUE, "fine"), pair(RED, marker), pair(BLUE, marker)]
    )
    body = request.SerializeToString().replace(marker.encode(), b"bad \xff text!")
    assert len(b"bad \xff text!") == len(marker)
    err = detect_raw(channel, body)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    found = field_violations(err)
    assert set(found) == {"pairs[2].text", "pairs[3].text"}
    assert "UTF-8" in found["pairs[2].text"]
    garbage = detect_raw(channel, b"\xff\xff\xff\xff")
    assert garbage.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request" in field_violations(garbage)
    assert len(sdk.detect_bias([(RED, "still serving")]).verdicts) == 1


def test_bad_probes_name_their_fields(sdk: Concord) -> None:
    with pytest.raises(InvalidArgument) as none:
        sdk.probe_text_reliance(RED, LOADED, [])
    assert [v.field for v in none.value.violations] == ["counterfactual_texts"]
    with pytest.raises(InvalidArgument) as bad:
        sdk.probe_text_reliance(png((1, 2, 3))[:40], "", ["ok", " ", "x" * (MAX_CHARS + 1)])
    assert {v.field for v in bad.value.violations} == {
        "pair.text",
        "pair.image.data",
        "counterfactual_texts[1]",
        "counterfactual_texts[2]",
    }
    with pytest.raises(InvalidArgument) as too_many:
        sdk.probe_text_reliance(RED, LOADED, ["a"] * (MAX_COUNTERFACTUALS + 1))
    assert "limit" in too_many.value.violations[0].description
    assert sdk.probe_text_reliance(RED, LOADED, ["a calm crowd"]).counterfactuals


def test_utf8_walk_names_nested_and_repeated_fields() -> None:
    request = bias_pb2.ProbeRequest(
        pair=pair(RED, "AAAA"), counterfactual_texts=["fine", "BBBB", "CCCC"]
    )
    body = request.SerializeToString()
    body = body.replace(b"AAAA", b"\xc3(ab").replace(b"CCCC", b"ab\xe2\x82")
    parsed = convert.request_parser(bias_pb2.ProbeRequest)(body)
    assert isinstance(parsed, convert.Unparsed)
    assert [v.field for v in parsed.error.violations] == ["pair.text", "counterfactual_texts[2]"]
    good = convert.request_parser(bias_pb2.ProbeRequest)(request.SerializeToString())
    assert convert.parsed(good) == request


def test_content_hash_is_stable_and_separates_image_from_text() -> None:
    assert convert.content_hash(b"ab", "c") == convert.content_hash(b"ab", "c")
    assert convert.content_hash(b"ab", "c") != convert.content_hash(b"a", "bc")


# ----------------------------------------------------------------------------- embedded bus


def test_workers_on_the_embedded_bus(served: tuple[InProcessDeployment, Settings]) -> None:
    """`concord up` runs on the in-process bus: the same workers, topics and DLQs as on Kafka
    (tests/integration/test_bias_kafka.py runs the real broker)."""
    bus = served[0].deployment.platform.bus
    verdicts: dict[str, bias_pb2.BiasVerdictEvent] = {}
    dead: list[Delivery] = []

    def on_verdict(message: bias_pb2.BiasVerdictEvent, _: Delivery) -> None:
        verdicts[message.subject_id] = message

    observers = [
        bus.subscribe(topics.BIAS_VERDICTS, "obs", on_verdict, bias_pb2.BiasVerdictEvent).start(),
        bus.subscribe_raw(dlq_topic(topics.GENERATED), "dlq", lambda _, d: dead.append(d)).start(),
    ]
    try:
        image = common_pb2.Image(data=RED, media_type="image/png")
        event = events_pb2.Generated(job_id="job-e", prompt_index=3, prompt=LOADED, image=image)
        bus.publish(topics.GENERATED, "job-e/3", event)
        bus.publish(topics.GENERATED, "job-e/4", events_pb2.Generated(prompt_index=4, image=image))
        request = bias_pb2.BiasRequestEvent(
            id="req-e", pair=bias_pb2.BiasPair(image=image, text="hi")
        )
        bus.publish(topics.BIAS_REQUESTS, "req-e", request)
        bus.flush()
        wait_until(
            lambda: {"job-e/3", "req-e"} <= set(verdicts) and bool(dead),
            "verdicts and a dead letter",
            timeout=30,
        )
        servable = served[0].servicer("bias").servable
        (direct,) = servable.detect_sync([convert.decode_pair(image, LOADED, "", MAX_CHARS)])
        assert verdicts["job-e/3"].verdict.probability == pytest.approx(direct.probability)
        assert verdicts["req-e"].source == bias_pb2.BiasVerdictEvent.SOURCE_REQUEST
        reasons = [d.headers["dlq.error"] for d in dead if d.key == b"job-e/4"]
        assert any(r.startswith("job_id: is empty") for r in reasons), reasons
    finally:
        for observer in observers:
            observer.stop()


# ----------------------------------------------------------------------------- info, CLI


def test_info_lists_package_and_encoder(
    served: tuple[InProcessDeployment, Settings], sdk: Concord
) -> None:
    with Connection(f"127.0.0.1:{served[1].serving.port_for('bias')}") as conn:
        info = conn.info("bias")
        assert conn.health() == "SERVING"
        assert conn.health("concord.v1.BiasService") == "SERVING"
    assert info.ready and [m.name for m in info.models] == ["tiny-bias", "tiny-encoder"]
    assert [m.name for m in sdk.bias.models()] == ["tiny-bias", "tiny-encoder"]


def test_cli_prints_label_cues_and_rationale(
    served: tuple[InProcessDeployment, Settings], sdk: Concord, tmp_path: Path
) -> None:
    from concord.cli import app

    image = tmp_path / "red.png"
    image.write_bytes(RED)
    (expected,) = sdk.detect_bias([(RED, LOADED)]).verdicts
    runner = CliRunner()
    env = env_of(served[1])
    result = runner.invoke(
        app, ["bias", str(image), LOADED, "--json", "-c", "a calm crowd"], env=env
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["model"]["name"] == "tiny-bias"
    assert out["label"] == expected.label
    assert out["probability"] == pytest.approx(expected.probability, abs=1e-5)
    assert [c["text"] for c in out["cues"]] == [c.text for c in expected.cues]
    assert 0.0 <= out["probe"]["text_reliance"] <= 1.0
    table = runner.invoke(app, ["bias", str(image), LOADED], env=env)
    assert table.exit_code == 0, table.output
    assert expected.label.upper() in table.output and "rationale:" in table.output
    assert f"{expected.probability:.3f}" in table.output
    for cue in expected.linguistic:  # the loaded words are marked in the text
        assert f"[{cue.text}]" in table.output
    failed = runner.invoke(app, ["bias", str(image), "  "], env=env)
    assert failed.exit_code == 1 and "INVALID_ARGUMENT" in failed.output


# ----------------------------------------------------------------------------- no model


def test_missing_or_incomplete_package_answers_failed_precondition(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    incomplete = bias_package(tmp_path / "no-weights", tiny_encoder(tmp_path_factory))
    (incomplete / "bias.pt").unlink()
    missing = tmp_path / "no-such-bias"
    for model, expected in ((incomplete, "bias.pt"), (missing, str(missing))):
        settings = bias_settings(tmp_path / model.name, str(model))
        server = InProcessDeployment(["bias"], settings)
        try:
            with Concord(settings) as client:
                with pytest.raises(FailedPrecondition) as caught:
                    client.detect_bias([(RED, "hello")])
                assert expected in caught.value.message
                with pytest.raises(FailedPrecondition):
                    client.probe_text_reliance(RED, "hello", ["bye"])
            with Connection(f"127.0.0.1:{settings.serving.port_for('bias')}") as conn:
                assert conn.health() == "SERVING"
                wait_until(
                    lambda: conn.health("concord.v1.BiasService") == "NOT_SERVING",
                    "readiness NOT_SERVING without a model",
                    timeout=10,
                )
                info = conn.info("bias")
                assert not info.ready and not info.models and expected in info.not_ready_reason
        finally:
            server.close()


def test_default_model_is_resolved_through_the_registry_alias(
    package: Path, tmp_path: Path
) -> None:
    """`concord up` before any bias package is registered: SERVING, and a clear precondition
    naming the model; once `concord-bias` is registered and aliased `production`, a restarted
    service serves it under its registered name and version."""
    settings = bias_settings(tmp_path, Settings().bias.model)
    server = InProcessDeployment(["bias"], settings)
    try:
        with Concord(settings) as client, pytest.raises(FailedPrecondition) as caught:
            client.detect_bias([(RED, "hello")])
        assert "concord-bias" in caught.value.message
    finally:
        server.close()
    registry = Registry.from_settings(settings)  # MLflow on sqlite under the service's home
    with registry.start_run("register-bias") as run:
        artifact_path = run.log_model_dir(package)
    version = registry.register_model("concord-bias", run.run_id, artifact_path)
    registry.set_alias("concord-bias", "production", version.version)
    server = InProcessDeployment(["bias"], settings)
    try:
        with Concord(settings) as client:
            out = client.detect_bias([(RED, LOADED)], labels_only=True)
            assert (out.model.name, out.model.version) == ("concord-bias", str(version.version))
            assert [m.name for m in client.bias.models()] == ["concord-bias", "tiny-encoder"]
    finally:
        server.close()
