"""bad-inputs.md section 10: limits and slow clients; issue 11 findings 2, 3, 4 and the form limit.

Small deadlines and pools are configured so that the attacks finish in seconds; the sleeps in
``trickle`` are the attacker's pace (a byte now and then), never a wait for the proxy, which is
always awaited as a condition (an answer, or the connection closing) within a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.security.conftest import WAIT, World, default_vendor, open_world, serve
from tests.support import PROXY_HOST, EchoVendor


async def read_response(reader: asyncio.StreamReader, timeout: float = WAIT) -> tuple[int, dict[str, str], bytes]:
    """One response (status, headers, body framed by Content-Length), within ``timeout``."""
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        size = int(headers.get("content-length", "0"))
        body = await reader.readexactly(size) if size else b""
        return int(lines[0][9:12]), headers, body


async def closed(reader: asyncio.StreamReader, timeout: float = WAIT) -> bool:
    """True when the proxy closes the connection within ``timeout`` (whatever else it sends)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            for _ in range(100_000):
                try:
                    if not await reader.read(65536):
                        return True
                except ConnectionError:
                    return True
    return False


@contextlib.asynccontextmanager
async def connection(world: World, head: bytes, address: str = "127.0.0.1"
                     ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", world.port, local_addr=(address, 0))
    writer.write(head)
    await writer.drain()
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def trickle(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, every: float, limit: float
                  ) -> tuple[int, dict[str, str], bytes]:
    """Send one byte every ``every`` seconds until the proxy answers; fail after ``limit`` s."""
    answer = asyncio.create_task(read_response(reader, limit))
    try:
        for _ in range(int(limit / every) + 1):
            if answer.done():
                break
            with contextlib.suppress(ConnectionError):
                writer.write(b"x")
                await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(answer), every)  # the attacker's pace
        return await answer
    finally:
        answer.cancel()


SLOW_BODY = {"body_grace": "1s", "body_min_rate": "100KiB"}  # 100 000 bytes: a deadline of about 2 s


TRICKLES = [
    ("upload", "/upload", "application/octet-stream", True),
    ("form", "/echo/attack/form", "application/x-www-form-urlencoded", True),
    ("anonymous", "/open/trickle", "application/octet-stream", False),
]


async def test_limits_10_trickled_upload_abandoned_408_issue11_finding2(tmp_path: Path, echo: EchoVendor) -> None:
    """Before the fix the upload stream had only a per-piece timeout: Content-Length 100000 and
    a byte every 5 s was still open after 100 s. Now the whole body has a deadline (grace plus
    size at a minimum rate); here that is about 2 s, and a byte arrives every 0.5 s. An upload,
    a vendor form (read whole) and an anonymous upload, trickled at once."""
    async with open_world(tmp_path, echo=echo, proxy=SLOW_BODY) as world:
        mark = world.mark()

        async def attack(path: str, content_type: str, signed_in: bool) -> None:
            head = world.request_head("POST", path, "Content-Length: 100000", f"Content-Type: {content_type}",
                                      cookie=signed_in) + b"\r\n"
            async with connection(world, head) as (reader, writer):
                status, headers, _ = await trickle(writer, reader, every=0.5, limit=WAIT)
                assert status == 408, path
                assert headers.get("x-libproxy-reason") == "slow-body"
                await world.bystander.served()
                # (aiohttp lingers up to 10 s reading what is left of an unread body, then closes)
                assert await closed(reader), "the connection must be closed after an abandoned body"

        await asyncio.wait_for(asyncio.gather(*(attack(p, t, s) for _, p, t, s in TRICKLES)), 2 * WAIT)
        # The vendor never got a whole request (an upload it saw begin was cut off).
        assert [r.path for r in world.since(mark)] == []


FAIR = {"connections_per_client": 2, "connections_per_host": 6, "queue_wait": "1s",
        "connect_timeout": "5s", "read_timeout": "20s"}


@pytest.mark.parametrize("anonymous", [False, True], ids=["session", "anonymous_address"])
async def test_limits_10_forty_trickled_uploads_do_not_stop_another_patron_issue11_finding3(
        tmp_path: Path, echo: EchoVendor, anonymous: bool) -> None:
    """Before the fix 40 trickled uploads (or 32 slow PDF readers) filled the vendor's pool and
    every other patron waited, then got a 504 that the log blamed on the vendor. Now one client
    (a session, or an address for anonymous use) holds at most its share of connections."""
    async with open_world(tmp_path, echo=echo, upstream=FAIR) as world:
        path = "/open/upload-{n}" if anonymous else "/upload?n={n}"
        mark = world.mark()
        async with contextlib.AsyncExitStack() as stack:
            conns = []
            for n in range(40):
                head = world.request_head("POST", path.format(n=n), "Content-Length: 1000",
                                          "Content-Type: application/octet-stream", cookie=not anonymous)
                conns.append(await stack.enter_async_context(connection(world, head + b"\r\nx", "127.0.0.30")))
            answers = [asyncio.create_task(read_response(reader)) for reader, _ in conns]
            # All but the client's share are turned away with a clear page...
            await asyncio.wait_for(_until_done(answers, 38), WAIT)
            turned_away = [a.result() for a in answers if a.done()]
            assert [s for s, _, _ in turned_away] == [429] * 38
            assert {h.get("x-libproxy-reason") for _, h, _ in turned_away} == {"busy-client"}
            # ...and while the client's two uploads hold their connections, another patron reads.
            await world.bystander.served()
            await world.bystander.served()
            held = [n for n, a in enumerate(answers) if not a.done()]
            assert len(held) == 2
            for n in held:
                conns[n][1].write(b"y" * 999)
            for n in held:
                status, _, body = await answers[n]
                assert status == 200
                assert json.loads(body) == {"received_bytes": 1000} if not anonymous else True
        got = world.since(mark)
        assert len(got) == 2, [r.path for r in got]


async def _until_done(tasks: list[asyncio.Task[tuple[int, dict[str, str], bytes]]], count: int) -> None:
    pending = set(tasks)
    for _ in range(len(tasks)):
        if sum(t.done() for t in tasks) >= count:
            return
        _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)


async def test_limits_10_many_slow_downloads_from_one_session_issue11_finding3(tmp_path: Path,
                                                                             echo: EchoVendor) -> None:
    async with open_world(tmp_path, echo=echo, upstream=FAIR) as world:
        mark = world.mark()
        async with contextlib.AsyncExitStack() as stack:
            conns = []
            for n in range(12):
                head = world.request_head("GET", f"/big?size=200000000&n={n}") + b"\r\n"
                conns.append(await stack.enter_async_context(connection(world, head, "127.0.0.31")))
            # Read the status lines only: the two admitted downloads stall behind a full socket.
            heads = [asyncio.create_task(asyncio.wait_for(reader.readuntil(b"\r\n"), WAIT)) for reader, _ in conns]
            statuses = sorted([int((await h)[9:12]) for h in heads])
            assert statuses == [200, 200] + [429] * 10
            await world.bystander.served()
            await world.bystander.served()
            assert len([r for r in world.since(mark) if r.path.startswith("/big")]) == 2


class WireVendor:
    """A vendor that records each request's bytes exactly as they arrived (no HTTP library in
    between to decompress a body, as aiohttp's server does by default)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(1000):
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                elif headers.get("transfer-encoding", "").lower() == "chunked":
                    body = b""
                    for _ in range(1_000_000):
                        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        body += await reader.readexactly(size + 2)
                        body = body[:-2]
                        if size == 0:
                            break
                else:
                    body = b""
                self.requests.append((headers, body))
                answer = json.dumps({"body_length": len(body)}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(answer) + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> WireVendor:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def wire_world(tmp_path: Path, echo: EchoVendor) -> AsyncIterator[tuple[World, WireVendor, str]]:
    async with WireVendor() as wire:
        vendors = [default_vendor(echo), {"id": "wire", "title": "Wire", "start": f"{wire.origin}/",
                                          "hosts": [wire.origin], "groups": ["wolcott"]}]
        async with open_world(tmp_path, echo=echo, vendors=vendors) as world:
            host = world.proxy.proxied_host(wire.origin)
            # The attacker's session gets its cookie for the wire vendor's host.
            reply = await world.attacker.sign_in("1000", "1111", f"{wire.origin}/start")
            assert reply.status == 200
            wire.requests.clear()
            yield world, wire, host


async def test_limits_10_gzip_request_body_forwarded_as_sent_issue11_finding4(tmp_path: Path,
                                                                             echo: EchoVendor) -> None:
    """Before the fix the listener decompressed request bodies: the vendor got "Content-Encoding:
    gzip" with Content-Length 41 and 41 bytes of *plain* text."""
    async with wire_world(tmp_path, echo) as (world, wire, host):
        for content_type in ("application/x-www-form-urlencoded", "application/json", "text/plain"):
            plain = b"q=owls&page=2&filler=" + b"a" * 200 if "form" in content_type else b'{"q": "owls"}' * 20
            compressed = gzip.compress(plain)
            wire.requests.clear()
            status, _, body = await world.fetch("/search", host=host, method="POST", body=compressed,
                                                headers=(f"Content-Type: {content_type}", "Content-Encoding: gzip"))
            assert status == 200, content_type
            [(headers, got)] = wire.requests
            assert got == compressed, content_type
            assert headers.get("content-encoding") == "gzip"
            assert headers.get("content-length") == str(len(compressed))
            assert json.loads(body) == {"body_length": len(compressed)}
        await world.bystander.served()


async def test_limits_10_gzip_bomb_request_body_never_inflated_aiohttp_cve_2025_69223(tmp_path: Path,
                                                                                      echo: EchoVendor) -> None:
    bomb = gzip.compress(b"\0" * (200 * 1024 * 1024), compresslevel=9)
    async with wire_world(tmp_path, echo) as (world, wire, host):
        status, _, body = await world.fetch("/upload", host=host, method="POST", body=bomb,
                                            headers=("Content-Type: application/octet-stream",
                                                     "Content-Encoding: gzip"))
        assert status == 200
        assert json.loads(body) == {"body_length": len(bomb)}
        [(headers, got)] = wire.requests
        assert got == bomb and headers.get("content-encoding") == "gzip"


async def test_limits_10_vendor_form_of_100_kib_is_not_413_issue11(world: World) -> None:
    """Before the fix the app's client_max_size (1 MiB meant, 16 KiB in force) answered 413 to
    vendor form posts over 16 KiB; the sign-in form keeps its small limit (test_signin)."""
    form = b"q=owls&notes=" + b"n" * (100 * 1024)
    mark = world.mark()
    status, _, body = await world.fetch("/echo/attack/form", method="POST", body=form,
                                        headers=("Content-Type: application/x-www-form-urlencoded",))
    assert status == 200
    assert json.loads(body)["body_length"] == len(form)
    [got] = world.since(mark)
    assert got.body == form


async def test_limits_10_streamed_upload_over_the_cap_413_aiohttp_cve_2025_69228(tmp_path: Path,
                                                                                echo: EchoVendor) -> None:
    async with open_world(tmp_path, echo=echo, proxy={"max_upload": "1MiB"}) as world:
        mark = world.mark()
        head = world.request_head("POST", "/upload", "Transfer-Encoding: chunked")
        chunk = b"10000\r\n" + b"u" * 0x10000 + b"\r\n"
        async with connection(world, head + b"\r\n") as (reader, writer):
            answer = asyncio.create_task(read_response(reader))
            for _ in range(48):  # 3 MiB, unless the proxy answers first
                if answer.done():
                    break
                with contextlib.suppress(ConnectionError):
                    writer.write(chunk)
                    await writer.drain()
            status, _, _ = await answer
        assert status == 413
        declared = world.request_head("POST", "/upload", f"Content-Length: {50 * 1024 * 1024}") + b"\r\n"
        async with connection(world, declared) as (reader, _):
            status, _, _ = await read_response(reader)
        assert status == 413
        assert [r.path for r in world.since(mark) if r.path == "/upload"] == []


@pytest.mark.parametrize(("case", "lines", "target"), [
    ("header_9000_bytes_aiohttp_observed", ["X-Big: " + "h" * 9000], "/echo/attack/big-header"),
    ("headers_129_aiohttp_observed", [f"X-H{n}: v" for n in range(129)], "/echo/attack/many-headers"),
    ("url_9000_bytes_aiohttp_observed", [], "/echo/attack/" + "u" * 9000),
    ("cookie_64k_aiohttp_cve_2026_22815", ["Cookie: c=" + "k" * 65536], "/echo/attack/big-cookie"),
])
async def test_limits_10_oversized_request_heads_refused_nothing_upstream(world: World, case: str,
                                                                         lines: list[str], target: str) -> None:
    mark = world.mark()
    reply = await world.raw(world.request_head("GET", target, *lines, "Connection: close") + b"\r\n")
    assert reply.status in (400, 413, 414, 431), (case, reply.data[:200])
    assert reply.closed
    assert world.since(mark) == []


async def test_limits_10_vendor_never_answers_504_others_served_bad_inputs_10(tmp_path: Path,
                                                                             echo: EchoVendor) -> None:
    async with open_world(tmp_path, echo=echo, upstream={"connect_timeout": "5s", "read_timeout": "1s"}) as world:
        mark = world.mark()
        replies = await asyncio.gather(*(world.attacker.get(world.url("/slow?s=3"), follow=False) for _ in range(4)))
        assert {r.status for r in replies} <= {504, 429}
        assert 504 in {r.status for r in replies}
        assert all("not answering" in r.text for r in replies if r.status == 504)
        assert {r.path for r in world.since(mark)} == {"/slow?s=3"}
        await world.bystander.served()


@pytest.mark.slow
async def test_limits_10_idle_and_slowloris_closed_by_keepalive_deadline_of_serve(tmp_path: Path,
                                                                                 echo: EchoVendor) -> None:
    """The proxy as ``libproxy serve`` runs it (``[proxy] keepalive``, 2 s here): a connection
    that sends nothing, or trickles a header a byte at a time, is closed; aiohttp alone would
    keep it for 75 s (run_app) or an hour (AppRunner)."""
    async with serve(tmp_path, echo, keepalive="2s") as (port, _):
        # Idle: connect and send nothing.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await closed(reader, timeout=WAIT), "an idle connection was kept open"
        writer.close()
        # Slowloris: a header that never ends, a byte every 0.5 s.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET / HTTP/1.1\r\nHost: {PROXY_HOST}\r\nX-A: ".encode())
        gone = asyncio.create_task(closed(reader, timeout=WAIT))
        for _ in range(int(WAIT / 0.5)):
            if gone.done():
                break
            with contextlib.suppress(ConnectionError):
                writer.write(b"a")
                await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(gone), 0.5)  # the attacker's pace
        assert await gone, "a slowloris connection was kept open"
        writer.close()
        # And a normal client is served by the same process.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: {PROXY_HOST}\r\nConnection: close\r\n\r\n".encode())
        status, _, _ = await read_response(reader)
        assert status == 200
        writer.close()
        assert echo.received == []
