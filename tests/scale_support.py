"""Servers the scale tests start and stop at will: redis-server that can be stopped and started
again on the same port, PostgreSQL run by an unprivileged user, and waiting on conditions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator

from tests.redis_server import redis_server_path
from tests.support import free_port


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)

async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "condition") -> None:
    """Wait until an async condition holds (polled, bounded)."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class RedisProcess:
    """redis-server on a fixed loopback port, persisting nothing; ``stop()`` and ``start()``
    again simulate an outage (the data is lost, as after a real restart without persistence)."""

    def __init__(self) -> None:
        path = redis_server_path()
        assert path is not None, "redis-server is not installed"
        self.path = path
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix="libproxy-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.path, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.workdir, "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        proc = self.proc
        wait_for(lambda: port_open(self.port) or proc.poll() is not None, what="redis-server to listen")
        assert proc.poll() is None, "redis-server did not start"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager


def redis_process() -> Iterator[RedisProcess]:
    server = RedisProcess()
    server.start()
    try:
        yield server
    finally:
        server.close()


def postgres_bin() -> str | None:
    for candidate in ("/usr/lib/postgresql",):
        if os.path.isdir(candidate):
            versions = sorted(os.listdir(candidate), key=lambda v: int(v) if v.isdigit() else 0)
            for version in reversed(versions):
                path = os.path.join(candidate, version, "bin")
                if os.path.exists(os.path.join(path, "pg_ctl")):
                    return path
    found = shutil.which("pg_ctl")
    return os.path.dirname(found) if found else None
