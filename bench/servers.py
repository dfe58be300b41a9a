"""Processes the benchmarks start: a vendor on loopback and a minimal pass-through proxy.

    python bench/servers.py vendor PORT
    python bench/servers.py passthrough PORT UPSTREAM_PORT
    python bench/servers.py minimal PORT UPSTREAM_PORT

The pass-through proxy is the baseline: the least an aiohttp reverse proxy can do (stream the
request upstream, stream the answer back) with the same client settings as the real proxy but
none of its work (no sessions, header policy, assertion, cookie jar or mapping).

The minimal one is a floor, not a usable proxy: the aiohttp server with a hand-written client of
a few lines in place of aiohttp's (a pool of kept-alive connections, one write per request, the
answer parsed only as far as Content-Length; GET without a body, answers with a length only). It
shows how much of the pass-through's cost is aiohttp's client and how much the second socket
exchange itself (system calls, loopback TCP, the event loop's wake-ups), which no client avoids.
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp
from aiohttp import web

SMALL = b"x" * 1024
CHUNK = b"\0" * (256 * 1024)


def vendor_app() -> web.Application:
    app = web.Application()

    async def small(request: web.Request) -> web.Response:
        return web.Response(body=SMALL, content_type="text/plain")

    async def stream(request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", str(1024**3)))
        response = web.StreamResponse(headers={"Content-Type": "application/pdf"})
        response.content_length = size
        await response.prepare(request)
        sent = 0
        while sent < size:
            piece = CHUNK if size - sent >= len(CHUNK) else CHUNK[: size - sent]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response

    app.router.add_get("/small", small)
    app.router.add_get("/stream", stream)
    return app


def passthrough_app(upstream_port: int) -> web.Application:
    app = web.Application()
    state: dict[str, aiohttp.ClientSession] = {}

    async def client_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        state["client"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200, limit_per_host=32),
            cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
        )
        yield
        await state["client"].close()

    async def handler(request: web.Request) -> web.StreamResponse:
        url = f"http://127.0.0.1:{upstream_port}{request.raw_path}"
        async with state["client"].request(request.method, url, allow_redirects=False) as upstream:
            response = web.StreamResponse(status=upstream.status)
            response.content_type = upstream.content_type
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app.cleanup_ctx.append(client_ctx)
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


class _Upstream(asyncio.Protocol):
    """One kept-alive connection to the vendor, reading one answer at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, bytes]] | None = None
        self.head: tuple[int, bytes, int] | None = None  # status, content type, body length

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buffer[:end]).split(b"\r\n")
            del self.buffer[:end + 4]
            fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
            self.head = (int(lines[0].split()[1]), fields.get(b"content-type", b"application/octet-stream"),
                         int(fields[b"content-length"]))
        status, content_type, length = self.head
        if len(self.buffer) >= length and self.waiter is not None:
            body = bytes(self.buffer[:length])
            del self.buffer[:length]
            self.head = None
            waiter, self.waiter = self.waiter, None
            waiter.set_result((status, content_type, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the vendor closed the connection"))


def minimal_app(upstream_port: int) -> web.Application:
    app = web.Application()
    idle: list[_Upstream] = []
    host = f"127.0.0.1:{upstream_port}".encode()

    async def handler(request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        conn = None
        while idle and conn is None:
            candidate = idle.pop()
            conn = candidate if candidate.transport is not None else None
        if conn is None:
            _, conn = await loop.create_connection(_Upstream, "127.0.0.1", upstream_port)
        assert conn.transport is not None
        conn.waiter = loop.create_future()
        conn.transport.write(b"GET " + request.raw_path.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        status, content_type, body = await conn.waiter
        idle.append(conn)
        return web.Response(status=status, body=body, headers={"Content-Type": content_type.decode()})

    app.router.add_get("/{tail:.*}", handler)
    return app


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    builders = {"passthrough": passthrough_app, "minimal": minimal_app}
    app = vendor_app() if kind == "vendor" else builders[kind](int(sys.argv[3]))
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
