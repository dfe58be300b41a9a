"""create_app(config): wires the parts, declares the middleware, routes and lifecycle.

One middleware, ``proxy_middleware``, owns every request: gather facts, decide, act.

1. errors: every failure below becomes a plain page (no traceback ever reaches a browser);
2. facts: the Host header names the proxy, a proxied vendor host (its route), or nothing
   configured; the client's address (trusted proxies only) and its library network; the
   session from the cookie;
3. decide: ``gate.decide(facts)``, pure;
4. act: the proxy's own routes, a page, or ``Forwarder.forward`` to the vendor.

On a proxied host only ``/.libproxy/...`` is the proxy's own; every other path is the vendor's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web, web_response
from aiohttp.http import HttpVersion10, HttpVersion11

from proxy import context, gate, metrics
from proxy.assertion import AssertionMinter, KeyRing
from proxy.config import Config, library_share, operator_addresses
from proxy.config import warnings as config_warnings
from proxy.errors import BadInput, DirectoryUnavailable, StoreUnavailable, UpstreamError
from proxy.forward.client import EgressResolver, make_client
from proxy.forward.handler import MAX_FORM, Assertion, BodyRules, Forwarder
from proxy.forward.limits import Slots
from proxy.forward.route import Routes, VendorRoute
from proxy.forward.upstream import LeanClient
from proxy.membership import Membership
from proxy.metrics import METRICS, MeasuredSlots, Metrics, MetricsObserver, measured
from proxy.migration import old_link
from proxy.network import LibraryNetwork, Networks, parse_network
from proxy.patrons import make_authenticator
from proxy.records.needhosts import NeededHosts
from proxy.records.observer import UsageObserver
from proxy.records.scrub import allow_addresses
from proxy.records.service import Records
from proxy.rewrite import rewriting_loop
from proxy.sessions import Session, make_store
from proxy.shared import SHARED, load_secret, open_shared
from proxy.vendors import Origin, Vendor, VendorMap, parse_absolute_url
from proxy.web import routes as web_routes
from proxy.web.admin import start_admin
from proxy.web.forms import expect_within
from proxy.web.pages import Pages, redirect, sign_in_link
from proxy.web.routes import CSP_REPORT_PATH

log = logging.getLogger("libproxy")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HOST_HEADER = re.compile(r"^[a-z0-9.-]{1,253}(:[0-9]{1,5})?\Z")
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{20,64}\Z")


@web.middleware
async def proxy_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The proxy's only middleware: ``serve`` inside a net that turns every failure into a plain
    page. (aiohttp re-wraps each middleware on every request; on the proxying hot path one layer
    instead of several is measurably faster.)"""
    pages = request.app[context.PAGES]
    try:
        pages.begin(request)  # the request's language, for every page it may get
        return await serve(request, handler)
    except web.HTTPException as exc:
        if exc.status < 400:
            location = exc.headers.get("Location")
            response = redirect(location, exc.status) if location else web.Response(status=exc.status)
            pages.secure(response)
            return response
        if exc.status == 404:
            return pages.message("not-found")
        if exc.status == 405:
            return pages.message("method")
        return pages.message("http-error", status=exc.status)
    except BadInput as exc:
        refused = pages.message(exc.reason, status=exc.status)
        if exc.reason in _FRAMING:
            # SECURITY: after faulty framing nothing more on this connection can be trusted to
            # be what the client meant (request smuggling): answer, then close it.
            refused.force_close()
        return refused
    except DirectoryUnavailable as exc:
        log.error("patron directory unavailable: %s", type(exc).__name__)
        response = pages.message("directory-unavailable")
        response.headers["Retry-After"] = "60"
        return response
    except StoreUnavailable:
        # The store logs the cause itself, once per ten seconds: not a line per request.
        return pages.message("store-unavailable")
    except UpstreamError as exc:
        return pages.message("vendor-timeout" if exc.status == 504 else "vendor-unreachable")
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        # The browser went away mid-request: nobody is left to show a page to.
        log.debug("client disconnected")
        return web.Response(status=400)
    except Exception:
        log.exception("unexpected error (request %s)", request.get("libproxy.request_id", "-"))
        return pages.message("internal")


SERVER_NAME = "libproxy"
_FRAMING = frozenset({"malformed-request", "malformed-host", "http-version"})


async def serve(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Gather the request's facts, let the gate decide, act on the decision."""
    app = request.app
    # SECURITY: only origin-form targets ("/path"): an absolute-form request line
    # ("GET http://evil.example/") would otherwise change what aiohttp thinks the host is.
    if not request.raw_path.startswith("/"):
        raise BadInput("malformed-request")
    if request.version not in _HTTP1:
        # SECURITY: "GET / HTTP/2.0" in text is no HTTP/2; only what the proxy speaks is served.
        raise BadInput("http-version", 505)
    if "Transfer-Encoding" in request.headers and not _plain_chunked(request):
        raise BadInput("malformed-request")
    if request.method in _REFUSED_METHODS:
        # SECURITY: CONNECT would ask a vendor to open a tunnel with the patron's assertion and
        # cookies, and TRACE would echo them (the assertion among them) back to the page's script.
        raise BadInput("method", 405)
    host = request.headers.get("Host", "").lower()
    if not _HOST_HEADER.match(host):
        raise BadInput("malformed-host")
    routes = app[context.ROUTES]
    target = None
    if host == routes.vendors.proxy_host:
        kind = gate.HostKind.PROXY
    else:
        target = routes.for_host(host)
        if target is None:
            # Decided before anything else is looked at: no session lookup for unknown hosts.
            config = app[context.CONFIG]
            if web_routes.own_address(host, config.proxy.listen_port):
                # http://localhost:8080/ typed for the proxy: its own host, not "not configured".
                return redirect(f"{config.proxy.public_origin}/databases", 302)
            moved = old_link(host, request.raw_path, config.old_hosts, routes.vendors, config.proxy.public_origin)
            if moved is not None:
                return redirect(moved, 301)
            return _act_not_configured(app)
        kind = gate.HostKind.VENDOR
    library = _note_client(request, app[context.CLIENTS])
    session = await _load_session(request, app, library)
    path = request.raw_path.split("?", 1)[0]
    vendor = target[1].vendor if target else None
    # The metrics' label, so they need not resolve the host again (no target: the proxy's own host).
    request[metrics.VENDOR] = vendor.id if vendor is not None else metrics.OWN_PAGES
    facts = gate.Facts(host=kind, method=request.method, path=path, vendor=vendor,
                       session=gate.Patron.of(session.membership if session else None), library=library,
                       subresource=session is None and vendor is not None and _subresource(request, routes, vendor))
    decision = gate.decide(facts)
    action = decision.action
    if action is gate.Action.OWN_PAGE:
        return await handler(request)
    if action is gate.Action.FORWARD and target is not None:
        return await _forward(request, routes, target, session, decision, library)
    return await _act(request, decision, target)


_SUBRESOURCE_DESTS = frozenset({"font", "script", "style", "image", "empty"})


def _subresource(request: web.Request, routes: Routes, vendor: Vendor) -> bool:
    """True for a cross-origin subresource fetch in CORS mode by a page of this same vendor (a
    browser sends those without cookies, so they arrive without a session)."""
    headers = request.headers
    if headers.get("Sec-Fetch-Mode") != "cors" or headers.get("Sec-Fetch-Dest", "") not in _SUBRESOURCE_DESTS:
        return False
    origin = headers.get("Origin")
    mapped = routes.header_map.origin_to_vendor(origin) if origin else None
    parsed = parse_absolute_url(mapped) if mapped else None
    return parsed is not None and routes.vendors.match(parsed.origin) is vendor


_HTTP1 = frozenset({HttpVersion10, HttpVersion11})
_REFUSED_METHODS = frozenset({"CONNECT", "TRACE"})


def _plain_chunked(request: web.Request) -> bool:
    """True when a Transfer-Encoding header is exactly "chunked" on HTTP/1.1.

    SECURITY: RFC 9112 6.1: a coding other than chunked (``gzip, chunked``), or chunked on an
    HTTP/1.0 request, is faulty framing that another server on the path may read differently
    (request smuggling); aiohttp accepts both, so they are refused here.
    """
    values = request.headers.getall("Transfer-Encoding")
    return request.version >= (1, 1) and len(values) == 1 and values[0].strip().lower() == "chunked"


def _act_not_configured(app: web.Application) -> web.StreamResponse:
    return app[context.PAGES].message("not-configured")


async def _act(request: web.Request, decision: gate.Decision, target: tuple[Origin, VendorRoute] | None
               ) -> web.StreamResponse:
    """Every decision but forwarding and the proxy's own pages."""
    app = request.app
    action = decision.action
    if action is gate.Action.CONNECT:
        return await web_routes.connect(request)
    if action is gate.Action.SIGN_IN and target is not None:
        return redirect(sign_in_link(app[context.SITE].public_origin, f"{target[0]}{request.raw_path}"), 302)
    if action is gate.Action.SIGNED_OUT:
        return app[context.PAGES].message("signed-out-vendor")
    if action is gate.Action.NOT_LICENSED and target is not None:
        return web_routes.not_licensed(app[context.PAGES], app[context.CONFIG].group_names, target[1].vendor)
    if action is gate.Action.NOT_FOUND:
        raise web.HTTPNotFound()
    return _act_not_configured(app)


async def _forward(request: web.Request, routes: Routes, target: tuple[Origin, VendorRoute], session: Session | None,
                   decision: gate.Decision, library: frozenset[str]) -> web.StreamResponse:
    app = request.app
    origin, route = target
    forwarder = app[context.FORWARDER]
    if not decision.new_network_session:
        # Fair shares of the vendors' connections: per session, or per address for anonymous use.
        # A library network's machines often share one public address: their sessionless loads
        # (fonts, scripts) share a larger allowance, so a branch's pages do not queue for one.
        shared_address = session is None and decision.member and bool(library)
        client_key = f"s:{session.id}" if session is not None else f"a:{context.client(request)}"
        return await forwarder.forward(request, routes, origin, route, session, member=decision.member,
                                       in_library=bool(library), client_key=client_key,
                                       static_only=decision.static_only, shared_address=shared_address)
    # Like EZproxy's AutoLoginIP: in the library, no sign-in; the session has no patron key.
    store = app[context.SESSIONS]
    session = await store.create(Membership.on_network(decision.new_network_session))
    request[context.SESSION] = session
    site, new_id = app[context.SITE], session.id
    cookie_set = False

    def on_response(response: web.StreamResponse) -> None:
        nonlocal cookie_set
        cookie_set = True
        web_routes.set_session_cookie(response, site, new_id)

    try:
        response = await forwarder.forward(request, routes, origin, route, session, member=decision.member,
                                           in_library=True, client_key=f"s:{new_id}", on_response=on_response)
    except BaseException:
        if not cookie_set:
            # No answer carried its cookie: a session nobody can use is not kept.
            with contextlib.suppress(Exception):
                await store.delete(new_id)
        raise
    if not cookie_set:
        if not response.prepared:
            # The forwarder's own pages ("busy", a usage limit, a refused upload) carry the cookie
            # too, so the next request of this machine reuses the session instead of making another.
            on_response(response)
        else:
            # Sent without it (a WebSocket's handshake): nobody can use the session.
            with contextlib.suppress(Exception):
                await store.delete(new_id)
    return response


def _note_client(request: web.Request, clients: context.Clients) -> frozenset[str]:
    """Decide the client's address once, and which library network (if any) it is on."""
    address = clients.address(request)
    if address is not None:
        request[context.CLIENT] = address
    library = clients.networks.groups_for(address)
    request[context.LIBRARY_GROUPS] = library
    return library


async def _load_session(request: web.Request, app: web.Application, library: frozenset[str]) -> Session | None:
    session_id = context.single_cookie(request, app[context.SITE].cookie_name)
    if not session_id or not _SESSION_ID.match(session_id):
        return None
    store = app[context.SESSIONS]
    session = await store.get(session_id)
    if session is None:
        return None
    patron = gate.Patron.of(session.membership)
    if patron is not None and not gate.session_usable(patron, library):
        # Carried home on a laptop, an in-library session is worth nothing (see gate.py).
        return None
    await store.touch(session)
    request[context.SESSION] = session
    return session


# Uploads to vendors: invited only within [proxy] max_upload.
_expect_continue = expect_within(lambda request: request.app[context.CONFIG].proxy.max_upload,
                                 lambda request: request.app[context.PAGES].message("upload-too-large"))


async def _not_found(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()


def create_app(config: Config) -> web.Application:
    """The proxy as an aiohttp application; its parts open and close with the app."""
    allow_addresses(operator_addresses(config))
    # SECURITY: no version numbers for anyone to match against advisories. aiohttp adds its
    # "Server: Python/x aiohttp/y" default to every response that has none, the answers its own
    # parser sends to malformed requests included (outside any application hook), from this
    # module-level name: replacing it covers them all, at no cost per response.
    web_response.SERVER_SOFTWARE = SERVER_NAME  # type: ignore[attr-defined]  # a module global, re-exported
    app = web.Application(
        middlewares=[measured(proxy_middleware)],
        # The largest body any handler reads whole: a vendor form post (Forwarder reads small
        # forms up to MAX_FORM to map proxied URLs back). The sign-in form has its own, smaller
        # limit (MAX_FORM_BYTES); uploads stream under [proxy] max_upload.
        client_max_size=MAX_FORM,
        # SECURITY: request bodies reach vendors exactly as the browser sent them: decoding
        # them here would send decompressed bytes still labelled with their Content-Encoding.
        # A refused body (too large, too slow) is read for at most 2 s more before the connection
        # closes, so the client sees the answer instead of a reset (aiohttp's default: 10 s).
        handler_args={"max_field_size": 8190, "max_line_size": 8190, "auto_decompress": False,
                      "lingering_time": 2.0},
    )
    app.add_routes(web_routes.routes)
    # Last, a catch-all: requests for proxied hosts never reach the router's result (the
    # middleware sends them to the vendor), but resolving to a real route spares aiohttp from
    # building a 404 exception for every proxied request.
    app.router.add_route("*", "/{tail:.*}", _not_found, expect_handler=_expect_continue)
    app[METRICS] = Metrics()
    app.cleanup_ctx.append(_lifecycle(config))
    return app


def build_routes(config: Config, site: context.Site) -> Routes:
    """The vendor routes of one configuration (built once; a new configuration builds anew)."""
    vendors = VendorMap(config.vendors, config.proxy.host, config.proxy.scheme)
    return Routes(vendors, user_agent=config.upstream.user_agent, proxy_cookie_names=site.cookie_names,
                  reduce_user_agent=config.privacy.user_agent == "reduce",
                  first_language=config.privacy.accept_language == "first",
                  report_uri=f"{config.proxy.public_origin}{CSP_REPORT_PATH}")


def make_clients(config: Config) -> context.Clients:
    """Who clients are: trusted proxies and library networks (rebuilt whole on reload)."""
    return context.Clients(
        networks=Networks([
            LibraryNetwork(lib.name, tuple(n for n in map(parse_network, lib.cidrs) if n), lib.groups)
            for lib in config.network.libraries
        ]),
        trusted_proxies=tuple(n for n in map(parse_network, config.network.trusted_proxies) if n),
        forwarded_header=config.network.forwarded_header,
    )


def _prepare_state(config: Config) -> tuple[bytes, KeyRing]:
    """Create the state directory, the keyed-hash secret and the signing keys if absent."""
    config.proxy.state_dir.mkdir(parents=True, exist_ok=True)
    return load_secret(config), KeyRing(config.assertion.key_file, config.assertion.algorithm)


def _lifecycle(config: Config) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        secret, keys = await asyncio.to_thread(_prepare_state, config)
        authenticator = make_authenticator(config, secret)
        await authenticator.start()
        store = make_store(config.sessions)
        resolver = EgressResolver(config.upstream.hosts)
        client = make_client(config.upstream, resolver)
        trust = await asyncio.to_thread(ssl.create_default_context)  # reads the trust store: off the loop
        lean = LeanClient(resolver, ssl_context=trust, connect_timeout=config.upstream.connect_timeout,
                          read_timeout=config.upstream.read_timeout, idle_per_host=config.upstream.limit_per_host,
                          limit=config.upstream.limit, wait=config.upstream.queue_wait)
        records = Records(config.records)
        records.retention.add("sessions", store.purge)
        await records.start()
        shared = await open_shared(config, keys, records.security, secret)
        needed = NeededHosts(config.proxy.state_dir / "needed-hosts.json",
                             retention_days=int(config.records.detail_retention // 86400), tz=config.records.tz)
        await needed.start()
        records.retention.add("needed-hosts", needed.purge)
        site = context.Site.from_config(config)
        routes = build_routes(config, site)
        pages = Pages.from_config(config)
        minter = AssertionMinter(shared.keys, issuer=config.proxy.public_origin, scope=config.library.scope,
                                 lifetime=config.assertion.lifetime)
        app[context.CONFIG] = config
        app[context.SITE] = site
        app[context.ROUTES] = routes
        app[context.SESSIONS] = store
        app[context.PATRONS] = authenticator
        app[context.PAGES] = pages
        app[context.RECORDS] = records
        app[context.ASSERTIONS] = minter
        app[context.NEEDED_HOSTS] = needed
        app[context.CLIENTS] = make_clients(config)
        app[context.FORWARDER] = Forwarder(
            client=client, store=store, answers=pages,
            assertion=Assertion(minter, config.assertion.header, secret, config.library.scope),
            observers=[UsageObserver(records, {v.id: v.counter for v in routes.vendors.vendors}),
                       MetricsObserver(app[METRICS])],
            bodies=BodyRules(max_size=config.proxy.max_upload, step_timeout=config.upstream.read_timeout,
                             grace=config.proxy.body_grace, min_rate=config.proxy.body_min_rate),
            max_body=config.upstream.max_body,
            per_client=Slots(config.upstream.per_client, config.upstream.queue_wait),
            per_library=Slots(library_share(config.upstream), config.upstream.queue_wait),
            per_host=MeasuredSlots(config.upstream.limit_per_host, config.upstream.queue_wait, app[METRICS], app),
            lean=lean,
        )
        for warning in config_warnings(config):
            log.warning("%s", warning)
        log.info("proxy ready: %d vendors, sessions in %s, patrons from %s, rewriting %s",
                 len(config.vendors), config.sessions.store, config.patrons.source, rewriting_loop())
        app[SHARED] = shared
        watcher = asyncio.create_task(shared.watch_keys())
        admin = await start_admin(app)
        try:
            yield
        finally:
            watcher.cancel()
            if admin is not None:
                await admin.cleanup()
            await records.close()
            await shared.close()
            await needed.close()
            await lean.close()
            await client.close()
            await store.close()
            await authenticator.close()

    return lifecycle
