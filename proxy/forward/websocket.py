"""WebSocket upgrades to configured vendor hosts, with the same header policy as any request.

The browser's handshake is checked first, then the vendor's: the browser's connection is only
upgraded once the vendor has answered with a valid 101, so a bogus handshake never opens a
tunnel. A cross-site ``Origin`` (another site's page opening a socket to a proxied host with the
patron's cookie) is refused. Messages are relayed as they are: the proxy does not rewrite
WebSocket payloads.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy.errors import VendorUnreachable
from proxy.forward.hooks import Answers
from proxy.forward.route import Routes
from proxy.vendors import Origin, Vendor, parse_absolute_url

log = logging.getLogger("libproxy.forward")

MAX_MESSAGE = 4 * 1024 * 1024
# Set by the client library itself for the upstream handshake.
_HANDSHAKE = ("Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions", "Sec-WebSocket-Protocol",
              "Upgrade", "Connection", "Content-Length")


def is_websocket(request: web.Request) -> bool:
    return request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"


async def proxy_websocket(request: web.Request, client: aiohttp.ClientSession, answers: Answers, routes: Routes,
                          origin: Origin, vendor: Vendor, headers: CIMultiDict[str]) -> web.StreamResponse:
    """Relay one WebSocket between the browser and the vendor; ``headers`` are the policy's."""
    probe = web.WebSocketResponse()
    if not probe.can_prepare(request).ok:
        return answers.message("bad-websocket")
    # SECURITY: a socket may only be opened by a page of the same vendor (cross-site WebSocket
    # hijacking would otherwise ride on the patron's cookie).
    if "Origin" in request.headers and not _same_vendor(routes, headers.get("Origin"), vendor):
        return answers.message("websocket-origin")
    for name in _HANDSHAKE:
        headers.popall(name, None)
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    scheme = "wss" if origin.scheme == "https" else "ws"
    target = URL(f"{scheme}://{origin.netloc}{request.raw_path}", encoded=True)
    try:
        upstream = await client.ws_connect(
            target, headers=headers, protocols=protocols, max_msg_size=MAX_MESSAGE, autoping=True,
        )
    except aiohttp.WSServerHandshakeError as exc:
        log.warning("vendor %s refused a websocket: %s", vendor.id, exc.status)
        return answers.message("websocket-refused")
    except (TimeoutError, aiohttp.ClientError, OSError):
        raise VendorUnreachable(vendor.id) from None
    browser = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else (),
                                    max_msg_size=MAX_MESSAGE, autoping=True)
    try:
        await browser.prepare(request)
        await asyncio.gather(_pump(upstream, browser), _pump(browser, upstream))
    finally:
        await upstream.close()
        await browser.close()
    return browser


def _same_vendor(routes: Routes, mapped_origin: str | None, vendor: Vendor) -> bool:
    parsed = parse_absolute_url(mapped_origin) if mapped_origin else None
    return parsed is not None and routes.vendors.match(parsed.origin) is vendor


async def _pump(source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
                sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> None:
    async for message in source:
        if sink.closed:
            break
        if message.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        else:
            break
    if not sink.closed:
        await sink.close()
