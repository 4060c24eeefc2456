"""TLS and mutual TLS on a real server and real clients, with certificates generated here (a
CA, a server certificate for 127.0.0.1, a client certificate, and one from another CA)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from concord.clients import Connection
from concord.config import Settings, load_settings
from concord.errors import FailedPrecondition
from concord.proto.v1 import encoder_pb2, encoder_pb2_grpc
from concord.serving import ServiceServer
from concord.transport import open_channel
from tests.unit.test_serving import _serve

Key = ec.EllipticCurvePrivateKey


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _cert(subject: str, key: Key, issuer: tuple[str, Key] | None, *, ca: bool = False) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: tuple[Path, Path]  # cert, key
    client: tuple[Path, Path]
    stranger: tuple[Path, Path]  # signed by another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")

    def write(name: str, data: bytes) -> Path:
        path = root / name
        path.write_bytes(data)
        return path

    ca_key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1()
    )
    ca = write("ca.pem", _cert("concord-ca", ca_key, None, ca=True))

    def pair(name: str, issuer: tuple[str, Key]) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        return write(f"{name}.pem", _cert(name, key, issuer)), write(f"{name}.key", _key_pem(key))

    return Pki(
        ca,
        pair("server", ("concord-ca", ca_key)),
        pair("client", ("concord-ca", ca_key)),
        pair("stranger", ("other-ca", other_key)),
    )


def _tls(cert: tuple[Path, Path], ca: Path | None, client_auth: bool = False) -> Settings:
    return load_settings(
        serving={
            "tls": {
                "cert_file": str(cert[0]),
                "key_file": str(cert[1]),
                "ca_file": str(ca) if ca else None,
                "client_auth": client_auth,
                "health_port_offset": 7,
            }
        }
    )


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[ServiceServer]:
    server, _ = await _serve(_tls(pki.server, pki.ca, client_auth=True))
    yield server
    await server.stop()


async def _encode(channel: grpc.aio.Channel) -> float:
    reply = await encoder_pb2_grpc.EncoderServiceStub(channel).EncodeTexts(
        encoder_pb2.EncodeTextsRequest(texts=["four"]), timeout=5
    )
    return reply.encodings[0].embedding.values[0]


async def test_mutual_tls_admits_only_clients_with_a_certificate_of_our_ca(
    tls_server: ServiceServer, pki: Pki
) -> None:
    address = f"127.0.0.1:{tls_server.port}"
    client = _tls(pki.client, pki.ca).serving
    async with open_channel(address, client, aio=True) as channel:
        assert await _encode(channel) == 4.0
    refused = {
        "plaintext": grpc.aio.insecure_channel(address),
        "no client certificate": grpc.aio.secure_channel(
            address, grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
        ),
        "a certificate of another CA": open_channel(
            address, _tls(pki.stranger, pki.ca).serving, aio=True
        ),
    }
    for why, channel in refused.items():
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _encode(channel)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, why


async def test_a_client_that_does_not_trust_the_server_refuses_it(
    tls_server: ServiceServer, pki: Pki
) -> None:
    # The client's CA file is the stranger's certificate: the server's chain does not verify.
    untrusting = _tls(pki.client, pki.stranger[0]).serving
    async with open_channel(f"127.0.0.1:{tls_server.port}", untrusting, aio=True) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _encode(channel)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_health_alone_is_served_in_plaintext_for_probes(tls_server: ServiceServer) -> None:
    assert tls_server.health_port == tls_server.port + 7
    async with grpc.aio.insecure_channel(f"127.0.0.1:{tls_server.health_port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _encode(channel)  # nothing but health on the plaintext port
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_the_sdk_connection_speaks_tls_from_settings(
    tls_server: ServiceServer, pki: Pki
) -> None:
    settings = _tls(pki.client, pki.ca)
    with Connection(f"127.0.0.1:{tls_server.port}", serving=settings.serving) as conn:
        # A blocking client: off the event loop the server runs on.
        assert await asyncio.to_thread(conn.health) == "SERVING"


def test_unreadable_certificates_fail_naming_the_setting(tmp_path: Path, pki: Pki) -> None:
    settings = _tls((tmp_path / "missing.pem", pki.server[1]), pki.ca)
    with pytest.raises(FailedPrecondition, match=r"serving\.tls\.cert_file"):
        open_channel("127.0.0.1:1", settings.serving)


def test_client_auth_needs_a_ca() -> None:
    with pytest.raises(ValueError, match=r"client_auth needs tls\.ca_file"):
        load_settings(
            serving={"tls": {"cert_file": "c", "key_file": "k", "client_auth": True}}
        )
