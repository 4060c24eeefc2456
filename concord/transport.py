"""gRPC channels and server ports, plaintext or TLS (mutual TLS when configured): the one
place every server, SDK connection and peer client gets its transport from, so a deployment
turns TLS on for all of them with `serving.tls`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, overload

import grpc

from concord.config import ServingSettings, TLSSettings
from concord.errors import FailedPrecondition

Options = Sequence[tuple[str, Any]]


def _read(path: Path | None, setting: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as err:
        raise FailedPrecondition(
            f"serving.tls.{setting}: cannot read {path} ({err.strerror})"
        ) from None


def server_credentials(tls: TLSSettings) -> grpc.ServerCredentials:
    """Returns: the server side: this process's certificate; with `client_auth`, callers must
    present a certificate signed by `ca_file`."""
    key, cert = _read(tls.key_file, "key_file"), _read(tls.cert_file, "cert_file")
    assert key is not None and cert is not None
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=_read(tls.ca_file, "ca_file") if tls.client_auth else None,
        require_client_auth=tls.client_auth,
    )


def channel_credentials(tls: TLSSettings) -> grpc.ChannelCredentials:
    """Returns: the client side: servers verified against `ca_file` (else the system CAs);
    this process's certificate presented for mutual TLS."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file, "ca_file"),
        private_key=_read(tls.key_file, "key_file"),
        certificate_chain=_read(tls.cert_file, "cert_file"),
    )


def _options(serving: ServingSettings, options: Options) -> list[tuple[str, Any]]:
    merged = list(options)
    if serving.tls is not None and serving.tls.server_name:
        merged.append(("grpc.ssl_target_name_override", serving.tls.server_name))
    return merged


@overload
def open_channel(
    address: str, serving: ServingSettings, options: Options = (), *, aio: Literal[False] = False
) -> grpc.Channel: ...
@overload
def open_channel(
    address: str, serving: ServingSettings, options: Options = (), *, aio: Literal[True]
) -> grpc.aio.Channel: ...
def open_channel(
    address: str, serving: ServingSettings, options: Options = (), *, aio: bool = False
) -> grpc.Channel | grpc.aio.Channel:
    """A channel to `address`: TLS when `serving.tls` is set, else plaintext."""
    opts = _options(serving, options)
    if serving.tls is None:
        return grpc.aio.insecure_channel(address, opts) if aio else grpc.insecure_channel(
            address, opts
        )
    creds = channel_credentials(serving.tls)
    if aio:
        return grpc.aio.secure_channel(address, creds, opts)
    return grpc.secure_channel(address, creds, opts)


def add_port(server: grpc.aio.Server, address: str, serving: ServingSettings) -> int:
    """Bind `address` (TLS when configured). Returns: the port bound (0: failed)."""
    if serving.tls is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, server_credentials(serving.tls))
