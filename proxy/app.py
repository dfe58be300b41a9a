"""create_app(config): wires the parts, declares the middleware order, routes and lifecycle.

One middleware, ``proxy_middleware``, does in order:

1. errors: every failure below becomes a plain page (no traceback ever reaches a browser);
2. the Host header decides the request's kind: the proxy's own host, a proxied vendor host,
   or "not configured";
3. the client's address (trusted proxies only) and its library network, if any;
4. the session from the cookie;
5. the proxy's own routes, or the vendor.

On a proxied host only ``/.libproxy/...`` is the proxy's own; every other path is the vendor's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from proxy import context
from proxy.assertion import AssertionMinter, KeyRing
from proxy.config import Config
from proxy.errors import BadInput, DirectoryUnavailable, StoreUnavailable, UpstreamError
from proxy.forward.client import make_client
from proxy.forward.handler import RESERVED_PREFIX, login_redirect, proxy_to_vendor
from proxy.membership import Membership
from proxy.network import LibraryNetwork, Networks, client_address, parse_network
from proxy.patrons import make_authenticator
from proxy.records.service import Records
from proxy.rewrite import HeaderMapper, RewriteTable, rewriting_loop
from proxy.sessions import Session, make_store
from proxy.vendors import VendorMap
from proxy.web import routes as web_routes
from proxy.web.admin import start_admin
from proxy.web.pages import Pages, redirect

log = logging.getLogger("libproxy")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HOST_HEADER = re.compile(r"^[a-z0-9.-]{1,253}(:[0-9]{1,5})?$")
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{20,64}$")


def load_secret(config: Config) -> bytes:
    """The keyed-hash secret: from the configuration, or a random one kept in state_dir."""
    if config.proxy.secret:
        return config.proxy.secret.encode("utf-8")
    path = config.proxy.state_dir / "secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return path.read_text(encoding="utf-8").strip().encode("utf-8")


@web.middleware
async def proxy_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The proxy's only middleware: ``dispatch`` inside a net that turns every failure into a
    plain page. (aiohttp re-wraps each middleware on every request; on the proxying hot path
    one layer instead of several is measurably faster.)"""
    svc = context.services(request)
    pages = svc.pages
    try:
        return await dispatch(request, handler)
    except web.HTTPException as exc:
        if exc.status < 400:
            location = exc.headers.get("Location")
            response = redirect(location, exc.status) if location else web.Response(status=exc.status)
            pages.secure(response)
            return response
        if exc.status == 404:
            return pages.message(404, "Page not found", "There is no page at this address.", reason="not-found")
        if exc.status == 405:
            return pages.message(405, "Not allowed", "This page cannot be used that way.", reason="method")
        return pages.message(exc.status, "Request refused", "The proxy could not use this request.",
                             reason="http-error")
    except BadInput as exc:
        if exc.message == "not-configured":
            return web_routes.not_configured(svc)
        return pages.message(exc.status, "Request refused", exc.message, reason="bad-input")
    except DirectoryUnavailable as exc:
        log.error("patron directory unavailable: %s", type(exc).__name__)
        response = pages.message(
            503, "The library directory is unavailable",
            "The library's patron directory is not answering right now, so new sign-ins cannot "
            "be checked. Please try again in a few minutes. If you are already signed in, you "
            "can keep reading.", reason="directory-unavailable",
        )
        response.headers["Retry-After"] = "60"
        return response
    except StoreUnavailable:
        log.error("session store unavailable")
        return pages.message(503, "Temporarily unavailable", "Please try again in a few minutes.",
                             reason="store-unavailable")
    except UpstreamError as exc:
        if exc.status == 504:
            return pages.message(504, "The database is not answering",
                                 "The database's own site did not answer in time. Please try again "
                                 "in a few minutes.", reason="vendor-timeout")
        return pages.message(502, "The database cannot be reached",
                             "The database's own site could not be reached or sent a broken reply. "
                             "Please try again later.", reason="vendor-unreachable")
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        # The browser went away mid-request: nobody is left to show a page to.
        log.debug("client disconnected")
        return web.Response(status=400)
    except Exception:
        log.exception("unexpected error (request %s)", request.get("libproxy.request_id", "-"))
        return pages.message(500, "Something went wrong",
                             "The proxy hit an unexpected problem. Please try again.", reason="internal")


async def dispatch(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Which host is asked for, who is asking, with which session; then the route or the vendor."""
    svc = context.services(request)
    # SECURITY: only origin-form targets ("/path"): an absolute-form request line
    # ("GET http://evil.example/") would otherwise change what aiohttp thinks the host is.
    if not request.raw_path.startswith("/"):
        raise BadInput("Malformed request.", 400)
    host = request.headers.get("Host", "").lower()
    if not _HOST_HEADER.match(host):
        raise BadInput("Malformed Host header.", 400)
    origin = None
    if host != svc.vendors.proxy_host:
        origin = svc.vendors.origin_for_host(host)
        if origin is None:
            raise BadInput("not-configured", 404)
        request[context.VENDOR_ORIGIN] = origin
    _note_client(request, svc)
    await _load_session(request, svc)
    if origin is None:
        return await handler(request)
    return await vendor_host(request, svc)


def _note_client(request: web.Request, svc: context.Services) -> None:
    """Decide the client's address once, and which library network (if any) it is on."""
    header = svc.config.network.forwarded_header
    address = client_address(request.remote, request.headers.getall(header, ()), header, svc.trusted_proxies)
    request[context.CLIENT] = address
    request[context.LIBRARY_GROUPS] = svc.networks.groups_for(address)


async def _load_session(request: web.Request, svc: context.Services) -> None:
    session_id = context.single_cookie(request, svc.cookie_name)
    if not session_id or not _SESSION_ID.match(session_id):
        return
    session = await svc.store.get(session_id)
    if session is not None and session.membership.source == "network" and not (
        session.membership.groups <= context.library_groups(request)
    ):
        # An in-library session is tied to the library's network: carried home on a
        # laptop, it is worth nothing, and the patron signs in with their card instead.
        session = None
    if session is not None:
        await svc.store.touch(session)
        request[context.SESSION] = session


async def network_session(request: web.Request) -> Session | None:
    """A session for a machine on a library network: its groups, and no patron key at all."""
    groups = context.library_groups(request)
    if not groups:
        return None
    svc = context.services(request)
    session = await svc.store.create(Membership(groups=groups, key=None, source="network"))
    request[context.SESSION] = session
    return session


async def vendor_host(request: web.Request, svc: context.Services) -> web.StreamResponse:
    """Everything on a proxied host: the reserved paths, then the access check, then the vendor."""
    origin = context.vendor_origin(request)
    assert origin is not None
    vendor = svc.vendors.match(origin)
    assert vendor is not None
    path = request.raw_path.split("?", 1)[0]
    if path.startswith(RESERVED_PREFIX):
        if path == RESERVED_PREFIX + "connect" and request.method == "GET":
            return await web_routes.connect(request)
        raise web.HTTPNotFound()
    session = context.current_session(request)
    licensed = session is not None and vendor.licensed_for(session.membership.groups)
    if not licensed and vendor.is_anonymous(request.raw_path):
        # Open resources: forwarded without sign-in and without any membership assertion.
        return await proxy_to_vendor(request, svc, origin, vendor, session, member=False)
    on_response = None
    if session is None and vendor.licensed_for(context.library_groups(request)):
        session = await network_session(request)
        assert session is not None
        new_id = session.id

        def on_response(response: web.StreamResponse) -> None:
            web_routes.set_session_cookie(response, svc, new_id)

    if session is None:
        if request.method in ("GET", "HEAD"):
            return login_redirect(request, origin)
        return svc.pages.message(401, "Please sign in", "Your session has ended. Open the database "
                                 "again from the library's list to sign in.",
                                 links=svc.pages.to_databases("Databases"),
                                 reason="signed-out")
    if not vendor.licensed_for(session.membership.groups):
        return web_routes.not_licensed(svc, vendor)
    return await proxy_to_vendor(request, svc, origin, vendor, session, on_response=on_response)


async def _not_found(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()


def create_app(config: Config) -> web.Application:
    """The proxy as an aiohttp application; its parts open and close with the app."""
    app = web.Application(
        middlewares=[proxy_middleware],
        client_max_size=web_routes.MAX_FORM_BYTES,
        handler_args={"max_field_size": 8190, "max_line_size": 8190},
    )
    app.add_routes(web_routes.routes)
    # Last, a catch-all: requests for proxied hosts never reach the router's result (the
    # middleware sends them to the vendor), but resolving to a real route spares aiohttp from
    # building a 404 exception for every proxied request.
    app.router.add_route("*", "/{tail:.*}", _not_found)
    app.cleanup_ctx.append(_lifecycle(config))
    return app


def _prepare_state(config: Config) -> tuple[bytes, KeyRing]:
    """Create the state directory, the keyed-hash secret and the signing keys if absent."""
    config.proxy.state_dir.mkdir(parents=True, exist_ok=True)
    return load_secret(config), KeyRing(config.assertion.key_file, config.assertion.algorithm)


async def _watch_keys(ring: KeyRing) -> None:
    """Pick up `libproxy keys rotate` without a restart."""
    while True:
        await asyncio.sleep(10)
        if await asyncio.to_thread(ring.reload_if_changed):
            log.info("assertion keys reloaded: %d keys", len(ring.keys))


def _lifecycle(config: Config) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        secret, keys = await asyncio.to_thread(_prepare_state, config)
        https = config.proxy.scheme == "https"
        authenticator = make_authenticator(config, secret)
        await authenticator.start()
        store = make_store(config.sessions)
        client = make_client(config.upstream)
        records = Records(config.records)
        purge = getattr(store, "purge", None)
        if purge is not None:  # Redis expires its keys by itself
            records.retention.add("sessions", purge)
        await records.start()
        vendors = VendorMap(config.vendors, config.proxy.host, config.proxy.scheme)
        table = RewriteTable(vendors)
        header_map = HeaderMapper(table)
        app[context.SERVICES] = context.Services(
            config=config,
            vendors=vendors,
            store=store,
            authenticator=authenticator,
            minter=AssertionMinter(keys, issuer=config.proxy.public_origin, scope=config.library.scope,
                                   lifetime=config.assertion.lifetime),
            client=client,
            pages=Pages(config.library.name, config.proxy.public_origin, config.proxy.host, config.proxy.scheme),
            secret=secret,
            cookie_name="__Host-libproxy" if https else "libproxy",
            secure_cookies=https,
            networks=Networks([
                LibraryNetwork(lib.name, tuple(n for n in map(parse_network, lib.cidrs) if n), lib.groups)
                for lib in config.network.libraries
            ]),
            trusted_proxies=tuple(n for n in map(parse_network, config.network.trusted_proxies) if n),
            records=records,
            rewrite=table,
            header_map=header_map,
            proxy_policy=header_map.proxy_policy(),
        )
        log.info("proxy ready: %d vendors, sessions in %s, patrons from %s, rewriting %s",
                 len(config.vendors), config.sessions.store, config.patrons.source, rewriting_loop())
        watcher = asyncio.create_task(_watch_keys(keys))
        admin = await start_admin(app[context.SERVICES])
        try:
            yield
        finally:
            watcher.cancel()
            if admin is not None:
                await admin.cleanup()
            await records.close()
            await client.close()
            await store.close()
            await authenticator.close()

    return lifecycle
