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
from proxy.errors import BadInput, BodyTooSlow, UploadTooLarge, VendorTimeout, VendorUnreachable
from proxy.forward.headers import outbound_headers
from proxy.forward.hooks import Answers, Exchange, Observer
from proxy.forward.limits import Slots
from proxy.forward.relay import KeepCookies, relay
from proxy.forward.route import Routes, VendorRoute
from proxy.forward.upstream import LEAN_METHODS, AllConnectionsBusy, Answer, LeanClient
from proxy.forward.websocket import is_websocket, proxy_websocket
from proxy.rewrite import if_none_match_to_vendor, rewrite_body
from proxy.sessions import Cookie, Session, SessionStore
from proxy.vendors import Origin

log = logging.getLogger("libproxy.forward")

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM = 1024 * 1024

OnResponse = Callable[[web.StreamResponse], None] | None


@dataclass(frozen=True, slots=True)
class BodyRules:
    """How much of a request body the proxy takes, and how slowly."""

    max_size: int  # bytes; more gets a 413 page
    step_timeout: float  # seconds for each piece to arrive
    grace: float  # seconds every body may take...
    min_rate: int  # ...plus its size at this many bytes per second

    def deadline(self, length: int) -> float:
        """Seconds a body of ``length`` bytes may take to arrive in full."""
        return self.grace + length / self.min_rate


class _Capped:
    """A request body streamed upstream with a size cap and a whole-body deadline.

    aiohttp writes the body from its own task and reports a failure there as a connection
    error, so the reason is also remembered (``exceeded``, ``too_slow``) for the caller to tell
    them apart from a vendor that went away.
    """

    def __init__(self, stream: aiohttp.StreamReader, rules: BodyRules, length: int | None) -> None:
        self.stream = stream
        self.rules = rules
        self.length = length
        self.exceeded = False
        self.too_slow = False

    async def chunks(self) -> AsyncIterator[bytes]:
        rules = self.rules
        started = time.monotonic()
        total = 0
        while True:
            # SECURITY: a body trickled a byte at a time (slow POST) would hold the connection,
            # and the vendor's, for ever: the whole body has a deadline scaled by its size (by
            # what has arrived so far when the size is not announced), and each piece must
            # arrive within the read timeout.
            expected = self.length if self.length is not None else total
            remaining = started + rules.deadline(expected) - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(min(rules.step_timeout, remaining)):
                    chunk = await self.stream.readany()
            except TimeoutError:
                self.too_slow = True
                raise BodyTooSlow() from None
            if not chunk:
                return
            total += len(chunk)
            # SECURITY: aiohttp's client_max_size only guards read()/post(); a streamed upload
            # needs its own cap.
            if total > rules.max_size:
                self.exceeded = True
                raise UploadTooLarge()
            yield chunk


STATIC_TYPES = frozenset({
    "text/css", "text/javascript", "application/javascript", "application/x-javascript",
    "application/ecmascript", "text/ecmascript", "application/font-woff", "application/font-woff2",
    "application/x-font-woff", "application/x-font-ttf", "application/x-font-otf", "application/font-sfnt",
    "application/vnd.ms-fontobject",
})


def _static_asset(upstream: Answer) -> bool:
    """A successful answer with a font, stylesheet, script or image."""
    if upstream.status not in (200, 203, 204, 206, 304):
        return False
    mtype = upstream.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    return mtype in STATIC_TYPES or mtype.startswith(("font/", "image/"))


def _sign_in_needed(request: web.Request) -> web.Response:
    """A 401 the page's script can read (CORS), for a credentialless request the proxy will not
    answer with the vendor's content."""
    headers = {"Cache-Control": "no-store", "Vary": "Origin", "X-Libproxy-Reason": "sign-in-needed"}
    origin = request.headers.get("Origin")
    if origin:
        headers["Access-Control-Allow-Origin"] = origin
    return web.Response(status=401, text="Sign in through the library to use this.\n", headers=headers)


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
                 answers: Answers, observers: Sequence[Observer], bodies: BodyRules, max_body: int,
                 per_client: Slots, per_host: Slots, per_library: Slots | None = None,
                 lean: LeanClient | None = None) -> None:
        self.client = client
        # GET and HEAD without a body (nearly every request) go through the lean client when
        # there is one; uploads and every other method through aiohttp's (see upstream.py).
        self.lean = lean
        self.store = store
        self.assertion = assertion
        self.answers = answers
        self.observers = tuple(observers)
        self.bodies = bodies
        self.max_body = max_body
        self.per_client = per_client
        self.per_host = per_host
        # For a library network's shared address (a branch's machines behind one): a larger share.
        self.per_library = per_library if per_library is not None else per_client

    async def forward(self, request: web.Request, routes: Routes, origin: Origin, route: VendorRoute,
                      session: Session | None, *, member: bool, in_library: bool, client_key: str,
                      on_response: OnResponse = None, static_only: bool = False,
                      shared_address: bool = False) -> web.StreamResponse:
        """Forward this request to ``origin`` and relay the answer.

        ``member`` says whether the membership assertion goes along (False for anonymous paths
        reached without a licensed session); ``client_key`` names the client for fair sharing
        of connections (its session, or its address when anonymous); ``on_response`` may add
        headers (a new session cookie) to whatever response is sent, before it is sent;
        ``static_only`` relays only static assets (see gate.py), anything else gets a CORS 401;
        ``shared_address``: ``client_key`` names a library network's address, which the machines
        of a branch share, so it gets the larger share ``per_library``.
        """
        per_client = self.per_library if shared_address else self.per_client
        async with per_client.hold(client_key) as client_ok:
            if not client_ok:
                log.info("a client reached its %d parallel requests to vendors", per_client.limit)
                return self._busy("busy-client")
            async with self.per_host.hold(origin.netloc) as host_ok:
                if not host_ok:
                    log.warning("all %d connections to vendor %s in use for %.0f s: request turned away",
                                self.per_host.limit, route.vendor.id, self.per_host.wait)
                    return self._busy("busy")
                return await self._forward(request, routes, origin, route, session, member=member,
                                           in_library=in_library, on_response=on_response,
                                           static_only=static_only)

    def _busy(self, reason: str) -> web.Response:
        page = self.answers.message(reason)
        page.headers["Retry-After"] = "10"
        return page

    async def _forward(self, request: web.Request, routes: Routes, origin: Origin, route: VendorRoute,
                       session: Session | None, *, member: bool, in_library: bool,
                       on_response: OnResponse, static_only: bool) -> web.StreamResponse:
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
            # Of concurrent first requests (one instance or several) only one counts the visit.
            exchange.first_visit = await self.store.mark_visited(session, vendor.id)
        try:
            return await self._exchange(request, routes, origin, route, session, exchange, member=member,
                                        in_library=in_library, on_response=on_response, static_only=static_only)
        finally:
            # Every exchange is reported, whatever became of it (refused body, vendor failure,
            # WebSocket, static-only refusal): its session was marked visited above.
            for observer in self.observers:
                observer.done(exchange)

    async def _exchange(self, request: web.Request, routes: Routes, origin: Origin, route: VendorRoute,
                        session: Session | None, exchange: Exchange, *, member: bool, in_library: bool,
                        on_response: OnResponse, static_only: bool) -> web.StreamResponse:
        vendor, raw_path = route.vendor, exchange.path
        headers = self._headers(request, routes, origin, route)
        self._add_cookies(headers, session, vendor.id, origin, raw_path)
        if member:
            self._add_assertion(headers, route, session, in_library)

        if is_websocket(request):
            return await proxy_websocket(request, self.client, self.answers, routes, origin, vendor, headers)

        try:
            data, capped = await self._body(request, routes, headers)
        except (UploadTooLarge, BodyTooSlow) as refused:
            return self._refuse_body(refused)
        try:
            upstream: Answer
            lean = self.lean
            if lean is not None and data is None and request.method in LEAN_METHODS:
                upstream = await lean.request(request.method, origin, raw_path, headers)
            else:
                upstream = await self.client.request(
                    request.method, URL(f"{origin}{raw_path}", encoded=True), headers=headers, data=data,
                    allow_redirects=False,
                )
        except (UploadTooLarge, BodyTooSlow) as refused:
            return self._refuse_body(refused)
        except AllConnectionsBusy:
            log.warning("all [upstream] connections to vendors in use for %.0f s: request turned away",
                        self.per_host.wait)
            return self._busy("busy")
        except (TimeoutError, aiohttp.ServerTimeoutError):
            if capped is not None and capped.too_slow:
                return self._refuse_body(BodyTooSlow())
            log.warning("vendor %s timed out", vendor.id)
            raise VendorTimeout(vendor.id) from None
        except (aiohttp.ClientError, OSError) as exc:
            if capped is not None and capped.exceeded:
                return self._refuse_body(UploadTooLarge())
            if capped is not None and capped.too_slow:
                return self._refuse_body(BodyTooSlow())
            log.warning("vendor %s unreachable: %s", vendor.id, type(exc).__name__)
            raise VendorUnreachable(vendor.id) from None

        async with upstream:
            if static_only and not _static_asset(upstream):
                # SECURITY: a credentialless request gets the vendor's static files only: a
                # client forging the browser's subresource headers gets no licensed content.
                return _sign_in_needed(request)
            response, exchange.received, rewritten = await relay(
                request, routes, route, origin, upstream, self.answers, self.max_body,
                self._keep_cookies(session, vendor.id), on_response,
            )
            if rewritten:
                exchange.rewritten = exchange.received
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

    def _refuse_body(self, refused: BadInput) -> web.Response:
        page = self.answers.message(refused.reason)
        # The rest of the body is not read: the connection cannot carry another request.
        page.force_close()
        return page

    async def _body(self, request: web.Request, routes: Routes, headers: CIMultiDict[str]
                    ) -> tuple[bytes | AsyncIterator[bytes] | None, _Capped | None]:
        """The request body to send, exactly as the browser sent it (the listener does not
        decode request bodies): a small uncompressed form read whole (proxied URLs in it mapped
        back), anything else streamed under the size cap and the deadline; raises
        UploadTooLarge or BodyTooSlow."""
        if not request.body_exists:
            return None, None
        length = request.content_length
        if length is not None and length > self.bodies.max_size:
            raise UploadTooLarge()
        if _is_small_form(request, length) and "Content-Encoding" not in request.headers:
            # A form post may carry proxied URLs (hidden "return to" fields of a rewritten page).
            try:
                async with asyncio.timeout(self.bodies.deadline(length or 0)):
                    form = await request.read()
            except TimeoutError:
                raise BodyTooSlow() from None
            body = rewrite_body(routes.rewrite.to_vendor(), form)
            headers["Content-Length"] = str(len(body))
            return body, None
        capped = _Capped(request.content, self.bodies, length)
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
