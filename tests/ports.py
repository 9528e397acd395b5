"""Loopback ports for the listeners a test names by number in a config."""

from __future__ import annotations

import random
import socket
from pathlib import Path

#: ports handed out in this process: two listeners of one test never get the same
_given: set[int] = set()


def _ephemeral_low() -> int:
    """The lowest port the kernel gives outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nothing listens on now, and not handed out before.

    Picked below the kernel's ephemeral range: the outgoing connections a test makes
    meanwhile (to PostgreSQL, the simulator, the sink) take their local ports from that
    range, and one of them could take a port picked there before its listener binds it
    (CI saw ``address already in use`` that way)."""
    low = max(_ephemeral_low(), 20_000)
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(15_000, low)
        if port in _given:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free loopback port between 15000 and {low}")
