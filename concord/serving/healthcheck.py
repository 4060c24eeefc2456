"""`python -m concord.serving.healthcheck [SERVICE ...]`: container probes. By default asks grpc.health.v1
of every named service (else every Concord port listening here); `--wait-for-model S` instead
waits up to S seconds until the encoder's registry model (CONCORD_ENCODER_MODEL) resolves.
"""

from __future__ import annotations

import argparse
import sys
import time

import grpc

from concord.clients import Connection
from concord.config import SERVICE_NAMES, Settings, load_settings


def check(services: list[str], host: str = "127.0.0.1", timeout: float = 3.0) -> dict[str, str]:
    """Health status of each service ("SERVING", "NOT_SERVING", ... or "DOWN" if nothing listens)."""
    settings = load_settings()
    statuses: dict[str, str] = {}
    for service in services:
        address = f"{host}:{settings.serving.port_for(service)}"
        with Connection(address, serving=settings.serving) as connection:
            try:
                statuses[service] = connection.health(timeout=timeout)
            except grpc.RpcError as err:
                code = err.code() if isinstance(err, grpc.Call) else None
                statuses[service] = "DOWN" if code == grpc.StatusCode.UNAVAILABLE else str(code)
    return statuses


def wait_for_model(settings: Settings, timeout: float, interval: float = 5.0) -> str | None:
    """Wait until `settings.encoder_model` resolves in the registry (a local path: at once).

    Returns: None when it resolves, else the last reason it did not (after `timeout` seconds).
    """
    from concord.registry.client import Registry

    uri = settings.encoder_model
    if not uri.startswith("models:/"):
        return None
    deadline = time.monotonic() + timeout
    while True:
        try:
            Registry.from_settings(settings).resolve(uri)
            return None
        except Exception as err:  # not registered yet, or the server is not up yet
            reason = f"{uri}: {type(err).__name__}: {err}"
        if time.monotonic() + interval > deadline:
            return reason
        print(f"waiting for {reason}", flush=True)
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m concord.serving.healthcheck", description=__doc__
    )
    parser.add_argument("services", nargs="*", help=f"any of {', '.join(SERVICE_NAMES)}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per health call")
    parser.add_argument("--wait-for-model", type=float, metavar="SECONDS", default=None)
    args = parser.parse_args(argv)
    if args.wait_for_model is not None:
        settings = load_settings()
        reason = wait_for_model(settings, args.wait_for_model)
        print(reason or f"{settings.encoder_model} resolves")
        return 0 if reason is None else 1
    named = list(args.services)
    unknown = sorted(set(named) - set(SERVICE_NAMES))
    if unknown:
        parser.error(f"unknown service(s) {unknown}")
    statuses = check(named or list(SERVICE_NAMES), args.host, args.timeout)
    if not named:  # probe whatever runs in this container: skip ports nobody listens on
        statuses = {s: v for s, v in statuses.items() if v != "DOWN"}
    healthy = bool(statuses) and all(v == "SERVING" for v in statuses.values())
    print(" ".join(f"{s}={v}" for s, v in statuses.items()) or "no Concord service listening")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
