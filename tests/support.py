"""Test support: a recording "echo vendor", a proxy started on loopback, and a small browser.

Everything here is real: real aiohttp servers on 127.0.0.1, real HTTP between them. The
``Browser`` keeps host-only cookies per host name and follows redirects itself, sending every
request to the proxy's port with the proxied host name in ``Host`` (as a browser does for
``*.localhost`` names, which resolve to loopback).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp import web

from proxy import config as config_mod
from proxy.app import create_app
from proxy.config import Config
from proxy.patrons.hashing import hash_pin
from proxy.patrons.local import add_patron
from proxy.web.bad_requests import BadRequestAppRunner
from tests.ports import free_port as free_port  # re-exported: the tests take it from here

PROXY_HOST = "proxy.localhost"


@dataclass
class Received:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}


@dataclass
class EchoVendor:
    """A vendor on loopback that records exactly what it received."""

    port: int
    received: list[Received] = field(default_factory=list)
    runner: web.AppRunner | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def last(self) -> Received:
        return self.received[-1]


def echo_vendor_app(vendor: EchoVendor) -> web.Application:
    app = web.Application(client_max_size=1024**3)

    async def record(request: web.Request, read_body: bool = True) -> Received:
        body = await request.read() if read_body else b""
        entry = Received(request.method, request.raw_path, list(request.headers.items()), body)
        vendor.received.append(entry)
        return entry

    async def echo(request: web.Request) -> web.StreamResponse:
        entry = await record(request)
        return web.json_response({"method": entry.method, "path": entry.path, "headers": entry.headers,
                                  "body_length": len(entry.body)})

    async def set_cookie(request: web.Request) -> web.StreamResponse:
        await record(request)
        response = web.Response(text="cookie set")
        for raw in request.query.getall("c", []):
            response.headers.add("Set-Cookie", raw)
        return response

    async def redirect(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.Response(status=302, headers={"Location": request.query["to"]})

    async def big(request: web.Request) -> web.StreamResponse:
        await record(request)
        size = int(request.query.get("size", "1024"))
        response = web.StreamResponse(headers={"Content-Type": "application/pdf"})
        response.content_length = size
        await response.prepare(request)
        chunk = b"%" * min(size, 256 * 1024)
        sent = 0
        while sent < size:
            piece = chunk[: size - sent]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response

    async def upload(request: web.Request) -> web.StreamResponse:
        total = 0
        async for chunk in request.content.iter_any():
            total += len(chunk)
        vendor.received.append(Received(request.method, request.raw_path, list(request.headers.items()), b""))
        return web.json_response({"received_bytes": total})

    async def slow(request: web.Request) -> web.StreamResponse:
        await record(request)
        await asyncio.sleep(float(request.query.get("s", "30")))
        return web.Response(text="late")

    async def websocket(request: web.Request) -> web.StreamResponse:
        await record(request, read_body=False)
        ws = web.WebSocketResponse(protocols=("chat",))
        await ws.prepare(request)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(message.data[::-1])
        return ws

    async def static(request: web.Request) -> web.StreamResponse:
        await record(request)
        types = {"woff2": "font/woff2", "css": "text/css", "js": "text/javascript", "png": "image/png"}
        kind = request.match_info["name"].rpartition(".")[2]
        return web.Response(body=b"static:" + kind.encode(), content_type=types.get(kind, "application/pdf"))

    async def page(request: web.Request) -> web.StreamResponse:
        await record(request)
        return web.Response(text="<html><body>vendor page</body></html>", content_type="text/html")

    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    app.router.add_get("/set-cookie", set_cookie)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/big", big)
    app.router.add_route("*", "/upload", upload)
    app.router.add_get("/slow", slow)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/static/{name}", static)
    app.router.add_route("*", "/{tail:.*}", page)
    return app


@asynccontextmanager
async def run_echo_vendor() -> AsyncIterator[EchoVendor]:
    vendor = EchoVendor(port=0)
    runner = web.AppRunner(echo_vendor_app(vendor), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    vendor.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    vendor.runner = runner
    try:
        yield vendor
    finally:
        await runner.cleanup()


PATRONS = {
    # card: (pin, groups, home, status)
    "1000": ("1111", ["wolcott", "bibliomation"], "wolcott", "active"),
    "2000": ("2222", ["wolcott", "bibliomation"], "wolcott", "active"),
    "3000": ("3333", ["derby", "bibliomation"], "derby", "active"),
    "4000": ("4444", ["wolcott"], "wolcott", "expired"),
}


def write_patrons(path: Path) -> Path:
    for card, (pin, groups, home, status) in PATRONS.items():
        add_patron(path, card, hash_pin(pin, n_log2=10), groups, home, status)
    return path


def base_config(tmp: Path, vendors: list[dict[str, Any]], **sections: Mapping[str, Any]) -> Config:
    patrons = tmp / "patrons.toml"
    if not patrons.exists():
        write_patrons(patrons)
    data: dict[str, Any] = {
        "proxy": {"listen": "127.0.0.1:8080", "host": PROXY_HOST, "state_dir": str(tmp / "state")},
        "library": {"id": "wolcott.lib.ct.us", "name": "Wolcott Public Library"},
        "patrons": {"source": "local", "file": str(patrons)},
        "upstream": {"connect_timeout": "2s", "read_timeout": "2s"},
        "admin": {"listen": ""},
        "vendor": vendors,
    }
    for name, section in sections.items():
        # [patrons] is replaced whole (another source has other keys); other tables are merged.
        merged = {} if name == "patrons" else dict(data.get(name, {}))
        merged.update(section)
        data[name] = merged
    return config_mod.from_dict(data, base=tmp)


@dataclass
class RunningProxy:
    config: Config
    port: int
    app: web.Application
    runner: web.AppRunner

    def proxied_host(self, origin: str) -> str:
        from proxy.context import ROUTES
        from proxy.vendors import parse_absolute_url

        parsed = parse_absolute_url(origin)
        assert parsed is not None
        netloc = self.app[ROUTES].vendors.proxied_netloc(parsed.origin)
        assert netloc is not None
        return netloc


@asynccontextmanager
async def run_proxy(config: Config, port: int = 0) -> AsyncIterator[RunningProxy]:
    from proxy.cli import make_ssl_context

    app = create_app(config)
    # As serve runs it: requests the parser refuses get the generic answer (web/bad_requests.py).
    runner = BadRequestAppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=make_ssl_context(config))
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield RunningProxy(config, port, app, runner)
    finally:
        await runner.cleanup()


@dataclass
class Reply:
    status: int
    headers: aiohttp.typedefs.LooseHeaders
    body: bytes
    url: str
    history: list[tuple[int, str]]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)  # type: ignore[union-attr]

    def headers_all(self, name: str) -> list[str]:
        return list(self.headers.getall(name, []))  # type: ignore[union-attr]


class Browser:
    """A tiny browser: host-only and domain cookies (as the proxy sets them) and redirects."""

    def __init__(self, proxy: RunningProxy, local_addr: str = "127.0.0.1") -> None:
        self.proxy = proxy
        self.cookies: dict[str, dict[str, str]] = {}  # host-only, by host[:port]
        self.domain_cookies: dict[str, dict[str, str]] = {}  # by domain (no port)
        self.set_cookie_headers: list[tuple[str, str]] = []
        connector = aiohttp.TCPConnector(force_close=True, local_addr=(local_addr, 0))
        self.session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def close(self) -> None:
        await self.session.close()

    def cookie_header(self, host: str) -> str:
        name = host.lower().split(":")[0]
        jar: dict[str, str] = {}
        for domain, bucket in self.domain_cookies.items():
            if name == domain or name.endswith("." + domain):
                jar.update(bucket)
        jar.update(self.cookies.get(host.lower(), {}))
        return "; ".join(f"{k}={v}" for k, v in jar.items())

    def _store(self, host: str, raw: str) -> None:
        self.set_cookie_headers.append((host, raw))
        parsed: SimpleCookie = SimpleCookie()
        parsed.load(raw)
        for name, morsel in parsed.items():
            domain = morsel["domain"].lstrip(".").lower()
            bucket = (self.domain_cookies.setdefault(domain, {}) if domain
                      else self.cookies.setdefault(host.lower(), {}))
            if morsel["max-age"] == "0" or morsel.value == "":
                bucket.pop(name, None)
            else:
                bucket[name] = morsel.value

    async def request(self, method: str, url: str, *, follow: bool = True, headers: dict[str, str] | None = None,
                      data: Any = None, max_redirects: int = 10) -> Reply:
        history: list[tuple[int, str]] = []
        for _ in range(max_redirects + 1):
            parts = urlsplit(url)
            host = parts.netloc
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            send = {"Host": host}
            cookie = self.cookie_header(host)
            if cookie:
                send["Cookie"] = cookie
            send.update(headers or {})
            async with self.session.request(
                method, f"http://127.0.0.1:{self.proxy.port}{target}", headers=send, data=data,
                allow_redirects=False,
            ) as resp:
                body = await resp.read()
                for raw in resp.headers.getall("Set-Cookie", []):
                    self._store(host, raw)
                reply = Reply(resp.status, resp.headers, body, url, history)
            location = reply.header("Location")
            if not follow or location is None or reply.status not in (301, 302, 303, 307, 308):
                return reply
            history.append((reply.status, url))
            url = urljoin(url, location)
            if reply.status in (301, 302, 303):
                method, data = "GET", None
        raise AssertionError("too many redirects")

    async def get(self, url: str, **kw: Any) -> Reply:
        return await self.request("GET", url, **kw)

    async def post(self, url: str, **kw: Any) -> Reply:
        return await self.request("POST", url, **kw)

    async def sign_out(self, everywhere: bool = False, **kw: Any) -> Reply:
        """Sign out as a patron does: the sign-out page, then its button (a POST with the
        page's token)."""
        proxy_host = self.proxy.config.proxy.host
        page = await self.get(f"http://{proxy_host}/logout")
        if 'name="csrf"' not in page.text:
            return page
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        data = {"csrf": csrf, **({"everywhere": "1"} if everywhere else {})}
        return await self.post(f"http://{proxy_host}/logout", data=data, **kw)

    async def sign_in(self, card: str, pin: str, url: str = "") -> Reply:
        """Open /login (for ``url``), then submit the form; follows redirects to the vendor."""
        from urllib.parse import quote

        proxy_host = self.proxy.config.proxy.host
        login = f"http://{proxy_host}/login" + (f"?url={quote(url, safe='')}" if url else "")
        form_page = await self.get(login)
        if form_page.status != 200 or 'name="csrf"' not in form_page.text:
            return form_page
        csrf = form_page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        return await self.post(f"http://{proxy_host}/login",
                               data={"csrf": csrf, "url": url, "card": card, "pin": pin})
