"""Free loopback ports for in-process deployments (tests, benchmarks, evaluation runs)."""

from __future__ import annotations

import socket


def free_ports(n: int) -> list[int]:
    """Returns: `n` distinct TCP ports free on 127.0.0.1 now (all held open while choosing)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports
