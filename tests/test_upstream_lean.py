"""The lean upstream client (proxy/forward/upstream.py) against a real vendor on loopback that
answers exactly the bytes each test scripts: kept-alive reuse, a connection the vendor closed
while idle, every body framing, interim answers, malformed answers, timeouts, unsafe headers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp.abc import ResolveResult

from proxy.forward.client import EgressResolver
from proxy.forward.upstream import LeanClient, UnsafeRequest
from proxy.vendors import Origin
from tests.ldap_server import make_tls_files

Answerer = Callable[[bytes, int], bytes | None]  # (request head, its number) -> bytes to send, None: close


@dataclass
class ScriptedVendor:
    answer: Answerer
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    close_after_each: bool = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                reply = self.answer(head, len(self.requests))
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if self.close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def scripted(answer: Answerer, **kw: bool) -> AsyncIterator[ScriptedVendor]:
    vendor = ScriptedVendor(answer, **kw)
    server = await asyncio.start_server(vendor.handle, "127.0.0.1", 0)
    vendor.port = server.sockets[0].getsockname()[1]
    try:
        yield vendor
    finally:
        server.close()
        await server.wait_closed()


def ok(body: bytes = b"hello") -> Answerer:
    return lambda head, n: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s" % (
        len(body), body)


def client(read_timeout: float = 5.0) -> LeanClient:
    return LeanClient(EgressResolver({}), connect_timeout=2.0, read_timeout=read_timeout, idle_per_host=4)


def origin(vendor: ScriptedVendor) -> Origin:
    return Origin("http", "127.0.0.1", vendor.port)


async def get(lean: LeanClient, vendor: ScriptedVendor, method: str = "GET", path: str = "/a",
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    async with await lean.request(method, origin(vendor), path, {"Host": f"127.0.0.1:{vendor.port}",
                                                                  **(headers or {})}) as answer:
        body = await answer.read()
        return answer.status, dict(answer.headers), body


async def test_requests_share_one_kept_alive_connection_and_leave_exactly_as_written() -> None:
    lean = client()
    async with scripted(ok()) as vendor:
        for _ in range(5):
            status, headers, body = await get(lean, vendor, headers={"X-Library-Membership": "token"})
            assert (status, body) == (200, b"hello") and headers["Content-Type"] == "text/plain"
        assert vendor.connections == 1
        assert vendor.requests[0] == (b"GET /a HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Library-Membership: token\r\n\r\n"
                                      % vendor.port)
    await lean.close()


async def test_a_connection_the_vendor_closed_while_idle_is_replaced_once() -> None:
    lean = client()
    async with scripted(ok(), close_after_each=True) as vendor:
        for _ in range(3):
            assert (await get(lean, vendor))[0] == 200
        # Each request after the first found its kept connection closed and went on a new one.
        assert vendor.connections == 3 and len(vendor.requests) == 3
    await lean.close()


async def test_a_vendor_that_hangs_up_on_every_request_is_an_error_not_a_loop() -> None:
    lean = client()
    async with scripted(lambda head, n: None) as vendor:
        with pytest.raises(aiohttp.ClientError):
            await get(lean, vendor)
        assert len(vendor.requests) == 1  # a fresh connection is not tried again
    await lean.close()


@pytest.mark.parametrize(("reply", "body"), [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b""),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    (b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n", b""),
    (b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
     b"ok"),
])
async def test_every_body_framing_is_read_and_the_connection_kept(reply: bytes, body: bytes) -> None:
    lean = client()
    async with scripted(lambda head, n: reply) as vendor:
        for _ in range(2):
            status, _, got = await get(lean, vendor)
            assert got == body and status in (200, 204, 304)
        assert vendor.connections == 1
    await lean.close()


async def test_a_body_ended_by_closing_is_read_whole_and_not_kept() -> None:
    lean = client()
    async with scripted(lambda head, n: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end",
                        close_after_each=True) as vendor:
        assert (await get(lean, vendor))[2] == b"to the end"
        assert (await get(lean, vendor))[2] == b"to the end"
        assert vendor.connections == 2
    await lean.close()


async def test_head_reads_no_body_and_keeps_the_connection() -> None:
    lean = client()
    async with scripted(lambda head, n: b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n") as vendor:
        for _ in range(2):
            status, headers, body = await get(lean, vendor, method="HEAD")
            assert (status, body, headers["Content-Length"]) == (200, b"", "1000")
        assert vendor.connections == 1
    await lean.close()


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"NOT HTTP AT ALL\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
])
async def test_malformed_answers_are_client_errors(reply: bytes) -> None:
    lean = client()
    async with scripted(lambda head, n: reply) as vendor:
        with pytest.raises(aiohttp.ClientError):
            await get(lean, vendor)
    await lean.close()


async def test_a_vendor_too_slow_to_answer_times_out() -> None:
    lean = client(read_timeout=0.5)

    def silent(head: bytes, n: int) -> bytes:
        return b""  # reads the request, never answers

    async with scripted(silent) as vendor:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(30):
                await get(lean, vendor)
    await lean.close()


async def test_a_head_trickled_a_byte_at_a_time_is_cut_at_the_read_timeout() -> None:
    """Each byte arriving within the read timeout must not keep the request waiting for ever:
    the answer's head as a whole has the read timeout."""
    lean = client(read_timeout=1.0)
    stop = asyncio.Event()

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100:
            if stop.is_set():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(0.2)
        writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(30):
            await lean.request("GET", Origin("http", "127.0.0.1", port), "/", {"Host": "x"})
    assert loop.time() - started < 10
    stop.set()
    server.close()
    await lean.close()


@pytest.mark.parametrize(("path", "headers"), [
    ("/a HTTP/1.1\r\nX-Evil: 1\r\n\r\nGET /b", {}),
    ("/a b", {}),
    ("/a", {"X-Evil": "1\r\nX-Injected: 2"}),
    ("/a", {"X-Evil\r\nX-Injected": "2"}),
    ("/a", {"X-Evil": "nul\x00"}),
])
async def test_unsafe_targets_and_headers_are_never_written(path: str, headers: dict[str, str]) -> None:
    lean = client()
    async with scripted(ok()) as vendor:
        with pytest.raises(UnsafeRequest):
            await get(lean, vendor, path=path, headers=headers)
        assert vendor.requests == []
    await lean.close()


async def test_a_name_resolving_to_loopback_is_refused_but_a_configured_address_is_used() -> None:
    lean = LeanClient(EgressResolver({"vendor.test": "127.0.0.1"}), connect_timeout=2.0, read_timeout=5.0,
                      idle_per_host=4)
    async with scripted(ok()) as vendor:
        async with await lean.request("GET", Origin("http", "vendor.test", vendor.port), "/",
                                      {"Host": "vendor.test"}) as answer:
            assert answer.status == 200
        with pytest.raises(OSError, match="non-public"):
            await lean.request("GET", Origin("http", "localhost", vendor.port), "/", {"Host": "localhost"})
    await lean.close()


async def test_an_unread_answer_closes_its_connection_instead_of_reusing_it() -> None:
    lean = client()
    big = b"x" * 200_000
    async with scripted(ok(big)) as vendor:
        async with await lean.request("GET", origin(vendor), "/", {"Host": "v"}) as answer:
            assert answer.status == 200  # the body is left unread
        assert (await get(lean, vendor))[2] == big
        assert vendor.connections == 2
    await lean.close()


async def test_https_vendors_are_verified(tmp_path: Path) -> None:
    """TLS with the server name sent and the certificate checked: a vendor whose certificate
    names another host, or is signed by an authority nobody trusts, is refused."""
    good = make_tls_files(tmp_path / "good", names=("vendor.test",))
    other = make_tls_files(tmp_path / "other", names=("elsewhere.test",))
    trust = ssl.create_default_context(cafile=str(good.ca))
    for files, works in ((good, True), (other, False)):
        served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        served.load_cert_chain(str(files.cert), str(files.key))
        vendor = ScriptedVendor(ok(b"secure"))
        server = await asyncio.start_server(vendor.handle, "127.0.0.1", 0, ssl=served)
        vendor.port = server.sockets[0].getsockname()[1]
        lean = LeanClient(EgressResolver({"vendor.test": "127.0.0.1"}), connect_timeout=5.0, read_timeout=5.0,
                          idle_per_host=4, ssl_context=trust)
        try:
            target = Origin("https", "vendor.test", vendor.port)
            if works:
                for _ in range(2):
                    async with await lean.request("GET", target, "/", {"Host": "vendor.test"}) as answer:
                        assert answer.status == 200 and await answer.read() == b"secure"
                assert vendor.connections == 1
            else:
                with pytest.raises(ssl.SSLCertVerificationError):
                    await lean.request("GET", target, "/", {"Host": "vendor.test"})
                assert vendor.requests == []
        finally:
            await lean.close()
            server.close()
            await server.wait_closed()
    # The system's trust store by default: the test authority is not in it.
    vendor = ScriptedVendor(ok())
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(str(good.cert), str(good.key))
    server = await asyncio.start_server(vendor.handle, "127.0.0.1", 0, ssl=served)
    lean = LeanClient(EgressResolver({"vendor.test": "127.0.0.1"}), connect_timeout=5.0, read_timeout=5.0,
                      idle_per_host=4)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            await lean.request("GET", Origin("https", "vendor.test", server.sockets[0].getsockname()[1]), "/",
                               {"Host": "vendor.test"})
    finally:
        await lean.close()
        server.close()
        await server.wait_closed()


async def test_header_bytes_leave_exactly_as_they_came() -> None:
    """A value the listener decoded with surrogates (bytes that are not UTF-8) is written back
    as the same bytes; a surrogate no decoding could have made is refused, not a crash."""
    lean = client()
    async with scripted(ok()) as vendor:
        assert (await get(lean, vendor, headers={"X-Raw": "caf\xe9 \udcff"}))[0] == 200
        assert b"X-Raw: caf\xc3\xa9 \xff\r\n" in vendor.requests[0]
        with pytest.raises(UnsafeRequest):
            await get(lean, vendor, headers={"X-Raw": "\ud800"})
    await lean.close()


async def test_connections_to_all_vendors_are_capped_and_a_freed_one_is_reused() -> None:
    """[upstream] connections: with two in flight, a third waits for one to end (and fails
    after the wait when none does), and every slot comes back whatever became of the answer."""
    lean = LeanClient(EgressResolver({}), connect_timeout=2.0, read_timeout=5.0, idle_per_host=4, limit=2,
                      wait=0.5)
    async with scripted(ok()) as vendor:
        first = await lean.request("GET", origin(vendor), "/1", {"Host": "v"})
        second = await lean.request("GET", origin(vendor), "/2", {"Host": "v"})
        with pytest.raises(aiohttp.ClientConnectionError, match="in use"):
            await lean.request("GET", origin(vendor), "/3", {"Host": "v"})
        waiting = asyncio.ensure_future(get(lean, vendor, path="/4"))
        await asyncio.sleep(0)
        async with first:
            await first.read()
        assert (await waiting)[0] == 200
        async with second:
            pass  # unread: its connection is closed, its slot still freed
        with pytest.raises(UnsafeRequest):
            await get(lean, vendor, headers={"X": "a\r\nb"})
        for _ in range(3):  # every slot is free again
            assert (await get(lean, vendor))[0] == 200
    await lean.close()


async def test_an_idle_connection_that_received_anything_is_not_reused() -> None:
    """Bytes a vendor sends on an idle kept connection (an answer nobody asked for) would be
    read as the next request's answer: that connection is dropped instead. A 101 to a plain
    request is never kept either."""
    lean = client()
    replies = {1: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTALE",
               2: b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh",
               3: b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
               4: b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter"}
    async with scripted(lambda head, n: replies[n]) as vendor:
        assert (await get(lean, vendor))[2] == b"ok"
        assert (await get(lean, vendor))[2] == b"fresh"
        assert vendor.connections == 2
        assert (await get(lean, vendor))[0] == 101
        assert (await get(lean, vendor))[2] == b"after"
        assert vendor.connections == 3
    await lean.close()


class SlowResolver(EgressResolver):
    def __init__(self, delay: float) -> None:
        super().__init__({})
        self.delay = delay
        self.calls = 0

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return [ResolveResult(hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0,
                              flags=socket.AI_NUMERICHOST)]


async def test_a_slow_lookup_is_under_the_connect_timeout_and_shared() -> None:
    slow = SlowResolver(delay=3.0)
    lean = LeanClient(slow, connect_timeout=0.3, read_timeout=5.0, idle_per_host=4)
    async with scripted(ok()) as vendor:
        target = Origin("http", "vendor.test", vendor.port)
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(*(lean.request("GET", target, "/", {"Host": "vendor.test"})
                                         for _ in range(20)), return_exceptions=True)
        assert all(isinstance(r, aiohttp.ServerTimeoutError) for r in results), results
        assert asyncio.get_running_loop().time() - started < 2.5
        assert slow.calls == 1  # one lookup for the twenty
    await lean.close()
    fast = SlowResolver(delay=0.05)
    lean = LeanClient(fast, connect_timeout=2.0, read_timeout=5.0, idle_per_host=4)
    async with scripted(ok()) as vendor:
        target = Origin("http", "vendor.test", vendor.port)
        for _ in range(3):
            async with await lean.request("GET", target, "/", {"Host": "vendor.test"}) as answer:
                assert answer.status == 200
        assert fast.calls == 1  # cached
    await lean.close()
