"""Proxying one request to a vendor: access check, outbound request, response back.

The request arrives on a proxied host (``<label>.<proxy host>``), already mapped to a vendor
origin by the host middleware. Bodies stream in both directions: nothing is buffered whole, so a
1 GB PDF costs the same memory as a 1 KB page.
"""

from __future__ import annotations

import asyncio
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
from proxy.forward.headers import OutboundPolicy, outbound_headers
from proxy.forward.relay import relay
from proxy.forward.websocket import is_websocket, proxy_websocket
from proxy.records.stats import classify
from proxy.rewrite import if_none_match_to_vendor, rewrite_body
from proxy.sessions import Session
from proxy.vendors import Origin, Vendor
from proxy.web.pages import redirect

log = logging.getLogger("libproxy.forward")

RESERVED_PREFIX = "/.libproxy/"


class UploadTooLarge(Exception):
    pass


class _Capped:
    """A request body streamed upstream with a size cap.

    aiohttp writes the body from its own task and reports a failure there as a connection
    error, so the cap is also remembered in ``exceeded`` for the caller to tell the two apart.
    """

    def __init__(self, stream: aiohttp.StreamReader, limit: int, step_timeout: float) -> None:
        self.stream = stream
        self.limit = limit
        self.step_timeout = step_timeout
        self.exceeded = False

    async def chunks(self) -> AsyncIterator[bytes]:
        total = 0
        while True:
            # SECURITY: a body trickled a byte at a time (slow POST) would hold the connection,
            # and the vendor's, for ever: each piece must arrive within the read timeout.
            async with asyncio.timeout(self.step_timeout):
                chunk = await self.stream.readany()
            if not chunk:
                return
            total += len(chunk)
            # SECURITY: aiohttp's client_max_size only guards read()/post(); a streamed upload
            # needs its own cap.
            if total > self.limit:
                self.exceeded = True
                raise UploadTooLarge()
            yield chunk


FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM = 1024 * 1024


def _is_small_form(request: web.Request, length: int | None) -> bool:
    return (length is not None and length <= MAX_FORM
            and request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower() == FORM_TYPE)


def _too_large(svc: context.Services) -> web.Response:
    return svc.pages.message(413, "Upload too large", "The file you tried to send is larger than the "
                             "library's proxy accepts.", reason="upload-too-large")


def login_redirect(request: web.Request, origin: Origin) -> web.Response:
    svc = context.services(request)
    target = f"{origin}{request.raw_path}"
    location = f"{svc.config.proxy.public_origin}/login?url={quote(target, safe='')}"
    return redirect(location, 302)


def _policy(svc: context.Services, vendor: Vendor, origin: Origin) -> OutboundPolicy:
    """The outbound header policy of one vendor (built once, reused for every request).

    ``origin`` is any origin of the vendor: the Referer check compares vendors, not hosts."""
    mapper = svc.header_map
    return OutboundPolicy(
        map_origin=mapper.origin_to_vendor,
        map_referer=lambda v: mapper.referer_to_vendor(v, origin),
        user_agent=svc.config.upstream.user_agent,
        cookie_passthrough=vendor.cookie_passthrough,
        proxy_cookie_names=frozenset({svc.cookie_name}),
    )


async def proxy_to_vendor(request: web.Request, svc: context.Services, origin: Origin, vendor: Vendor,
                          session: Session | None,
                          *, member: bool = True,
                          on_response: Callable[[web.StreamResponse], None] | None = None,
                          ) -> web.StreamResponse:
    """Forward this request to ``origin`` and relay the answer.

    ``member`` says whether the membership assertion goes along (False for anonymous paths
    reached without a licensed session); ``on_response`` may add headers (a new session cookie)
    to whatever response is sent, before it is sent.
    """
    cfg = svc.config
    raw_path = request.raw_path
    if "?" in raw_path and svc.rewrite.proxy_name in raw_path:
        # Proxied URLs the browser carries in a query (a "return to" parameter from a rewritten
        # link) go back to the vendor in its own terms.
        path, _, query = raw_path.partition("?")
        raw_path = path + "?" + rewrite_body(svc.rewrite.to_vendor(), query.encode("latin-1")).decode("latin-1")
    url = f"{origin}{raw_path}"
    in_library = bool(context.library_groups(request))
    stats = svc.records.stats
    if session is not None and vendor.id not in session.jars:
        # The first request of a session to this vendor: one "session" in the statistics.
        stats.record(vendor.id, kind="session", in_library=in_library)
    kinds = classify(raw_path, vendor.counter) if not vendor.counter.empty else frozenset()
    patron_key = session.membership.key if session is not None else None
    limits = svc.config.records.security.usage_limits
    if patron_key and limits and svc.records.security.over_limit(patron_key, kinds | {"request"}):
        return svc.pages.message(
            429, "Please slow down",
            "You have reached the library's limit for this database for now (licences forbid bulk "
            "downloading). Please try again later.", reason="usage-limit")
    policy = svc.policies.get(vendor.id)
    if policy is None:
        policy = svc.policies[vendor.id] = _policy(svc, vendor, origin)
    headers = CIMultiDict(outbound_headers(request.headers.items(), policy))
    headers["Host"] = origin.netloc
    inm = headers.get("If-None-Match")
    if inm is not None and vendor.rewrite:
        # Tags the proxy minted for rewritten bodies go back as the vendor's own.
        mapped_inm = if_none_match_to_vendor(inm, svc.rewrite.fingerprint)
        headers.popall("If-None-Match")
        if mapped_inm is not None:
            headers["If-None-Match"] = mapped_inm
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
        return _too_large(svc)
    body: bytes | None = None
    capped: _Capped | None = None
    if request.body_exists and _is_small_form(request, length):
        # A form post may carry proxied URLs (hidden "return to" fields of a rewritten page).
        try:
            async with asyncio.timeout(cfg.upstream.read_timeout):
                form = await request.read()
        except TimeoutError:
            return svc.pages.message(408, "The form took too long to arrive", "Please try again.",
                                     reason="slow-body")
        body = rewrite_body(svc.rewrite.to_vendor(), form)
        headers["Content-Length"] = str(len(body))
    elif request.body_exists:
        capped = _Capped(request.content, cfg.proxy.max_upload, cfg.upstream.read_timeout)
        data = capped.chunks()
        if length is not None:
            headers["Content-Length"] = str(length)

    try:
        upstream = await svc.client.request(
            request.method, URL(url, encoded=True), headers=headers, data=data if body is None else body,
            allow_redirects=False,
        )
    except UploadTooLarge:
        return _too_large(svc)
    except (TimeoutError, aiohttp.ServerTimeoutError):
        log.warning("vendor %s timed out", vendor.id)
        raise VendorTimeout(vendor.id) from None
    except (aiohttp.ClientError, OSError) as exc:
        if capped is not None and capped.exceeded:
            return _too_large(svc)
        log.warning("vendor %s unreachable: %s", vendor.id, type(exc).__name__)
        raise VendorUnreachable(vendor.id) from None

    async with upstream:
        response, sent = await relay(request, svc, origin, vendor, session, jar, upstream, on_response)
    stats.count_request(vendor.id, raw_path, patterns=vendor.counter, bytes=sent, in_library=in_library,
                        kinds=kinds)
    if patron_key and limits:
        for kind in (*kinds, "request"):
            svc.records.security.note_usage(patron_key, kind)
    return response
