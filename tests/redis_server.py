"""A real redis-server on a free loopback port, in a temporary directory, persisting nothing."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

from tests.support import free_port


def redis_server_path() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if shutil.os.path.exists("/usr/bin/redis-server") else None  # type: ignore[attr-defined]
    )


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Start redis-server; yields its URL and stops it afterwards."""
    path = redis_server_path()
    assert path is not None, "redis-server is not installed"
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="libproxy-redis-")
    proc = subprocess.Popen(
        [path, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir, "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
