"""The serving core over real sockets: health, reflection, auth, errors, deadlines,
message limits, graceful drain, metrics and the dynamic batcher behind a real RPC.

The servicer here is a test double for a model (text -> [len(text)]), named as such; the
server, interceptors, batcher and client stack are the real ones every service uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.request
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from concord.config import Settings, load_settings
from concord.errors import FailedPrecondition, InvalidArgument
from concord.proto.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc
from concord.serving import DynamicBatcher, ServiceServer
from concord.serving.definitions import define, service_info
from concord.serving.errors import field_violations
from concord.serving.metrics import serve_metrics


class LengthEncoderDouble(encoder_pb2_grpc.EncoderServiceServicer):
    """Test double: 'embeds' a text as its length, through the real dynamic batcher."""

    def __init__(self, batcher_kwargs: dict[str, float]) -> None:
        self.started = asyncio.Event()
        self.batcher: DynamicBatcher[str, float] = DynamicBatcher(
            self._model, name="length-double", **batcher_kwargs
        )

    @staticmethod
    def _model(texts: list[str]) -> list[float]:
        return [float(len(t)) for t in texts]

    async def EncodeTexts(self, request, context):
        for i, text in enumerate(request.texts):
            if not text.strip():
                raise InvalidArgument(f"texts[{i}]", "is empty")
            if text == "precondition":
                raise FailedPrecondition("no model is loaded")
            if text.startswith("echo:"):  # an error that quotes the caller's input back
                raise InvalidArgument(f"texts[{i}]", f"unknown value {text!r}")
            if text == "boom":
                raise RuntimeError("secret internal detail")
            if text.startswith("slow:"):
                self.started.set()
                await asyncio.sleep(float(text[5:]))
        values = await self.batcher.submit_many(list(request.texts))
        return encoder_pb2.EncodeResponse(
            encodings=[
                encoder_pb2.Encoding(embedding=common_pb2.Embedding(values=[v])) for v in values
            ],
            dim=1,
        )

    async def EncodeStream(
        self, request_iterator, context
    ) -> AsyncIterator[encoder_pb2.EncodeStreamResponse]:
        async for item in request_iterator:
            if not item.item.text:
                raise InvalidArgument("item.text", f"is empty (id {item.id})")
            value = await self.batcher.submit(item.item.text)
            yield encoder_pb2.EncodeStreamResponse(
                id=item.id,
                encoding=encoder_pb2.Encoding(embedding=common_pb2.Embedding(values=[value])),
            )

    async def GetInfo(self, request, context):
        return service_info("encoder")


async def _serve(
    settings: Settings, **batcher_kwargs: float
) -> tuple[ServiceServer, LengthEncoderDouble]:
    servicer = LengthEncoderDouble(batcher_kwargs or {"max_batch_size": 8, "max_delay_ms": 20})
    definition = define("encoder", servicer, encoder_pb2_grpc)

    async def start_batcher() -> None:
        servicer.batcher.start()

    definition.on_start.append(start_batcher)
    definition.on_stop.append(servicer.batcher.stop)
    server = ServiceServer(definition, settings, port=0)
    await server.start()
    return server, servicer


@pytest.fixture
async def served() -> AsyncIterator[tuple[ServiceServer, LengthEncoderDouble, grpc.aio.Channel]]:
    server, servicer = await _serve(load_settings())
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield server, servicer, channel
    await server.stop()


def _texts(*texts: str) -> encoder_pb2.EncodeTextsRequest:
    return encoder_pb2.EncodeTextsRequest(texts=list(texts))


async def test_health_and_reflection(served) -> None:
    _server, _, channel = served
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "concord.v1.EncoderService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    names = {
        s.name
        async for r in stub.ServerReflectionInfo(iter([request]))
        for s in r.list_services_response.service
    }
    assert names == {
        "concord.v1.EncoderService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


async def test_ok_call_and_unimplemented_rpc(served) -> None:
    _, _, channel = served
    stub = encoder_pb2_grpc.EncoderServiceStub(channel)
    reply = await stub.EncodeTexts(_texts("abc", "hello"))
    assert [e.embedding.values[0] for e in reply.encodings] == [3.0, 5.0]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.EncodeImages(encoder_pb2.EncodeImagesRequest())
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_error_classes_map_to_status_and_server_keeps_serving(served) -> None:
    _, _, channel = served
    stub = encoder_pb2_grpc.EncoderServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.EncodeTexts(_texts("fine", "  "))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(bad.value) == {"texts[1]": "is empty"}
    with pytest.raises(grpc.aio.AioRpcError) as precondition:
        await stub.EncodeTexts(_texts("precondition"))
    assert precondition.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as internal:
        await stub.EncodeTexts(_texts("boom"))
    assert internal.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in internal.value.details() and "Traceback" not in internal.value.details()
    assert "incident" in internal.value.details()
    assert (await stub.EncodeTexts(_texts("still here"))).encodings[0].embedding.values[0] == 10.0


async def test_streaming_errors_are_mapped_too(served) -> None:
    _, _, channel = served
    stub = encoder_pb2_grpc.EncoderServiceStub(channel)
    items = [
        encoder_pb2.EncodeStreamRequest(id="a", item=common_pb2.Item(text="xy")),
        encoder_pb2.EncodeStreamRequest(id="b", item=common_pb2.Item(text="")),
    ]
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for reply in stub.EncodeStream(iter(items)):
            received.append((reply.id, reply.encoding.embedding.values[0]))
    assert received == [("a", 2.0)]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "item.text" in field_violations(caught.value)


async def test_client_deadline_is_honoured(served) -> None:
    _, _, channel = served
    stub = encoder_pb2_grpc.EncoderServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.EncodeTexts(_texts("slow:5"), timeout=0.2)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_default_deadline_applies_when_caller_sets_none() -> None:
    settings = load_settings(serving={"default_deadline_seconds": 0.2})
    server, _ = await _serve(settings)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = encoder_pb2_grpc.EncoderServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.EncodeTexts(_texts("slow:5"))
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        await server.stop()


async def test_bearer_token_auth() -> None:
    server, _ = await _serve(load_settings(serving={"auth_token": "t0ken"}))
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = encoder_pb2_grpc.EncoderServiceStub(channel)
            for metadata in ((), (("authorization", "Bearer wrong"),)):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.EncodeTexts(_texts("a"), metadata=metadata)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            reply = await stub.EncodeTexts(
                _texts("ab"), metadata=(("authorization", "Bearer t0ken"),)
            )
            assert reply.encodings[0].embedding.values[0] == 2.0
            # Probes must work without credentials.
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest()
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop()


async def test_max_message_size_is_enforced() -> None:
    server, _ = await _serve(load_settings(serving={"max_message_bytes": 4096}))
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = encoder_pb2_grpc.EncoderServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.EncodeTexts(_texts("x" * 10_000))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (await stub.EncodeTexts(_texts("small"))).encodings[0].embedding.values[0] == 5.0
    finally:
        await server.stop()


async def test_shutdown_drains_in_flight_calls() -> None:
    server, servicer = await _serve(load_settings(serving={"grace_seconds": 10}))
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = encoder_pb2_grpc.EncoderServiceStub(channel)
        in_flight = asyncio.ensure_future(stub.EncodeTexts(_texts("slow:0.5")))
        await asyncio.wait_for(servicer.started.wait(), 5)
        await server.stop()
        reply = await in_flight
        assert reply.encodings[0].embedding.values[0] == len("slow:0.5")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.EncodeTexts(_texts("late"), timeout=2)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_batcher_coalesces_concurrent_calls(served) -> None:
    _, servicer, channel = served
    stub = encoder_pb2_grpc.EncoderServiceStub(channel)
    replies = await asyncio.gather(*(stub.EncodeTexts(_texts("z" * n)) for n in range(1, 25)))
    assert [r.encodings[0].embedding.values[0] for r in replies] == [float(n) for n in range(1, 25)]
    sizes = servicer.batcher.batch_sizes
    assert sum(sizes) == 24
    assert max(sizes) > 1, f"no coalescing happened: {sizes}"
    assert max(sizes) <= servicer.batcher.max_batch_size


async def test_overload_sheds_with_resource_exhausted() -> None:
    server, servicer = await _serve(load_settings(), max_batch_size=1, max_delay_ms=0, max_queue=2)
    gate = asyncio.Event()

    async def blocked_model(texts: list[str]) -> list[float]:
        await gate.wait()
        return [float(len(t)) for t in texts]

    servicer.batcher._fn = blocked_model  # hold the model so the queue fills up
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = encoder_pb2_grpc.EncoderServiceStub(channel)
            calls = [asyncio.ensure_future(stub.EncodeTexts(_texts("q" * n))) for n in range(1, 9)]
            _done, _ = await asyncio.wait(calls, timeout=10, return_when=asyncio.FIRST_EXCEPTION)
            gate.set()
            results = await asyncio.gather(*calls, return_exceptions=True)
        shed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        served_ok = [r for r in results if not isinstance(r, BaseException)]
        assert shed and all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in shed)
        assert served_ok, "accepted calls must still be answered once the model frees up"
        assert len(shed) + len(served_ok) == 8
    finally:
        await server.stop()


async def test_metrics_endpoint_counts_calls(served, unused_tcp_port: int) -> None:
    _, _, channel = served
    http = serve_metrics(unused_tcp_port)
    try:
        stub = encoder_pb2_grpc.EncoderServiceStub(channel)
        await stub.EncodeTexts(_texts("count me"))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.EncodeTexts(_texts(""))
        body = await asyncio.to_thread(
            lambda: (
                urllib.request.urlopen(f"http://127.0.0.1:{unused_tcp_port}/metrics")
                .read()
                .decode()
            )
        )
    finally:
        http.shutdown()  # type: ignore[union-attr]
    assert 'concord_grpc_requests_total{code="OK",method="EncodeTexts",service="encoder"}' in body
    assert 'code="INVALID_ARGUMENT",method="EncodeTexts"' in body
    assert 'concord_batch_size_count{batcher="length-double"}' in body
    assert "concord_grpc_latency_seconds_bucket" in body


# ------------------------------------------------------- hostile bodies and headers (issue 18)

GARBAGE = b"\xff\xff\xff\xff\x0f\x12"  # a varint that never ends: not any protobuf message


async def test_unparseable_body_is_invalid_argument_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, _ = await _serve(load_settings())
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            raw = channel.unary_unary("/concord.v1.EncoderService/EncodeTexts")
            with caplog.at_level("WARNING"), pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw(GARBAGE)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a valid EncodeTextsRequest" in (caught.value.details() or "")
            assert field_violations(caught.value) == {
                "request": "the body is not a valid EncodeTextsRequest"
            }
            assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
            # A streaming RPC's bad message is answered the same way.
            stream = channel.stream_stream("/concord.v1.EncoderService/EncodeStream")
            call = stream(iter([GARBAGE]))
            with pytest.raises(grpc.aio.AioRpcError) as streamed:
                async for _ in call:
                    pass
            assert streamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            # ...and the service keeps serving well-formed calls.
            stub = encoder_pb2_grpc.EncoderServiceStub(channel)
            reply = await stub.EncodeTexts(_texts("abc"))
            assert reply.encodings[0].embedding.values[0] == 3.0
    finally:
        await server.stop()


async def test_auth_is_checked_before_the_body_is_parsed() -> None:
    server, _ = await _serve(load_settings(serving={"auth_token": "t0ken"}))
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            raw = channel.unary_unary("/concord.v1.EncoderService/EncodeTexts")
            # Garbage from an unauthenticated caller: refused for auth, never parsed (parsing
            # would have answered INVALID_ARGUMENT).
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw(GARBAGE)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            stream = channel.unary_stream("/concord.v1.LinkerService/AlignGraphs")
            with pytest.raises(grpc.aio.AioRpcError) as unknown_method:
                async for _ in stream(GARBAGE):
                    pass
            assert unknown_method.value.code() == grpc.StatusCode.UNIMPLEMENTED
            with pytest.raises(grpc.aio.AioRpcError) as authed_garbage:
                await raw(GARBAGE, metadata=(("authorization", "Bearer t0ken"),))
            assert authed_garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await server.stop()


async def test_a_repeated_authorization_header_is_refused() -> None:
    server, _ = await _serve(load_settings(serving={"auth_token": "t0ken"}))
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = encoder_pb2_grpc.EncoderServiceStub(channel)
            twice = (("authorization", "Bearer t0ken"), ("authorization", "Bearer other"))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.EncodeTexts(_texts("a"), metadata=twice)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop()


async def test_error_text_is_bounded_so_the_code_survives() -> None:
    server, _ = await _serve(load_settings())
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = encoder_pb2_grpc.EncoderServiceStub(channel)
            # The error quotes a 1 MB input: uncut, the trailer would exceed grpc's 16 KiB and
            # the caller would see RESOURCE_EXHAUSTED "metadata size" instead.
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.EncodeTexts(_texts("echo:" + "q" * 1_000_000))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "more characters" in (caught.value.details() or "")
    finally:
        await server.stop()


def test_bounded_cuts_long_text_and_says_how_much() -> None:
    from concord.errors import FieldViolation
    from concord.serving.errors import MAX_MESSAGE_CHARS, MAX_VIOLATIONS, bounded, to_grpc_status

    assert bounded("short") == "short"
    cut = bounded("x" * 5000)
    assert len(cut) < MAX_MESSAGE_CHARS + 50 and cut.endswith("(3976 more characters)")
    many = [FieldViolation(f"ids[{i}]" + "y" * 10_000, "z" * 10_000) for i in range(200)]
    status = to_grpc_status(InvalidArgument.from_violations(many))
    assert len(status.details) <= MAX_MESSAGE_CHARS + 50
    size = sum(len(k) + len(v) for k, v in status.trailing_metadata)
    assert size < 16 * 1024, size
    assert MAX_VIOLATIONS < 200


def test_metrics_can_require_the_bearer_token(unused_tcp_port: int) -> None:
    import urllib.error

    http = serve_metrics(unused_tcp_port, token="t0ken")
    url = f"http://127.0.0.1:{unused_tcp_port}/metrics"
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(url, headers=headers))
            assert refused.value.code == 401
        ok = urllib.request.urlopen(
            urllib.request.Request(url, headers={"Authorization": "Bearer t0ken"})
        )
        assert "concord_grpc_requests_total" in ok.read().decode()
    finally:
        http.shutdown()  # type: ignore[union-attr]


async def test_secrets_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    """With DEBUG logging, a service with a token, callers with right and wrong tokens, bad
    bodies and a failing handler: the token appears in no log record (nor does the Qdrant
    key of the same settings when they are logged)."""
    secret, qdrant_key = "s3cr3t-token-value", "qdrant-k3y-value"
    settings = load_settings(
        serving={"auth_token": secret}, qdrant={"api_key": qdrant_key}, log_level="DEBUG"
    )
    with caplog.at_level("DEBUG"):
        logging.getLogger("concord").debug("settings: %s / %r", settings, settings)
        server, _ = await _serve(settings)
        try:
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = encoder_pb2_grpc.EncoderServiceStub(channel)
                right, wrong = f"Bearer {secret}", f"Bearer {secret}x"
                for metadata in ((("authorization", right),), (("authorization", wrong),)):
                    for texts in (["ok"], ["boom"], [""]):
                        with contextlib.suppress(grpc.aio.AioRpcError):
                            await stub.EncodeTexts(_texts(*texts), metadata=metadata)
                raw = channel.unary_unary("/concord.v1.EncoderService/EncodeTexts")
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await raw(GARBAGE, metadata=(("authorization", f"Bearer {secret}"),))
        finally:
            await server.stop()
    assert caplog.records, "nothing was logged: the check would prove nothing"
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    assert secret not in logged and qdrant_key not in logged
