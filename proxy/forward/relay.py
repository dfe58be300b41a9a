"""The vendor's answer, on its way to the browser: headers mapped, body streamed or rewritten.

Three body paths:

* **passed through**: binary types (PDF, images, video), ``206`` partial content, vendors with
  ``rewrite = false``: streamed as received, compressed or not, ``Content-Length``, ``ETag`` and
  ``Range`` intact;
* **rewritten, whole**: a text body of known size up to ``SMALL_BODY``, or one that has all
  arrived by the time its first chunk is read, decoded, rewritten and sent in one piece with a
  truthful ``Content-Length``;
* **rewritten, streamed**: decoded under caps (size and ratio, so a bomb gets a 502), rewritten
  chunk by chunk, re-compressed as the browser accepts, sent chunked. The first chunk is
  processed *before* the headers go out, so a malformed or bombing stream still gets a clear
  502 page; a failure later can only break the connection.

Every proxied response gets ``Referrer-Policy``; HTML also gets a second CSP limited to the
proxy's own hosts, so a link the rewriter missed fails in the browser instead of leaking.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from proxy.errors import UpstreamError, VendorUnreachable
from proxy.forward.headers import response_headers
from proxy.forward.hooks import Answers
from proxy.forward.route import Routes, VendorRoute
from proxy.forward.upstream import Answer
from proxy.rewrite import (
    REFERRER_POLICY,
    BodyRewriter,
    choose_encoding,
    etag_for_rewritten,
    is_rewritable,
    make_decoder,
    make_encoder,
    media_type,
    rewrite_body,
)
from proxy.sessions import Cookie, parse_set_cookie
from proxy.vendors import Origin, Vendor, parse_absolute_url

log = logging.getLogger("libproxy.forward")

SMALL_BODY = 64 * 1024
COALESCE_BODY = 16 * 1024
NO_BODY_STATUSES = frozenset({204, 304})
# The vendor statuses relayed: final answers only (see relay()).
MIN_STATUS = 200
MAX_STATUS = 599
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})


_MEDIA_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")


def _is_document(mtype: str) -> bool:
    """Types a browser may render as a page that loads things: HTML, SVG and XML (which can
    embed scripts and references). PDFs, images, JSON... are not given the policy."""
    return mtype in HTML_TYPES or mtype.endswith(("/xml", "+xml"))
OnResponse = Callable[[web.StreamResponse], None] | None
# Keeps the cookies a vendor set in the session's jar; None when there is no session.
KeepCookies = Callable[[list[Cookie]], Awaitable[None]] | None


def _vendor_cookies(upstream: Answer, origin: Origin, path: str, now: float) -> list[Cookie]:
    found = []
    for value in upstream.headers.getall("Set-Cookie", ()):
        cookie = parse_set_cookie(value, origin.host, path, now)
        if cookie is not None:
            found.append(cookie)
    return found


def _map_headers(routes: Routes, origin: Origin, upstream: Answer
                 ) -> tuple[CIMultiDict[str], str | None]:
    """Response headers for the browser, and the Location that leaves the proxy, if any."""
    out: CIMultiDict[str] = CIMultiDict(response_headers(upstream.headers.items()))
    mapper = routes.header_map
    leaving = None
    present = {name.lower() for name in out}
    for name, mapping in (
        ("Location", mapper.location), ("Content-Location", mapper.content_location),
        ("Refresh", mapper.refresh), ("Link", mapper.link),
        ("Content-Security-Policy", mapper.content_security_policy),
        ("Content-Security-Policy-Report-Only", mapper.content_security_policy),
    ):
        if name.lower() not in present:
            continue
        values = out.getall(name)
        del out[name]
        for value in values:
            mapped = mapping(value, origin.scheme)
            if mapped is not None:
                out.add(name, mapped)
            elif name == "Location":
                leaving = value
    acao = out.get("Access-Control-Allow-Origin") if "access-control-allow-origin" in present else None
    if acao is not None:
        mapped_acao = mapper.access_control_allow_origin(acao)
        if mapped_acao is None:
            del out["Access-Control-Allow-Origin"]
        else:
            out["Access-Control-Allow-Origin"] = mapped_acao
    out["Referrer-Policy"] = REFERRER_POLICY
    return out, leaving


async def relay(request: web.Request, routes: Routes, route: VendorRoute, origin: Origin,
                upstream: Answer, answers: Answers, max_body: int, keep_cookies: KeepCookies,
                on_response: OnResponse) -> tuple[web.StreamResponse, int, bool]:
    """Send the vendor's answer on to the browser; returns it with the body bytes received and
    whether the body went through the rewriter."""
    vendor = route.vendor
    if not MIN_STATUS <= upstream.status <= MAX_STATUS:
        # SECURITY: a status the proxy must not pass on: "101 Switching Protocols" to a plain
        # request (a real WebSocket upgrade goes through forward/websocket.py, never here) would
        # hand the browser's connection to whatever the vendor sends next, and 1xx or 600+ are
        # no final answers at all. The same 502 page as for any broken vendor reply.
        log.warning("vendor %s answered with status %d: refused", vendor.id, upstream.status)
        raise VendorUnreachable(vendor.id)
    if keep_cookies is not None and "Set-Cookie" in upstream.headers:
        found = _vendor_cookies(upstream, origin, request.raw_path.split("?", 1)[0], time.time())
        if found:
            await keep_cookies(found)
    out, leaving = _map_headers(routes, origin, upstream)
    if leaving is not None:
        page = answers.leaving(_leaving_target(leaving))
        if on_response is not None:
            on_response(page)
        return page, 0, False

    content_type = upstream.headers.get("Content-Type")
    mtype = media_type(content_type)[0]
    if content_type is None or _is_document(mtype) or not _MEDIA_TYPE.fullmatch(mtype):
        # Added beside the vendor's own policy: browsers enforce both, so this only narrows.
        # SECURITY: an answer with no type, or one that cannot be read ("text/h\xfftml"), is not
        # rewritten, and a browser may sniff it and show it as a page: the policy keeps such a
        # page from loading anything from the vendor's own hosts (the patron's address to them).
        out.add("Content-Security-Policy", routes.proxy_policy)
    has_body = request.method != "HEAD" and upstream.status not in NO_BODY_STATUSES
    rewrite = vendor.rewrite and upstream.status != 206 and content_type is not None and is_rewritable(content_type)
    if rewrite:
        out.popall("Content-Length", None)
        etag = etag_for_rewritten(out.get("ETag"), routes.rewrite.fingerprint)
        out.popall("ETag", None)
        if etag is not None:
            out["ETag"] = etag
    elif upstream.status == 304 and "ETag" in out and routes.rewrite.fingerprint in request.headers.get(
            "If-None-Match", ""):
        # The browser revalidated a rewritten body: answer in the rewritten body's terms.
        etag = etag_for_rewritten(out["ETag"], routes.rewrite.fingerprint)
        out.popall("ETag", None)
        if etag is not None:
            out["ETag"] = etag
    if not has_body:
        response = web.Response(status=upstream.status, reason=upstream.reason, headers=out)
        if not rewrite and upstream.content_length is not None and request.method == "HEAD":
            response.headers["Content-Length"] = str(upstream.content_length)
        if on_response is not None:
            on_response(response)
        return response, 0, False
    length = upstream.content_length if "Transfer-Encoding" not in upstream.headers else None
    if rewrite:
        sent, received = await _rewritten(request, routes, route, origin, upstream, out, length, max_body,
                                          on_response)
        return sent, received, True
    sent, received = await _passed_through(request, vendor, upstream, out, length, on_response)
    return sent, received, False


async def _passed_through(request: web.Request, vendor: Vendor, upstream: Answer,
                          out: CIMultiDict[str], length: int | None, on_response: OnResponse
                          ) -> tuple[web.StreamResponse, int]:
    if length is not None and length <= SMALL_BODY:
        # Small bodies in one piece: one write instead of three, and a vendor failing
        # mid-body still gets a clean 502 page.
        body = await _read(upstream, vendor)
        return await _send_whole(request, upstream, out, body, on_response), len(body)
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=out)
    if on_response is not None:
        on_response(response)
    if length is not None:
        response.content_length = length
    await response.prepare(request)
    received = 0
    try:
        async for chunk in upstream.content.iter_any():
            received += len(chunk)
            await response.write(chunk)
    except (TimeoutError, aiohttp.ClientError) as exc:
        return _broken(request, vendor, response, exc, received)
    await response.write_eof()
    return response, received


async def _rewritten(request: web.Request, routes: Routes, route: VendorRoute, origin: Origin,
                     upstream: Answer, out: CIMultiDict[str], length: int | None, max_body: int,
                     on_response: OnResponse) -> tuple[web.StreamResponse, int]:
    vendor = route.vendor
    matcher = routes.rewrite.to_proxy(origin.scheme)
    vendor_coding = upstream.headers.get("Content-Encoding", "identity").strip().lower()
    small = length is not None and length <= SMALL_BODY
    rules = route.rules
    if vendor_coding == "identity" and small:
        # The commonest case (small API answers, scripts, pages' fragments), in one call. The
        # vendor did not think it worth compressing, and neither is it for us: encoding a small
        # body costs more CPU than the bytes it saves on the way to the browser.
        body = await _read(upstream, vendor)
        if not rules and not matcher.accelerated and not _mentions_a_host(routes, body):
            # Nothing to rewrite (most small answers of an API): a quick test that spares the
            # pure-Python loop its passes. The compiled loop is quicker than the test.
            body_out = body
        else:
            body_out = rewrite_body(matcher, body, rules)
        return await _send_whole(request, upstream, out, body_out, on_response), len(body)

    decoder = make_decoder(vendor_coding, max_size=max_body)
    coding = choose_encoding(request.headers.get("Accept-Encoding"))
    out.popall("Content-Encoding", None)
    if coding != "identity":
        out["Content-Encoding"] = coding
    if "accept-encoding" not in out.get("Vary", "").lower():
        out.add("Vary", "Accept-Encoding")
    encoder = make_encoder(coding)
    chunks = None
    if small:
        first = await _read(upstream, vendor)
    else:
        # Whatever has arrived, as it arrived: aiohttp's read buffer (64 KiB, reading paused at
        # twice that) bounds a chunk to a few hundred KiB, so one rewrite step holds the event
        # loop for well under a millisecond. iter_chunked() would cost a copy to re-cut chunks.
        chunks = upstream.content.iter_any()
        # The first chunk is processed before the headers are sent (see the module docstring).
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            first = b""
        except (TimeoutError, aiohttp.ClientError):
            raise VendorUnreachable(vendor.id) from None
    compressed = vendor_coding != "identity"
    if small or (upstream.content.at_eof() and (not compressed or len(first) <= SMALL_BODY)):
        # All of the body is here before the headers are due (a small body, or a page that came
        # in one read): rewrite it whole and send it in one piece with a truthful
        # Content-Length. Decoding errors and bombs raise here, before anything is sent: a
        # clean 502 page. (A larger compressed body is decoded piece by piece below instead:
        # decoded whole, it could take up to the ratio cap times its size in memory at once.)
        text = rewrite_body(matcher, decoder.decompress(first) + decoder.flush(), rules)
        body = encoder.compress(text) + encoder.finish()
        return await _send_whole(request, upstream, out, body, on_response), len(first)
    assert chunks is not None  # set whenever the body is not small
    received = len(first)
    rewriter = BodyRewriter(matcher, rules=rules)

    def pieces(data: bytes) -> Iterator[bytes]:
        # SECURITY: compressed input goes to the decoder in pieces of at most SMALL_BODY, so
        # what one step holds decoded is bounded by the ratio cap times that, however large
        # the chunk that arrived.
        if not compressed or len(data) <= SMALL_BODY:
            yield data
        else:
            for pos in range(0, len(data), SMALL_BODY):
                yield data[pos : pos + SMALL_BODY]

    def step(data: bytes) -> bytes:
        return encoder.compress(rewriter.feed(decoder.decompress(data)))

    rest_of_first = pieces(first)
    pending = step(next(rest_of_first, b""))
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=out)
    if on_response is not None:
        on_response(response)
    await response.prepare(request)

    async def send(data: Iterator[bytes]) -> None:
        for piece in data:
            out_piece = step(piece)
            if out_piece:
                await response.write(out_piece)

    try:
        if pending:
            await response.write(pending)
        await send(rest_of_first)
        async for chunk in chunks:
            received += len(chunk)
            await send(pieces(chunk))
        tail = rewriter.feed(decoder.flush()) + rewriter.flush()
        await response.write(encoder.compress(tail) + encoder.finish())
    except (TimeoutError, aiohttp.ClientError, UpstreamError) as exc:
        return _broken(request, vendor, response, exc, received)
    await response.write_eof()
    return response, received


async def _send_whole(request: web.Request, upstream: Answer, out: CIMultiDict[str], body: bytes,
                      on_response: OnResponse) -> web.StreamResponse:
    """Send a body known in full, with its Content-Length."""
    if len(body) <= COALESCE_BODY:
        # aiohttp sends a Response's headers and body in one write.
        whole = web.Response(status=upstream.status, reason=upstream.reason, headers=out, body=body)
        if on_response is not None:
            on_response(whole)
        return whole
    # A larger body goes in its own write after the headers: coalescing them would copy it
    # (asyncio before Python 3.12 joins what is written together).
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=out)
    response.content_length = len(body)
    if on_response is not None:
        on_response(response)
    await response.prepare(request)
    await response.write(body)
    await response.write_eof()
    return response


def _mentions_a_host(routes: Routes, body: bytes) -> bool:
    """A quick, conservative test: False only when no configured host can be in ``body``."""
    low = body.lower()
    return any(anchor in low for anchor in routes.rewrite.forward_anchors)


async def _read(upstream: Answer, vendor: Vendor) -> bytes:
    try:
        return await upstream.read()
    except (TimeoutError, aiohttp.ClientError):
        raise VendorUnreachable(vendor.id) from None


def _broken(request: web.Request, vendor: Vendor, response: web.StreamResponse, exc: BaseException,
            received: int) -> tuple[web.StreamResponse, int]:
    if request.transport is None or request.transport.is_closing():
        # The patron went away (a cancelled download, a closed tab): a normal event, still
        # counted by the observers with the bytes that were relayed.
        log.info("a patron left an answer of vendor %s before its end (%d bytes relayed)", vendor.id, received)
        return response, received
    # Headers are gone already; the only honest signal left is a broken connection.
    log.warning("vendor %s failed mid-body: %s", vendor.id, type(exc).__name__)
    if request.transport is not None:
        request.transport.close()
    return response, received


def _leaving_target(location: str) -> str | None:
    """A Location leaving the proxy, as a link the leaving page may show: only a plain
    http(s) URL, re-serialised; anything else gets no link."""
    parsed = parse_absolute_url(location)
    return f"{parsed.origin}{parsed.rest}" if parsed else None
