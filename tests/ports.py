"""Free loopback ports for the servers the tests start, chosen outside the ephemeral range.

Asking the kernel for port 0 hands out a port from the ephemeral range, the same range it
draws from for every outgoing connection: between the moment a test picks the port and the
moment its server binds it, a connection of another part of the run (a proxy worker's Redis
client, a browser) can take it as its local port, and the server then fails with "address in
use" (a ``serve --workers 2`` run once lost its staff listener this way in CI). Ports below the
ephemeral range are never given to outgoing connections, so only another listener can take one,
and none is given out twice in a run.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

_given: set[int] = set()
_lock = threading.Lock()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port nobody listens on, below the ephemeral range, not given out before."""
    high = min(_ephemeral_low(), 65536) - 1
    low = max(1024, min(10000, high - 2000))
    with _lock:
        for _ in range(200):
            port = random.randint(low, high)
            if port not in _given and _bindable(port):
                _given.add(port)
                return port
    # The range is (nearly) full or unusual: fall back to the kernel's choice.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
