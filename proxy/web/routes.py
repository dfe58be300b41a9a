"""Routes of the proxy's own host: sign-in, sign-out, database list, JWKS, health.

Sign-in across proxied hosts: each proxied host (``<label>.<proxy host>``) gets its own
host-only session cookie. After sign-in the patron is sent to
``<proxied host>/.libproxy/connect?ticket=...`` with a one-time, one-minute ticket; that host
trades it for its cookie and redirects to the page asked for. No cookie is ever set for the
parent domain, so a vendor's script on one proxied host cannot plant or read another host's.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Mapping
from urllib.parse import quote

from aiohttp import web

from proxy import context
from proxy.errors import BadInput, DirectoryUnavailable
from proxy.membership import Membership
from proxy.patrons.base import CardRefused
from proxy.records.privacy import PrivacyFacts, privacy_summary
from proxy.records.report import PROXY_VENDOR
from proxy.vendors import ParsedURL, Vendor, parse_absolute_url
from proxy.web.pages import redirect

log = logging.getLogger("libproxy.web")

_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,64}")
# A form body sent slower than this is abandoned (a slow-POST attack holds a connection open).
FORM_DEADLINE = 30.0
TICKET_TTL = 60.0
MAX_CHAIN = 8  # hosts given a cookie in one sign-in; the rest get theirs on first use
MAX_FORM_BYTES = 16 * 1024

routes = web.RouteTableDef()


def set_session_cookie(response: web.StreamResponse, svc: context.Services, session_id: str) -> None:
    # Host-only (no Domain), HttpOnly, SameSite=Lax, Secure over https; the __Host- prefix (used
    # over https) makes browsers refuse any attempt to set it with a Domain or from http.
    response.set_cookie(
        svc.cookie_name, session_id, path="/", httponly=True, samesite="Lax",
        secure=svc.secure_cookies,
    )


def bind_cookie_name(svc: context.Services) -> str:
    return "__Secure-libproxy_bind" if svc.secure_cookies else "libproxy_bind"


def browser_binding(request: web.Request, response: web.StreamResponse, svc: context.Services) -> str:
    """The random value that ties sign-on tickets to this browser (set for the proxy's whole
    domain, so the proxied hosts see it), creating it when absent."""
    value = context.single_cookie(request, bind_cookie_name(svc))
    if value is None or not _TOKEN.fullmatch(value):
        value = secrets.token_urlsafe(24)
    # SECURITY: a ticket is redeemed only by the browser holding this cookie, so a sign-on link
    # captured by an attacker (for their own session) cannot plant that session in a victim's
    # browser. It says nothing about the patron and is useless without a ticket.
    response.set_cookie(bind_cookie_name(svc), value, domain=svc.vendors.proxy_host.split(":")[0], path="/",
                        httponly=True, samesite="Lax", secure=svc.secure_cookies)
    return value


def clear_session_cookie(response: web.StreamResponse, svc: context.Services) -> None:
    response.del_cookie(svc.cookie_name, path="/", secure=svc.secure_cookies, httponly=True,
                        samesite="Lax")


def _single_param(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        # SECURITY: parameter pollution (url=good&url=evil) is refused, not resolved.
        raise BadInput("The link you followed is malformed.", 400)
    return values[0] if values else None


def resolve_target(svc: context.Services, url: str) -> tuple[ParsedURL, Vendor]:
    """A starting-point URL and its vendor, or BadInput (404) when it is not configured."""
    parsed = parse_absolute_url(url)
    vendor = svc.vendors.match(parsed.origin) if parsed is not None else None
    if parsed is None or vendor is None or svc.vendors.proxied_origin(parsed.origin) is None:
        # SECURITY: no open proxy and no open redirect: unknown targets stop here, no
        # connection is made, and the URL is not echoed back into the page.
        raise BadInput("not-configured", 404)
    return parsed, vendor


def _login_target(svc: context.Services, url: str | None
                  ) -> tuple[ParsedURL, Vendor] | tuple[None, None] | None:
    """A sign-in's ``url``: its target, (None, None) when there is none, None when it names no
    configured vendor (the caller answers with the "not configured" page)."""
    if not url:
        return None, None
    try:
        return resolve_target(svc, url)
    except BadInput:
        return None


def not_configured(svc: context.Services) -> web.Response:
    return svc.pages.message(
        404, "This database is not available through the library",
        "The link you followed points to a site that this library's proxy is not set up for. "
        "If you expected it to work, please tell the library which link you used.",
        links=svc.pages.to_databases("See the databases your library offers"),
        reason="not-configured",
    )


def not_licensed(svc: context.Services, vendor: Vendor) -> web.Response:
    names = svc.config.group_names
    groups = "; ".join(sorted(names.get(g, g) for g in vendor.groups))
    return svc.pages.message(
        403, f"{vendor.title} is not included with your card",
        f"This database is licensed to holders of a library card from: {groups}. Your card is "
        "not one of them. A card from one of those libraries, or a visit to the library, gives "
        "access.",
        links=svc.pages.to_databases("See the databases you can use"),
        reason="not-licensed",
    )


async def connect_redirect(request: web.Request, svc: context.Services, session_id: str, parsed: ParsedURL
                           ) -> web.Response:
    """Send a signed-in patron to a proxied page through one-time tickets.

    Each of the vendor's configured hosts gets its host-only cookie in one chain of redirects
    (the page asked for last), so a page's scripts can call the vendor's other hosts (an API
    host with ``credentials: "include"``) without a sign-in round trip that CORS would refuse.
    Hosts under a vendor's ``domains`` cannot be listed; they get their cookie on first use.
    """
    target = svc.vendors.proxied_origin(parsed.origin)
    assert target is not None  # resolve_target() checked it
    vendor = svc.vendors.match(parsed.origin)
    others = sorted({
        proxied for o in (vendor.origins if vendor else ()) if o != parsed.origin
        and (proxied := svc.vendors.proxied_origin(o)) is not None and proxied != target
    })[: MAX_CHAIN - 1]
    response = redirect("")
    bind = browser_binding(request, response, svc)
    await _next_hop(response, svc, session_id, f"{target}{parsed.rest}", [*others, target], bind)
    return response


async def _next_hop(response: web.Response, svc: context.Services, session_id: str, final: str,
                    chain: list[str], bind: str) -> None:
    """Point ``response`` at the next host of the chain, with a fresh one-time ticket."""
    ticket = secrets.token_urlsafe(24)
    # Everything in the ticket was built by the proxy from its own vendor table: no URL in it
    # ever comes from the request.
    await svc.store.add_ticket(ticket, session_id, json.dumps([final, chain[1:], bind]), TICKET_TTL)
    response.headers["Location"] = f"{chain[0]}/.libproxy/connect?ticket={ticket}"


def csrf_cookie_name(svc: context.Services) -> str:
    # __Host-: over https the browser refuses it when set with a Domain (from a proxied host).
    return "__Host-libproxy_csrf" if svc.secure_cookies else "libproxy_csrf"


def cross_site(request: web.Request, svc: context.Services) -> bool:
    """True for a POST whose Origin is not the proxy's own (a form on another site or on a
    proxied vendor page). Browsers send Origin with every POST; its absence is tolerated."""
    origin = request.headers.get("Origin")
    return origin is not None and origin != svc.config.proxy.public_origin


def _refused_cross_site(svc: context.Services) -> web.Response:
    return svc.pages.message(403, "Request refused", "This form can only be sent from the library's own pages.",
                             reason="cross-site")


def _login_form(request: web.Request, svc: context.Services, url: str, vendor: Vendor | None,
                error: str | None = None, status: int = 200) -> web.Response:
    token = request.cookies.get(csrf_cookie_name(svc), "")
    if len(token) != 32 or not token.isalnum():
        token = secrets.token_hex(16)
    response = svc.pages.render(
        "login.html", status=status, csrf=token, url=url,
        vendor_title=vendor.title if vendor else None, error=error,
    )
    response.set_cookie(csrf_cookie_name(svc), token, path="/", httponly=True, samesite="Strict",
                        secure=svc.secure_cookies)
    return response


async def _read_form(request: web.Request) -> Mapping[str, object]:
    try:
        async with asyncio.timeout(FORM_DEADLINE):
            return await request.post()
    except TimeoutError:
        raise BadInput("The form took too long to arrive.", 408) from None


@routes.get("/login")
async def login_page(request: web.Request) -> web.StreamResponse:
    svc = context.services(request)
    url = _single_param(request, "url")
    target = _login_target(svc, url)
    if target is None:
        return not_configured(svc)
    parsed, vendor = target
    session = context.current_session(request)
    on_site = context.library_groups(request)
    if parsed is not None and vendor is not None and vendor.licensed_for(on_site):
        if vendor.on_site == "direct":
            # Like EZproxy's ExcludeIP: the vendor recognises the library's own address, so a
            # machine in the library goes straight there and the proxy stays out of the way.
            return redirect(f"{parsed.origin}{parsed.rest}", 302)
        if session is None or not vendor.licensed_for(session.membership.groups):
            # Like AutoLoginIP: in the library, no sign-in; the session carries no patron key.
            session = await svc.store.create(Membership(groups=on_site, key=None, source="network"))
            response = await connect_redirect(request, svc, session.id, parsed)
            set_session_cookie(response, svc, session.id)
            return response
    if session is not None:
        if parsed is None or vendor is None:
            return redirect(f"{svc.config.proxy.public_origin}/databases")
        if not vendor.licensed_for(session.membership.groups):
            return not_licensed(svc, vendor)
        return await connect_redirect(request, svc, session.id, parsed)
    return _login_form(request, svc, url or "", vendor)


@routes.post("/login")
async def login_submit(request: web.Request) -> web.StreamResponse:
    svc = context.services(request)
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        raise BadInput("The sign-in form was too large.", 413)
    # SECURITY: login CSRF from a proxied vendor page, which is same-site with the proxy.
    if cross_site(request, svc):
        return _refused_cross_site(svc)
    form = await _read_form(request)
    def field(name: str) -> str:
        value = form.get(name, "")
        return value if isinstance(value, str) else ""
    url, card, pin = field("url"), field("card").strip(), field("pin")
    target = _login_target(svc, url)
    if target is None:
        return not_configured(svc)
    parsed, vendor = target
    cookie_token = request.cookies.get(csrf_cookie_name(svc), "")
    # SECURITY: login CSRF: a form posted from another site cannot know this cookie's value.
    if not cookie_token or not hmac.compare_digest(cookie_token, field("csrf")):
        return _login_form(request, svc, url, vendor, status=400,
                           error="Your sign-in form had expired. Please try again.")
    security = svc.records.security
    client = str(context.client(request) or "")
    if security.is_locked(card, client):
        # The same page whether or not the card exists: locking says nothing about it.
        return svc.pages.message(
            429, "Too many attempts",
            "There have been too many unsuccessful sign-ins. Please wait a quarter of an hour and "
            "try again, or contact the library.", reason="locked")
    try:
        membership = await svc.authenticator.authenticate(card, pin)
    except CardRefused as refused:
        return svc.pages.message(403, "Your card cannot be used right now", refused.message,
                                 reason=f"card-{refused.reason}")
    except DirectoryUnavailable:
        raise
    if membership is None:
        security.note_failure(card, client)
        # The same words and status for an unknown card and a wrong PIN.
        return _login_form(request, svc, url, vendor, status=401,
                           error="That card number and PIN were not recognised. Please try again.")
    security.note_success(card)
    svc.records.stats.record(PROXY_VENDOR, kind="session", in_library=bool(context.library_groups(request)))
    old = context.current_session(request)
    if old is not None:
        await svc.store.delete(old.id)
    # SECURITY: a fresh session id at every sign-in defeats session fixation.
    session = await svc.store.create(membership)
    if parsed is not None and vendor is not None:
        if not vendor.licensed_for(membership.groups):
            response: web.StreamResponse = not_licensed(svc, vendor)
        else:
            response = await connect_redirect(request, svc, session.id, parsed)
    else:
        response = redirect(f"{svc.config.proxy.public_origin}/databases")
    set_session_cookie(response, svc, session.id)
    response.del_cookie(csrf_cookie_name(svc), path="/")
    return response


@routes.get("/logout")
@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    svc = context.services(request)
    session = context.current_session(request)
    everywhere = 0
    if session is not None:
        # Ends the session on the server: every proxied host's cookie dies with it, and the
        # vendor cookies kept for this patron are forgotten.
        await svc.store.delete(session.id)
        # "Sign out everywhere" is a POST from the session page; a form on a proxied vendor page
        # is same-site (so it carries the cookie) but not same-origin, which cross_site() sees.
        if request.method == "POST" and session.membership.key and not cross_site(request, svc):
            form = await _read_form(request)
            if form.get("everywhere") == "1":
                everywhere = await svc.store.delete_patron(session.membership.key)
    text = ("You have been signed out of the library's databases. On a shared computer, close the "
            "browser to finish.")
    if everywhere:
        text += f" Your {everywhere} other session(s) on other devices have ended too."
    response = svc.pages.message(
        200, "You are signed out", text,
        links=svc.pages.to_databases(),
        reason="signed-out",
    )
    clear_session_cookie(response, svc)
    return response


@routes.get("/session")
async def session_page(request: web.Request) -> web.StreamResponse:
    """Everything the proxy holds about the signed-in patron, in plain words."""
    svc = context.services(request)
    session = context.current_session(request)
    if session is None:
        return svc.pages.message(
            200, "You are not signed in", "The proxy holds nothing about you right now.",
            links=svc.pages.to_databases("Databases"), reason="no-session",
        )
    cfg = svc.config.sessions
    ends = min(session.created + cfg.lifetime, session.last_seen + cfg.idle)
    names = svc.config.group_names
    visited = [v.title for v in svc.vendors.vendors if session.jars.get(v.id) is not None]
    return svc.pages.render(
        "session.html", title="Your session",
        groups=sorted(names.get(g, g) for g in session.membership.groups),
        home=names.get(session.membership.home_library or "", session.membership.home_library),
        signed_in_at=time.strftime("%H:%M on %d %B %Y", time.localtime(session.created)),
        ends_at=time.strftime("%H:%M on %d %B %Y", time.localtime(ends)),
        in_library=session.membership.source == "network",
        visited=visited,
        cookie_counts={v.title: len(session.jars.get(v.id, [])) for v in svc.vendors.vendors
                       if session.jars.get(v.id)},
    )


@routes.get("/privacy")
async def privacy_page(request: web.Request) -> web.StreamResponse:
    """The privacy page, generated from the configuration actually in force."""
    svc = context.services(request)
    facts = PrivacyFacts.from_config(svc.config, svc.config.records,
                                     pairwise_vendors=[v.title for v in svc.vendors.vendors if v.pairwise_id])
    return svc.pages.render("privacy.html", title="Privacy",
                            sections=privacy_summary(facts, svc.config.logging))


@routes.get("/databases")
async def databases(request: web.Request) -> web.StreamResponse:
    svc = context.services(request)
    session = context.current_session(request)
    on_site = context.library_groups(request)
    groups = (session.membership.groups if session else frozenset()) | on_site
    items = [
        {
            "title": v.title,
            "description": v.description,
            "licensed": v.licensed_for(groups),
            "link": f"{svc.config.proxy.public_origin}/login?url={quote(v.start, safe='')}",
        }
        for v in svc.vendors.vendors
    ]
    signed_in = session is not None and session.membership.source != "network"
    return svc.pages.render("databases.html", title="Databases", vendors=items, signed_in=signed_in,
                            in_library=bool(on_site))


@routes.get("/")
async def index(request: web.Request) -> web.StreamResponse:
    return redirect(f"{context.services(request).config.proxy.public_origin}/databases", 302)


@routes.get("/.well-known/jwks.json")
async def jwks(request: web.Request) -> web.StreamResponse:
    svc = context.services(request)
    response = web.json_response(svc.minter.jwks())
    response.headers["Cache-Control"] = "public, max-age=300"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})


routes.static("/static", str(__import__("pathlib").Path(__file__).parent / "static"))


async def connect(request: web.Request) -> web.StreamResponse:
    """On a proxied host: trade a one-time ticket for this host's session cookie."""
    svc = context.services(request)
    origin = context.vendor_origin(request)
    ticket = _single_param(request, "ticket") or ""
    taken = await svc.store.take_ticket(ticket) if 16 <= len(ticket) <= 64 else None
    session = await svc.store.get(taken[0]) if taken else None
    if taken is None or session is None or origin is None:
        return svc.pages.message(
            400, "This sign-in link has expired",
            "Sign-in links work once and only for a minute. Please open the database again from "
            "the library's list.",
            links=svc.pages.to_databases(),
            reason="ticket-expired",
        )
    final, chain, bind = json.loads(taken[1])
    presented = context.single_cookie(request, bind_cookie_name(svc)) or ""
    if not hmac.compare_digest(presented.encode(), str(bind).encode()):
        return svc.pages.message(
            400, "Please open the database from the library's list",
            "This sign-in link was made for another browser, so it cannot sign you in here.",
            links=svc.pages.to_databases(),
            reason="ticket-elsewhere",
        )
    # Absolute (built by the proxy), so a "//host" path stays a path on this host.
    response = redirect(final)
    if chain:
        await _next_hop(response, svc, session.id, final, chain, bind)
    set_session_cookie(response, svc, session.id)
    svc.pages.secure(response)
    return response
