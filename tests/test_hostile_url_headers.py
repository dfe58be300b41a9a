"""Hostile bytes in URL-bearing headers and hostile statuses, against a real proxy on loopback.

A raw-socket vendor answers with exactly the bytes a test gives it (bytes that are not UTF-8 in
``Location``, ``Refresh``, ``Content-Location`` and ``Link``; statuses a proxy must not relay),
and the proxy is spoken to over a raw socket too, so both directions are seen as bytes.

aiohttp decodes a header byte that is not UTF-8 to a lone surrogate ("\\xff" -> "\\udcff") and
its header writer drops surrogates on the way out: before the fix, ``Location: \\xff//evil.example/``
left the proxy as ``Location: //evil.example/``, and a byte of that kind in an absolute URL (a
vendor's ``Location`` or a browser's ``Referer``) was a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import Browser, RunningProxy, base_config, run_proxy

EVIL = b"evil.example"
WAIT = 20.0


def answer(status_line: bytes, *headers: bytes, body: bytes = b"ok") -> bytes:
    """A complete vendor answer, bytes as given, on a connection it closes."""
    head = [status_line, *headers, b"Content-Type: text/plain", b"Content-Length: %d" % len(body),
            b"Connection: close"]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@dataclass
class RawVendor:
    """A vendor on loopback that answers each path with the raw bytes set for it."""

    answers: dict[str, bytes] = field(default_factory=dict)
    requests: list[bytes] = field(default_factory=list)  # request heads, as received
    port: int = 0
    _server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            path = head.split(b" ", 2)[1].decode("latin-1").split("?", 1)[0]
            writer.write(self.answers.get(path, answer(b"HTTP/1.1 200 OK", body=b"vendor page")))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, IndexError):
            pass
        finally:
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

    def last_request_headers(self) -> dict[bytes, bytes]:
        lines = self.requests[-1].split(b"\r\n")[1:]
        return {n.strip().lower(): v.strip() for n, _, v in (line.partition(b":") for line in lines) if n}


@dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def all(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name.lower()]

    def one(self, name: bytes) -> bytes | None:
        found = self.all(name)
        assert len(found) <= 1, found
        return found[0] if found else None


@dataclass
class World:
    proxy: RunningProxy
    vendor: RawVendor
    host: str  # the vendor's proxied host
    cookie: str  # a signed-in patron's cookies for that host

    async def fetch(self, path: str, *extra: bytes, signed_in: bool = True) -> Reply:
        """One request to the proxy, exactly as written, read to the end of its answer."""
        lines = [f"GET {path} HTTP/1.1".encode(), f"Host: {self.host}".encode(), b"Connection: close", *extra]
        if signed_in:
            lines.append(f"Cookie: {self.cookie}".encode())
        reader, writer = await asyncio.open_connection("127.0.0.1", self.proxy.port)
        try:
            writer.write(b"\r\n".join(lines) + b"\r\n\r\n")
            await writer.drain()
            async with asyncio.timeout(WAIT):
                data = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.split(b"\r\n")
        headers = [(n.strip().lower(), v.strip()) for n, _, v in (line.partition(b":") for line in header_lines)]
        return Reply(int(status_line.split(b" ")[1]), headers, body)

    async def vendor_says(self, *headers: bytes, status_line: bytes = b"HTTP/1.1 302 Found") -> Reply:
        self.vendor.answers["/hostile"] = answer(status_line, *headers)
        return await self.fetch("/hostile")


@pytest.fixture
async def world(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[World]:
    caplog.set_level(logging.INFO)
    vendor = RawVendor()
    await vendor.start()
    try:
        config = base_config(tmp_path, [{
            "id": "raw", "title": "Raw", "start": f"{vendor.origin}/start", "hosts": [vendor.origin],
            "groups": ["wolcott"], "anonymous_paths": ["/help/*"],
        }])
        async with run_proxy(config) as proxy:
            host = proxy.proxied_host(vendor.origin)
            browser = Browser(proxy)
            try:
                signed = await browser.sign_in("1000", "1111", f"{vendor.origin}/start")
                assert signed.status == 200, signed.text
                cookie = browser.cookie_header(host)
            finally:
                await browser.close()
            yield World(proxy, vendor, host, cookie)
        # SECURITY: none of these inputs may reach the proxy's catch-all ("Something went wrong").
        unexpected = [r.getMessage() for r in caplog.records if "unexpected error" in r.getMessage()]
        assert not unexpected, unexpected
    finally:
        await vendor.stop()


def assert_leaving_page(reply: Reply, *absent: bytes) -> None:
    """The neutral "this link leaves the library's databases" page, and no redirect at all."""
    assert reply.status == 200, (reply.status, reply.headers)
    assert reply.one(b"X-Libproxy-Reason") == b"leaving"
    assert reply.all(b"Location") == []
    for text in (EVIL, *absent):
        assert text not in reply.body, text


# Values that become lone surrogates (or a C1 control) once aiohttp has decoded them, and a URL
# leaving the proxy once the surrogates are dropped.
HOSTILE_URLS = [
    pytest.param(b"\xff//evil.example/", id="ff-protocol-relative"),
    pytest.param(b"\xefhttp://evil.example/", id="ef-absolute"),
    pytest.param(b"/\xff/evil.example", id="slash-ff-slash"),
    pytest.param(b"/\xed\xa0\x80/evil.example", id="encoded-surrogate"),
    pytest.param(b"\xc2\x85//evil.example/", id="c1-control-nel"),
    pytest.param(b"\xff\xfe//evil.example/", id="ff-fe"),
]


@pytest.mark.parametrize("value", HOSTILE_URLS)
async def test_location_with_bytes_that_are_not_utf8_gets_the_leaving_page(world: World, value: bytes) -> None:
    reply = await world.vendor_says(b"Location: " + value)
    assert_leaving_page(reply)


@pytest.mark.parametrize("status_line", [b"HTTP/1.1 301 Moved Permanently", b"HTTP/1.1 303 See Other",
                                         b"HTTP/1.1 307 Temporary Redirect", b"HTTP/1.1 201 Created"])
async def test_location_with_hostile_byte_under_other_statuses(world: World, status_line: bytes) -> None:
    reply = await world.vendor_says(b"Location: \xff//evil.example/", status_line=status_line)
    assert_leaving_page(reply)


async def test_location_8bit_absolute_vendor_url_is_no_500(world: World) -> None:
    port = str(world.vendor.port).encode()
    reply = await world.vendor_says(b"Location: http://127.0.0.1:" + port + b"/\xff\xfe")
    # Refused like any URL the proxy cannot map; the page offers no link to go on with.
    assert_leaving_page(reply, b"127.0.0.1:" + port, b"href=\"http://127.0.0.1")
    elsewhere = await world.vendor_says(b"Location: http://evil.example/\xff")
    assert_leaving_page(elsewhere)


async def test_location_well_formed_utf8_is_percent_encoded(world: World) -> None:
    relative = await world.vendor_says("Location: /café?q=é".encode())
    assert relative.status == 302
    assert relative.one(b"Location") == b"/caf%C3%A9?q=%C3%A9"
    port = str(world.vendor.port).encode()
    absolute = await world.vendor_says(b"Location: http://127.0.0.1:" + port + "/café".encode())
    assert absolute.status == 302
    assert absolute.one(b"Location") == f"http://{world.host}/caf%C3%A9".encode()
    plain = await world.vendor_says(b"Location: /next")
    assert plain.status == 302 and plain.one(b"Location") == b"/next"


@pytest.mark.parametrize("value", HOSTILE_URLS)
async def test_refresh_with_bytes_that_are_not_utf8_is_dropped(world: World, value: bytes) -> None:
    for header in (b"Refresh: 0; url=" + value, b"Refresh: 0;url='" + value + b"'", b"Refresh: 5, " + value):
        reply = await world.vendor_says(header, status_line=b"HTTP/1.1 200 OK")
        assert reply.status == 200
        assert reply.all(b"Refresh") == [], header
        assert reply.body == b"ok"


async def test_refresh_other_hostile_forms_dropped_and_plain_one_kept(world: World) -> None:
    port = str(world.vendor.port).encode()
    for header in (b"Refresh: 0; url=http://127.0.0.1:" + port + b"/\xff", b"Refresh: \xff0; url=/x",
                   "Refresh: ٣; url=/x".encode()):
        reply = await world.vendor_says(header, status_line=b"HTTP/1.1 200 OK")
        assert reply.status == 200 and reply.all(b"Refresh") == [], header
    kept = await world.vendor_says(b"Refresh: 0; url=/next", status_line=b"HTTP/1.1 200 OK")
    assert kept.one(b"Refresh") == b"0; url=/next"


@pytest.mark.parametrize("value", HOSTILE_URLS)
async def test_content_location_with_bytes_that_are_not_utf8_is_dropped(world: World, value: bytes) -> None:
    reply = await world.vendor_says(b"Content-Location: " + value, status_line=b"HTTP/1.1 200 OK")
    assert reply.status == 200
    assert reply.all(b"Content-Location") == []
    assert reply.body == b"ok"


async def test_content_location_8bit_absolute_dropped_and_plain_one_kept(world: World) -> None:
    port = str(world.vendor.port).encode()
    reply = await world.vendor_says(b"Content-Location: http://127.0.0.1:" + port + b"/\xff\xfe",
                                    status_line=b"HTTP/1.1 200 OK")
    assert reply.status == 200 and reply.all(b"Content-Location") == []
    kept = await world.vendor_says(b"Content-Location: /doc", status_line=b"HTTP/1.1 200 OK")
    assert kept.one(b"Content-Location") == b"/doc"


@pytest.mark.parametrize("value", HOSTILE_URLS)
async def test_link_with_bytes_that_are_not_utf8_is_dropped(world: World, value: bytes) -> None:
    for header in (b"Link: <" + value + b">; rel=preload",
                   b"Link: </ok.css>; rel=preload, <" + value + b">; rel=preload",
                   b"Link: </ok.css>; rel=\xffpreload"):
        reply = await world.vendor_says(header, status_line=b"HTTP/1.1 200 OK")
        assert reply.status == 200
        assert reply.all(b"Link") == [], header
        assert reply.body == b"ok"


async def test_link_plain_one_kept(world: World) -> None:
    kept = await world.vendor_says(b"Link: </ok.css>; rel=preload", status_line=b"HTTP/1.1 200 OK")
    assert kept.one(b"Link") == b"</ok.css>; rel=preload"


async def test_csp_with_a_hidden_reporting_directive_is_dropped(world: World) -> None:
    # "report-\xffuri" would go out as "report-uri" (the directive the proxy removes).
    reply = await world.vendor_says(b"Content-Security-Policy: default-src 'self'; report-\xffuri http://evil.example/r",
                                    status_line=b"HTTP/1.1 200 OK")
    assert reply.status == 200
    assert all(EVIL not in v and b"report" not in v for v in reply.all(b"Content-Security-Policy"))


@pytest.mark.parametrize("referer", [b"/\xff", b"/\xff\xfe?q=1", b"/a\xc2\x85b", b"\xff/"])
async def test_referer_with_bytes_that_are_not_utf8_signed_out_is_dropped(world: World, referer: bytes) -> None:
    """Signed out, on an anonymous path: before the fix, a 500 from quote() on a surrogate."""
    world.vendor.requests.clear()
    if referer.startswith(b"/"):
        value = f"http://{world.host}".encode() + referer
    else:
        value = b"http://" + world.host.encode() + referer  # a byte in the host part
    reply = await world.fetch("/help/x", b"Referer: " + value, signed_in=False)
    assert reply.status == 200, (reply.status, reply.body[:300])
    assert reply.body == b"vendor page"
    assert len(world.vendor.requests) == 1
    # A Referer that cannot be mapped is dropped, never forwarded as it came.
    assert b"referer" not in world.vendor.last_request_headers()


async def test_referer_well_formed_utf8_is_mapped(world: World) -> None:
    world.vendor.requests.clear()
    reply = await world.fetch("/help/x", f"Referer: http://{world.host}/café".encode(), signed_in=False)
    assert reply.status == 200
    assert world.vendor.last_request_headers().get(b"referer") == f"{world.vendor.origin}/caf%C3%A9".encode()


@pytest.mark.parametrize("status_line", [
    pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade", id="101"),
    pytest.param(b"HTTP/1.1 600 Odd", id="600"),
    pytest.param(b"HTTP/1.1 999 Odd", id="999"),
])
async def test_status_outside_200_599_becomes_vendor_unreachable(world: World, status_line: bytes,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    world.vendor.answers["/odd"] = status_line + b"\r\n\r\n" if status_line.startswith(b"HTTP/1.1 101") else answer(
        status_line, b"X-Vendor: 1")
    reply = await world.fetch("/odd")
    assert reply.status == 502, (reply.status, reply.headers)
    assert reply.one(b"X-Libproxy-Reason") == b"vendor-unreachable"
    assert reply.all(b"X-Vendor") == [] and reply.all(b"Upgrade") == []
    assert any("answered with status" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("status", [200, 404, 599])
async def test_statuses_200_to_599_are_relayed(world: World, status: int) -> None:
    world.vendor.answers["/fine"] = answer(b"HTTP/1.1 %d Fine" % status)
    reply = await world.fetch("/fine")
    assert reply.status == status
    assert reply.body == b"ok"


@pytest.mark.parametrize("type_header", [b"", b"Content-Type: text/h\xfftml\r\n", b"Content-Type: nonsense\r\n",
                                         b"Content-Type: \r\n"])
async def test_an_answer_of_no_readable_type_gets_the_proxy_policy(world: World, type_header: bytes) -> None:
    """A browser may sniff such an answer and show it as a page (not rewritten): the proxy's
    policy keeps that page from loading anything from the vendor's own hosts."""
    page = b"<html><script src='http://127.0.0.1:9/x.js'></script></html>"
    world.vendor.answers["/sniffed"] = (b"HTTP/1.1 200 OK\r\n" + type_header + b"Content-Length: %d\r\n"
                                        b"Connection: close\r\n\r\n" % len(page) + page)
    reply = await world.fetch("/sniffed")
    assert reply.status == 200 and reply.all(b"Content-Security-Policy"), reply
    # A readable type that is no document gets none (a control: the check is not "always").
    world.vendor.answers["/plain"] = answer(b"HTTP/1.1 200 OK")
    assert (await world.fetch("/plain")).all(b"Content-Security-Policy") == []
