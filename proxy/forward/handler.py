"""Forwarding one request to a vendor: the steps of one exchange, in order.

The access gate has already decided that this request goes to the vendor, and as whom. Here:
the target URL, the outbound headers (allow-list, then Host), the vendor cookies from the
session's jar, the membership assertion, the body, the request itself, and the answer relayed
back (``relay.py``). Bodies stream in both directions: nothing is buffered whole, so a 1 GB PDF
costs the same memory as a 1 KB page.

Observers (statistics, usage limits) see each exchange; forwarding does not know what they do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy.assertion import AssertionMinter, pairwise_subject
from proxy.errors import BodyTooSlow, UploadTooLarge, VendorTimeout, VendorUnreachable
from proxy.forward.headers import outbound_headers
from proxy.forward.hooks import Answers, Exchange, Observer
from proxy.forward.relay import KeepCookies, relay
from proxy.forward.route import Routes, VendorRoute
from proxy.forward.websocket import is_websocket, proxy_websocket
from proxy.rewrite import if_none_match_to_vendor, rewrite_body
from proxy.sessions import Cookie, Session, SessionStore
from proxy.vendors import Origin

log = logging.getLogger("libproxy.forward")

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM = 1024 * 1024

OnResponse = Callable[[web.StreamResponse], None] | None


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


def _is_small_form(request: web.Request, length: int | None) -> bool:
    return (length is not None and length <= MAX_FORM
            and request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower() == FORM_TYPE)


@dataclass(frozen=True, slots=True)
class Assertion:
    """How the membership assertion is made: the minter, the header it goes in, and what a
    pairwise subject (for the vendors that opted in) is derived from."""

    minter: AssertionMinter
    header: str
    secret: bytes
    scope: str


class Forwarder:
    """Sends requests to vendors and relays their answers. One per application."""

    def __init__(self, *, client: aiohttp.ClientSession, store: SessionStore, assertion: Assertion,
                 answers: Answers, observers: Sequence[Observer], max_upload: int, read_timeout: float,
                 max_body: int) -> None:
        self.client = client
        self.store = store
        self.assertion = assertion
        self.answers = answers
        self.observers = tuple(observers)
        self.max_upload = max_upload
        self.read_timeout = read_timeout
        self.max_body = max_body

    async def forward(self, request: web.Request, routes: Routes, origin: Origin, route: VendorRoute,
                      session: Session | None, *, member: bool, in_library: bool,
                      on_response: OnResponse = None) -> web.StreamResponse:
        """Forward this request to ``origin`` and relay the answer.

        ``member`` says whether the membership assertion goes along (False for anonymous paths
        reached without a licensed session); ``on_response`` may add headers (a new session
        cookie) to whatever response is sent, before it is sent.
        """
        vendor = route.vendor
        raw_path = self._vendor_path(request.raw_path, routes)
        exchange = Exchange(
            vendor_id=vendor.id, path=raw_path, in_library=in_library,
            patron_key=session.membership.key if session is not None else None,
            first_visit=session is not None and vendor.id not in session.visited,
        )
        for observer in self.observers:
            refusal = observer.refuse(exchange)
            if refusal is not None:
                return self.answers.message(refusal)
        if exchange.first_visit and session is not None:
            await self.store.mark_visited(session, vendor.id)

        headers = self._headers(request, routes, origin, route)
        self._add_cookies(headers, session, vendor.id, origin, raw_path)
        if member:
            self._add_assertion(headers, route, session, in_library)

        if is_websocket(request):
            return await proxy_websocket(request, self.client, self.answers, routes, origin, vendor, headers)

        try:
            data, capped = await self._body(request, routes, headers)
        except (UploadTooLarge, BodyTooSlow) as refused:
            return self.answers.message(refused.reason)
        try:
            upstream = await self.client.request(
                request.method, URL(f"{origin}{raw_path}", encoded=True), headers=headers, data=data,
                allow_redirects=False,
            )
        except UploadTooLarge:
            return self.answers.message("upload-too-large")
        except (TimeoutError, aiohttp.ServerTimeoutError):
            log.warning("vendor %s timed out", vendor.id)
            raise VendorTimeout(vendor.id) from None
        except (aiohttp.ClientError, OSError) as exc:
            if capped is not None and capped.exceeded:
                return self.answers.message("upload-too-large")
            log.warning("vendor %s unreachable: %s", vendor.id, type(exc).__name__)
            raise VendorUnreachable(vendor.id) from None

        async with upstream:
            response, exchange.received = await relay(
                request, routes, route, origin, upstream, self.answers, self.max_body,
                self._keep_cookies(session, vendor.id), on_response,
            )
        for observer in self.observers:
            observer.done(exchange)
        return response

    def _vendor_path(self, raw_path: str, routes: Routes) -> str:
        if "?" in raw_path and routes.rewrite.proxy_name in raw_path:
            # Proxied URLs the browser carries in a query (a "return to" parameter from a
            # rewritten link) go back to the vendor in its own terms.
            path, _, query = raw_path.partition("?")
            mapped = rewrite_body(routes.rewrite.to_vendor(), query.encode("latin-1"))
            return path + "?" + mapped.decode("latin-1")
        return raw_path

    def _headers(self, request: web.Request, routes: Routes, origin: Origin, route: VendorRoute) -> CIMultiDict[str]:
        headers = CIMultiDict(outbound_headers(request.headers.items(), route.policy))
        headers["Host"] = origin.netloc
        inm = headers.get("If-None-Match")
        if inm is not None and route.vendor.rewrite:
            # Tags the proxy minted for rewritten bodies go back as the vendor's own.
            mapped = if_none_match_to_vendor(inm, routes.rewrite.fingerprint)
            headers.popall("If-None-Match")
            if mapped is not None:
                headers["If-None-Match"] = mapped
        return headers

    @staticmethod
    def _add_cookies(headers: CIMultiDict[str], session: Session | None, vendor_id: str, origin: Origin,
                     raw_path: str) -> None:
        jar = session.jars.get(vendor_id) if session is not None else None
        if not jar:
            return
        jar_cookie = jar.header_for(origin.host, raw_path.split("?", 1)[0], origin.scheme == "https", time.time())
        if jar_cookie:
            existing = headers.get("Cookie")
            headers["Cookie"] = f"{existing}; {jar_cookie}" if existing else jar_cookie

    def _add_assertion(self, headers: CIMultiDict[str], route: VendorRoute, session: Session | None,
                       in_library: bool) -> None:
        vendor = route.vendor
        a = self.assertion
        extra: dict[str, str | bool] | None = {"on_site": in_library} if vendor.assert_on_site else None
        subject = None
        if vendor.pairwise_id and session is not None and session.membership.key:
            # The only identifier that ever leaves, and only for vendors the library opted in.
            subject = pairwise_subject(a.secret, session.membership.key, vendor.id, a.scope)
        # SECURITY: added last, after the allow-list, so no inbound header can forge or remove it.
        headers[a.header] = a.minter.token(vendor.id, extra, subject)

    async def _body(self, request: web.Request, routes: Routes, headers: CIMultiDict[str]
                    ) -> tuple[bytes | AsyncIterator[bytes] | None, _Capped | None]:
        """The request body to send: a small form read whole (proxied URLs in it mapped back),
        anything else streamed under the upload cap; raises UploadTooLarge or BodyTooSlow."""
        if not request.body_exists:
            return None, None
        length = request.content_length
        if length is not None and length > self.max_upload:
            raise UploadTooLarge()
        if _is_small_form(request, length):
            # A form post may carry proxied URLs (hidden "return to" fields of a rewritten page).
            try:
                async with asyncio.timeout(self.read_timeout):
                    form = await request.read()
            except TimeoutError:
                raise BodyTooSlow() from None
            body = rewrite_body(routes.rewrite.to_vendor(), form)
            headers["Content-Length"] = str(len(body))
            return body, None
        capped = _Capped(request.content, self.max_upload, self.read_timeout)
        if length is not None:
            headers["Content-Length"] = str(length)
        return capped.chunks(), capped

    def _keep_cookies(self, session: Session | None, vendor_id: str) -> KeepCookies:
        """How relay keeps the cookies a vendor sets: in the session's jar, through the store
        (None: no session, the cookies are dropped)."""
        if session is None:
            return None
        store = self.store

        async def keep(cookies: list[Cookie]) -> None:
            await store.set_cookies(session, vendor_id, cookies, time.time())

        return keep
