"""Processes the benchmarks start: a vendor on loopback and a minimal pass-through proxy.

    python bench/servers.py vendor PORT
    python bench/servers.py passthrough PORT UPSTREAM_PORT

The pass-through proxy is the baseline: the least an aiohttp reverse proxy can do (stream the
request upstream, stream the answer back) with the same client settings as the real proxy but
none of its work (no sessions, header policy, assertion, cookie jar or mapping).
"""

from __future__ import annotations

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


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    app = vendor_app() if kind == "vendor" else passthrough_app(int(sys.argv[3]))
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
