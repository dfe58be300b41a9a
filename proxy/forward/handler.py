"""Proxying one request to a vendor: access check, outbound request, response back.

The request arrives on a proxied host (``<label>.<proxy host>``), already mapped to a vendor
origin by the host middleware. Bodies stream in both directions: nothing is buffered whole, so a
1 GB PDF costs the same memory as a 1 KB page.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import quote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy import context
from proxy.assertion import pairwise_subject
from proxy.errors import VendorTimeout, VendorUnreachable
from proxy.forward import cookies
from proxy.forward.headers import OutboundPolicy, outbound_headers, response_headers
from proxy.forward.websocket import is_websocket, proxy_websocket
from proxy.records.stats import classify
from proxy.sessions import Session
from proxy.vendors import Origin, Vendor, parse_absolute_url
from proxy.web.pages import redirect

log = logging.getLogger("libproxy.forward")

RESERVED_PREFIX = "/.libproxy/"
SMALL_BODY = 64 * 1024
NO_BODY_STATUSES = frozenset({204, 304})


class UploadTooLarge(Exception):
    pass


async def _capped(stream: aiohttp.StreamReader, limit: int) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in stream.iter_any():
        total += len(chunk)
        # SECURITY: aiohttp's client_max_size only guards read()/post(); a streamed upload
        # needs its own cap.
        if total > limit:
            raise UploadTooLarge()
        yield chunk


def login_redirect(request: web.Request, origin: Origin) -> web.Response:
    svc = context.services(request)
    target = f"{origin}{request.raw_path}"
    location = f"{svc.config.proxy.public_origin}/login?url={quote(target, safe='')}"
    return redirect(location, 302)


def _map_location(svc: context.Services, origin: Origin, value: str) -> str | None:
    """Location/Content-Location for the browser; None when it leaves the configured vendors."""
    if value.startswith("//"):
        value = f"{origin.scheme}:{value}"
    if "://" not in value.split("?", 1)[0]:
        # Relative: resolved by the browser against the proxied host it is on. Refuse the
        # shapes browsers read as another host ("/\evil", "\\evil") or as a script.
        if value.startswith(("/\\", "\\")) or ":" in value.split("/", 1)[0]:
            return None
        return value
    return svc.vendors.to_proxy_url(value)


def _map_back(svc: context.Services, vendor: Vendor, value: str, *, origin_only: bool) -> str | None:
    """A proxied URL (Origin, Referer) back to the vendor URL, only within the same vendor."""
    parsed = parse_absolute_url(value)
    if parsed is None or parsed.origin.scheme != svc.config.proxy.scheme:
        return None
    origin = svc.vendors.origin_for_host(parsed.origin.netloc if not parsed.origin.default_port
                                         else parsed.origin.host)
    if origin is None or svc.vendors.match(origin) is not vendor:
        return None  # SECURITY: cross-site referers never leave
    if origin_only:
        return str(origin)
    return f"{origin}{parsed.rest.split('#', 1)[0]}"


def _policy(svc: context.Services, vendor: Vendor) -> OutboundPolicy:
    """The outbound header policy of one vendor (built once, reused for every request)."""
    return OutboundPolicy(
        map_origin=lambda v: _map_back(svc, vendor, v, origin_only=True),
        map_referer=lambda v: _map_back(svc, vendor, v, origin_only=False),
        user_agent=svc.config.upstream.user_agent,
        cookie_passthrough=vendor.cookie_passthrough,
        proxy_cookie_names=frozenset({svc.cookie_name}),
    )


async def proxy_to_vendor(request: web.Request, origin: Origin, vendor: Vendor, session: Session | None,
                          *, member: bool = True,
                          on_response: Callable[[web.StreamResponse], None] | None = None,
                          ) -> web.StreamResponse:
    """Forward this request to ``origin`` and relay the answer.

    ``member`` says whether the membership assertion goes along (False for anonymous paths
    reached without a licensed session); ``on_response`` may add headers (a new session cookie)
    to whatever response is sent, before it is sent.
    """
    svc = context.services(request)
    cfg = svc.config
    raw_path = request.raw_path
    url = f"{origin}{raw_path}"
    in_library = bool(context.library_groups(request))
    stats = svc.records.stats
    if session is not None and vendor.id not in session.jars:
        # The first request of a session to this vendor: one "session" in the statistics.
        stats.record(vendor.id, kind="session", in_library=in_library)
    kinds = classify(raw_path, vendor.counter) if not vendor.counter.empty else frozenset()
    patron_key = session.membership.key if session is not None else None
    if patron_key and svc.records.security.over_limit(patron_key, kinds | {"request"}):
        return svc.pages.message(
            429, "Please slow down",
            "You have reached the library's limit for this database for now (licences forbid bulk "
            "downloading). Please try again later.", reason="usage-limit")
    policy = svc.policies.get(vendor.id)
    if policy is None:
        policy = svc.policies[vendor.id] = _policy(svc, vendor)
    headers = CIMultiDict(outbound_headers(request.headers.items(), policy))
    headers["Host"] = origin.netloc
    now = time.time()
    jar = session.jars.setdefault(vendor.id, []) if session is not None else []
    path_only = raw_path.split("?", 1)[0]
    jar_cookie = cookies.header_for(jar, origin.host, path_only, origin.scheme == "https", now)
    if jar_cookie:
        existing = headers.get("Cookie")
        headers["Cookie"] = f"{existing}; {jar_cookie}" if existing else jar_cookie
    if member:
        extra: dict[str, str | bool] | None = None
        if vendor.assert_on_site:
            extra = {"on_site": bool(context.library_groups(request))}
        subject = None
        if vendor.pairwise_id and session is not None and session.membership.key:
            # The only identifier that ever leaves, and only for vendors the library opted in.
            subject = pairwise_subject(svc.secret, session.membership.key, vendor.id, cfg.library.scope)
        # SECURITY: added last, after the allow-list, so no inbound header can forge or remove it.
        headers[cfg.assertion.header] = svc.minter.token(vendor.id, extra, subject)

    if is_websocket(request):
        return await proxy_websocket(request, origin, vendor, headers)

    data: AsyncIterator[bytes] | None = None
    length = request.content_length
    if length is not None and length > cfg.proxy.max_upload:
        return svc.pages.message(413, "Upload too large", "The file you tried to send is larger than "
                                 "the library's proxy accepts.", reason="upload-too-large")
    if request.body_exists:
        data = _capped(request.content, cfg.proxy.max_upload)
        if length is not None:
            headers["Content-Length"] = str(length)

    try:
        upstream = await svc.client.request(
            request.method, URL(url, encoded=True), headers=headers, data=data,
            allow_redirects=False,
        )
    except UploadTooLarge:
        return svc.pages.message(413, "Upload too large", "The file you tried to send is larger than "
                                 "the library's proxy accepts.", reason="upload-too-large")
    except (TimeoutError, aiohttp.ServerTimeoutError):
        log.warning("vendor %s timed out", vendor.id)
        raise VendorTimeout(vendor.id) from None
    except (aiohttp.ClientError, OSError) as exc:
        log.warning("vendor %s unreachable: %s", vendor.id, type(exc).__name__)
        raise VendorUnreachable(vendor.id) from None

    async with upstream:
        response, sent = await _relay(request, svc, origin, vendor, session, jar, upstream, now, on_response)
    stats.count_request(vendor.id, raw_path, patterns=vendor.counter, bytes=sent, in_library=in_library,
                        kinds=kinds)
    if patron_key:
        for kind in (*kinds, "request"):
            svc.records.security.note_usage(patron_key, kind)
    return response


async def _relay(request: web.Request, svc: context.Services, origin: Origin, vendor: Vendor,
                 session: Session | None, jar: list[cookies.Record], upstream: aiohttp.ClientResponse,
                 now: float, on_response: Callable[[web.StreamResponse], None] | None
                 ) -> tuple[web.StreamResponse, int]:
    """Send the vendor's answer on to the browser; returns it with the body bytes sent."""
    jar_changed = False
    path_only = request.raw_path.split("?", 1)[0]
    for value in upstream.headers.getall("Set-Cookie", ()):
        record = cookies.parse_set_cookie(value, origin.host, path_only, now)
        if record is not None:
            cookies.store(jar, record, now)
            jar_changed = True
    if jar_changed and session is not None:
        await svc.store.save(session)

    out = CIMultiDict(response_headers(upstream.headers.items()))
    for name in ("Location", "Content-Location"):
        found = out.get(name)
        if found is None:
            continue
        mapped = _map_location(svc, origin, found)
        if mapped is None:
            if name == "Location":
                page = _leaving_page(svc, found)
                if on_response is not None:
                    on_response(page)
                return page, 0
            del out[name]
        else:
            out[name] = mapped

    out["Referrer-Policy"] = "same-origin"
    has_body = request.method != "HEAD" and upstream.status not in NO_BODY_STATUSES
    length = upstream.content_length if "Transfer-Encoding" not in upstream.headers else None
    if has_body and length is not None and length <= SMALL_BODY:
        # Small bodies (most pages' assets) in one piece: one write instead of three, and a
        # vendor failing mid-body still gets a clean 502 page.
        try:
            body = await upstream.read()
        except (TimeoutError, aiohttp.ClientError):
            raise VendorUnreachable(vendor.id) from None
        small = web.Response(status=upstream.status, reason=upstream.reason, headers=out, body=body)
        if on_response is not None:
            on_response(small)
        return small, len(body)
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=out)
    if on_response is not None:
        on_response(response)
    if length is not None:
        response.content_length = length
    await response.prepare(request)
    sent = 0
    if has_body:
        try:
            async for chunk in upstream.content.iter_any():
                sent += len(chunk)
                await response.write(chunk)
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Headers are gone already; the only honest signal left is a broken connection.
            log.warning("vendor %s failed mid-body: %s", vendor.id, type(exc).__name__)
            if request.transport is not None:
                request.transport.close()
            return response, sent
    await response.write_eof()
    return response, sent


def _leaving_page(svc: context.Services, target: str) -> web.Response:
    parsed = parse_absolute_url(target)
    links = [(f"{parsed.origin}{parsed.rest}", "Continue outside the library's proxy")] if parsed else []
    return svc.pages.message(
        200, "This link leaves the library's databases",
        "The database sent you to a site that your library does not provide through this proxy. "
        "If you continue, that site will see your own connection rather than the library's.",
        links=links, reason="leaving",
    )
