"""The security suite's harness: a proxy on loopback, a recording vendor, a decoy, a bystander.

Every case of the suite runs inside a ``World``:

* the proxy (``tests.support.run_proxy``) with one configured vendor, the recording
  ``EchoVendor``, which remembers every request it received;
* a *decoy*: a loopback server that no vendor names (a different port on 127.0.0.1). Attacks
  aim at it; it counts connections, and must end every case with none (no open proxy);
* an *attacker*: a patron signed in from 127.0.0.1 with card 1000, whose cookies the raw-socket
  cases reuse, so that a smuggled request would be forwarded if the proxy ever parsed it;
* a *bystander*: another patron (card 2000, from 127.0.0.3) fetching vendor pages for the whole
  case. At the end every one of its requests must have been answered 200 with the vendor's own
  answer to exactly that path, and cases that hold the proxy busy ask for a fresh answer while
  the attack is still in progress (``await world.bystander.served()``).

Attack requests use paths under ``/echo/attack`` or name ``smuggled``; ``world.attack_paths()``
is what the vendor received apart from the bystander's traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    PROXY_HOST,
    Browser,
    EchoVendor,
    RunningProxy,
    base_config,
    free_port,
    run_echo_vendor,
    run_proxy,
    write_patrons,
)

ATTACKER_ADDRESS = "127.0.0.1"
BYSTANDER_ADDRESS = "127.0.0.3"
BYSTANDER_PREFIX = "/echo/bystander"
# Generous on a busy 2-core machine; every wait below is a wait for a condition, bounded by these.
WAIT = 30.0


class Decoy:
    """A loopback server that is configured nowhere: any connection to it is an open-proxy bug."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nDECOY!")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Bystander:
    """A well-behaved patron reading the vendor's pages while an attack runs."""

    proxy: RunningProxy
    echo: EchoVendor
    host: str
    browser: Browser | None = None
    served_count: int = 0
    failures: list[str] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _progress: asyncio.Condition = field(default_factory=asyncio.Condition)
    _started: int = 0  # fetches begun

    async def start(self) -> None:
        self.browser = Browser(self.proxy, local_addr=BYSTANDER_ADDRESS)
        reply = await self.browser.sign_in("2000", "2222", f"{self.echo.origin}{BYSTANDER_PREFIX}/start")
        assert reply.status == 200, reply.text
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self.browser is not None
        for n in range(100_000):  # bounded; ends long before at stop()
            if self._stop.is_set():
                return
            self._started = n + 1
            path = f"{BYSTANDER_PREFIX}/{n}"
            try:
                reply = await self.browser.get(f"http://{self.host}{path}", follow=False)
                if reply.status != 200 or reply.json().get("path") != path:
                    self.failures.append(f"{path}: {reply.status} {reply.text[:200]}")
                else:
                    self.served_count += 1
            except Exception as exc:  # a refused or reset connection is a failure to note, not a crash
                self.failures.append(f"{path}: {type(exc).__name__}: {exc}")
            async with self._progress:
                self._progress.notify_all()
            # Pacing, not synchronisation: leave the two cores to the attack between page views.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.05)

    async def served(self, timeout: float = WAIT) -> None:
        """Wait until a page view that began after this call has been served."""
        target = self._started + 1
        deadline = time.monotonic() + timeout
        async with self._progress:
            while self.served_count < target and not self.failures:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"the bystander was not served within {timeout} s"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._progress.wait(), remaining)
                if self._task is not None and self._task.done():
                    break
        assert not self.failures, self.failures
        assert self.served_count >= target, "the bystander stopped"

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, WAIT)
        if self.browser is not None:
            await self.browser.close()


@dataclass
class RawReply:
    data: bytes
    closed: bool  # the proxy closed the connection (within the wait)

    @property
    def status(self) -> int | None:
        if not self.data.startswith(b"HTTP/"):
            return None
        return int(self.data[9:12])

    def responses(self) -> list[tuple[int, dict[str, str], bytes]]:
        """Every response on the connection, parsed in order (status, headers, body); bodies are
        framed by Content-Length or chunked, as the proxy sends them."""
        out: list[tuple[int, dict[str, str], bytes]] = []
        data = self.data
        for _ in range(100):  # bounded: a connection carries a few responses at most here
            if not data.startswith(b"HTTP/"):
                break
            head, sep, rest = data.partition(b"\r\n\r\n")
            if not sep:
                break
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0][9:12])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if 100 <= status < 200:
                body, data = b"", rest  # an interim answer has no body
            elif "content-length" in headers:
                size = int(headers["content-length"])
                body, data = rest[:size], rest[size:]
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                body = b""
                for _ in range(100_000):
                    size_line, _, rest = rest.partition(b"\r\n")
                    size = int(size_line.split(b";")[0] or b"0", 16)
                    body, rest = body + rest[:size], rest[size + 2:]
                    if size == 0:
                        break
                data = rest
            else:
                body, data = rest, b""
            out.append((status, headers, body))
        return out

    @property
    def statuses(self) -> list[int]:
        """Status codes of every response on the connection (pipelined answers included)."""
        return [status for status, _, _ in self.responses()]


@dataclass
class World:
    proxy: RunningProxy
    echo: EchoVendor
    decoy: Decoy
    bystander: Bystander
    attacker: Browser
    host: str  # the vendor's proxied host name

    @property
    def port(self) -> int:
        return self.proxy.port

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"

    def mark(self) -> int:
        """A bookmark in the vendor's record: ``since(mark)`` is what arrived after it."""
        return len(self.echo.received)

    def since(self, mark: int) -> list[Any]:
        """Requests the vendor received after ``mark``, apart from the bystander's."""
        return [r for r in self.echo.received[mark:] if not r.path.startswith(BYSTANDER_PREFIX)]

    def attack_paths(self) -> list[str]:
        """Paths the vendor received, apart from the bystander's page views."""
        return [r.path for r in self.echo.received if not r.path.startswith(BYSTANDER_PREFIX)]

    def attack_requests(self) -> list[Any]:
        return [r for r in self.echo.received if not r.path.startswith(BYSTANDER_PREFIX)]

    def attacker_cookie(self) -> str:
        return self.attacker.cookie_header(self.host)

    async def raw(self, payload: bytes, *, wait: float = 10.0, local_addr: str = ATTACKER_ADDRESS) -> RawReply:
        """Send bytes as they are and read until the proxy closes (or ``wait`` passes)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(local_addr, 0))
        data = b""
        closed = False
        try:
            writer.write(payload)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    while True:
                        try:
                            chunk = await reader.read(65536)
                        except ConnectionError:
                            chunk = b""
                        if not chunk:
                            closed = True
                            break
                        data += chunk
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        return RawReply(data, closed)

    async def fetch(self, target: str, *, host: str | None = None, cookie: str | None = "attacker",
                    method: str = "GET", headers: tuple[str, ...] = (), body: bytes = b"",
                    local_addr: str = ATTACKER_ADDRESS) -> tuple[int, dict[str, str], bytes]:
        """One request exactly as written (no client library re-encoding the target), answered
        on a connection the request asks to close. ``cookie``: "attacker" sends the attacker's
        cookies for that host, None none, anything else as given."""
        host = host or self.host
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close", *headers]
        if cookie == "attacker":
            cookie = self.attacker.cookie_header(host)
        if cookie:
            lines.append(f"Cookie: {cookie}")
        if body:
            lines.append(f"Content-Length: {len(body)}")
        reply = await self.raw(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body, local_addr=local_addr)
        responses = reply.responses()
        assert len(responses) == 1, reply.data[:500]
        return responses[0]

    def request_head(self, method: str, path: str, *extra: str, host: str | None = None,
                     version: str = "HTTP/1.1", cookie: bool = True) -> bytes:
        """A request line and headers (CRLF line ends, no terminating blank line)."""
        lines = [f"{method} {path} {version}", f"Host: {host or self.host}"]
        if cookie:
            lines.append(f"Cookie: {self.attacker_cookie()}")
        lines.extend(extra)
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")

    def smuggled(self, tag: str) -> bytes:
        """A complete, legitimate request that must never reach the vendor (it closes after)."""
        return self.request_head("GET", f"/echo/smuggled-{tag}", "Connection: close") + b"\r\n"


def default_vendor(echo: EchoVendor, **extra: Any) -> dict[str, Any]:
    return {"id": "echo", "title": "Echo", "start": f"{echo.origin}/echo", "hosts": [echo.origin],
            "groups": ["wolcott"], "anonymous_paths": ["/help/*", "/open/*"], **extra}


@contextlib.asynccontextmanager
async def open_world(tmp_path: Path, *, vendors: list[dict[str, Any]] | None = None,
                     echo: EchoVendor | None = None, **sections: Any) -> AsyncIterator[World]:
    """A proxy, its recording vendor (made here unless given), the decoy, attacker and bystander.

    ``vendors`` replaces the default vendor table (use ``default_vendor(echo)`` for the echo
    vendor); ``sections`` are merged into the configuration as in ``base_config``.
    """
    async with contextlib.AsyncExitStack() as stack:
        if echo is None:
            echo = await stack.enter_async_context(run_echo_vendor())
        decoy = Decoy()
        await decoy.start()
        stack.push_async_callback(decoy.stop)
        sections.setdefault("upstream", {"connect_timeout": "5s", "read_timeout": "10s"})
        # No growing per-card delays unless a case asks for them: they would only slow the suite.
        sections.setdefault("records", {"security": {"slow_after": 1000}})
        config = base_config(tmp_path, vendors or [default_vendor(echo)], **sections)
        proxy = await stack.enter_async_context(run_proxy(config))
        host = proxy.proxied_host(echo.origin)
        attacker = Browser(proxy, local_addr=ATTACKER_ADDRESS)
        stack.push_async_callback(attacker.close)
        reply = await attacker.sign_in("1000", "1111", f"{echo.origin}/echo/attack/start")
        assert reply.status == 200, reply.text
        bystander = Bystander(proxy, echo, host)
        await bystander.start()
        world = World(proxy, echo, decoy, bystander, attacker, host)
        try:
            yield world
            # The same checks for every case: the bystander was served throughout, and nothing
            # ever reached the decoy.
            await bystander.served()
        finally:
            await bystander.stop()
        assert not bystander.failures, bystander.failures
        assert bystander.served_count >= 1
        assert decoy.connections == 0, "a request reached a host that no vendor names"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path) as w:
        yield w


@pytest.fixture
def proxy_host() -> str:
    return PROXY_HOST


# ----------------------------------------------------------------------------------------------
# An oracle for where a browser goes: the parts of the WHATWG URL parser that decide the host
# (bad-inputs.md 1b: Python's urlsplit reports "no host" for several strings browsers send
# off-site). Special schemes only, as a base of http(s) gives.

_SPECIAL = ("http", "https", "ws", "wss", "ftp", "file")


def browser_target(reference: str, base: str) -> tuple[str, str | None]:
    """(scheme, host) a browser on ``base`` goes to for ``reference`` (host None: not a network
    URL, such as ``javascript:``)."""
    ref = reference.strip("".join(chr(c) for c in range(0x21)))
    ref = "".join(ch for ch in ref if ch not in "\t\n\r")
    base_scheme, _, base_rest = base.partition("://")
    base_host = base_rest.split("/", 1)[0]
    scheme = None
    head = ref.split(":", 1)[0]
    if ":" in ref and head and head[0].isalpha() and all(ch.isalnum() or ch in "+-." for ch in head):
        scheme, ref = head.lower(), ref.split(":", 1)[1]
        if scheme not in _SPECIAL:
            return scheme, None
        if scheme == base_scheme and ref[:1] not in ("/", "\\"):
            return scheme, _host_of(base_host)  # "http:page" on an http page: relative
        if scheme != base_scheme or ref[:2].replace("\\", "/") == "//":
            return scheme, _host_of(_authority(ref.lstrip("/\\")))
    scheme = scheme or base_scheme
    if ref[:2].replace("\\", "/") == "//":
        return scheme, _host_of(_authority(ref.lstrip("/\\")))
    return scheme, _host_of(base_host)


def _authority(rest: str) -> str:
    for index, ch in enumerate(rest):
        if ch in "/\\?#":
            return rest[:index]
    return rest


def _host_of(authority: str) -> str:
    from urllib.parse import unquote

    host = authority.rpartition("@")[2]
    if host.startswith("["):
        host = host.split("]", 1)[0] + "]"
    else:
        host = host.rsplit(":", 1)[0] if ":" in host else host
    host = unquote(host).replace("\u3002", ".").replace("\uff0e", ".").replace("\uff61", ".")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    return host.lower().rstrip(".")


def in_proxy_space(location: str, base: str, proxy_host: str = PROXY_HOST) -> bool:
    """True when a browser on ``base`` following ``location`` stays on the proxy's host names."""
    scheme, host = browser_target(location, base)
    if host is None or scheme not in ("http", "https"):
        return False
    return host == proxy_host or host.endswith("." + proxy_host)


# ----------------------------------------------------------------------------------------------
# The proxy as ``libproxy serve`` runs it: a child process with a TOML file (production's
# keep-alive deadline and logging, which an in-process AppRunner does not have).


def _toml(value: object) -> str:
    return json.dumps(value)


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, echo: EchoVendor, *, keepalive: str = "15s", log_level: str = "INFO",
                patrons: Path | None = None) -> AsyncIterator[tuple[int, Path]]:
    """Run ``python -m proxy serve`` on a free port; yields (port, the file its stderr goes to)."""
    port = free_port()
    if patrons is None:
        patrons = write_patrons(tmp_path / "patrons.toml")
    config = tmp_path / "libproxy.toml"
    config.write_text("\n".join([
        "[proxy]", f"listen = {_toml(f'127.0.0.1:{port}')}", f"host = {_toml(PROXY_HOST)}",
        f"state_dir = {_toml(str(tmp_path / 'state'))}", f"keepalive = {_toml(keepalive)}",
        "[library]", 'id = "wolcott.lib.ct.us"', 'name = "Wolcott Public Library"',
        "[patrons]", 'source = "local"', f"file = {_toml(str(patrons))}",
        "[admin]", 'listen = ""',
        "[[vendor]]", 'id = "echo"', 'title = "Echo"', f"start = {_toml(echo.origin + '/echo')}",
        f"hosts = [{_toml(echo.origin)}]", 'groups = ["wolcott"]', "",
    ]), encoding="utf-8")
    log = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "proxy", "--log-level", log_level, "serve", "--config",
                                 str(config)], env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + WAIT
            for _ in range(100_000):
                assert proc.poll() is None, log.read_text(errors="replace")
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    assert time.monotonic() < deadline, "serve did not start listening"
                    await asyncio.sleep(0.1)  # polling for the port to open: the only signal a child gives
                    continue
                writer.close()
                break
            yield port, log
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=WAIT)
