"""Routes of the proxy's own host: sign-in, sign-out, database list, JWKS, health; and the
sign-on ticket exchange on proxied hosts.

Sign-in across proxied hosts: each proxied host (``<label>.<proxy host>``) gets its own
host-only session cookie. After sign-in the patron is sent to
``<proxied host>/.libproxy/connect?ticket=...`` with a one-time, one-minute ticket; that host
trades it for its cookie and redirects to the page asked for. No cookie is ever set for the
parent domain, so a vendor's script on one proxied host cannot plant or read another host's.

Where a starting-point link goes (sign-in form, straight to the vendor, an in-library session)
is decided by ``gate.start``; this module only acts on it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import quote

from aiohttp import web
from babel.dates import format_date

from proxy import context, gate
from proxy.errors import BadInput, CardRefused
from proxy.membership import Membership
from proxy.records import needhosts
from proxy.records.privacy import PrivacyFacts, privacy_summary
from proxy.records.report import PROXY_VENDOR
from proxy.sessions import SessionStore, Ticket
from proxy.vendors import ParsedURL, Vendor, VendorMap, parse_absolute_url
from proxy.web import i18n
from proxy.web.forms import expect_within, read_form
from proxy.web.pages import LANGUAGE_PATH, LOGO_PATH, STATIC, THEME_PATH, Pages, redirect, sign_in_link
from proxy.web.texts import FORM_EXPIRED, NOT_RECOGNISED

log = logging.getLogger("libproxy.web")

_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,64}")
# A form body sent slower than this is abandoned (a slow-POST attack holds a connection open).
FORM_DEADLINE = 30.0
TICKET_TTL = 60.0
MAX_CHAIN = 8  # hosts given a cookie in one sign-in; the rest get theirs on first use
MAX_FORM_BYTES = 16 * 1024
CSP_REPORT_PATH = "/csp-report"

routes = web.RouteTableDef()


def set_session_cookie(response: web.StreamResponse, site: context.Site, session_id: str) -> None:
    # Host-only (no Domain), HttpOnly, SameSite=Lax, Secure over https; the __Host- prefix (used
    # over https) makes browsers refuse any attempt to set it with a Domain or from http.
    response.set_cookie(site.cookie_name, session_id, path="/", httponly=True, samesite="Lax",
                        secure=site.secure_cookies)


def browser_binding(request: web.Request, response: web.StreamResponse, site: context.Site) -> str:
    """The random value that ties sign-on tickets to this browser (set for the proxy's whole
    domain, so the proxied hosts see it), creating it when absent."""
    value = context.single_cookie(request, site.bind_cookie_name)
    if value is None or not _TOKEN.fullmatch(value):
        value = secrets.token_urlsafe(24)
    # SECURITY: a ticket is redeemed only by the browser holding this cookie, so a sign-on link
    # captured by an attacker (for their own session) cannot plant that session in a victim's
    # browser. It says nothing about the patron and is useless without a ticket.
    response.set_cookie(site.bind_cookie_name, value, domain=site.host.split(":")[0], path="/",
                        httponly=True, samesite="Lax", secure=site.secure_cookies)
    return value


def clear_session_cookie(response: web.StreamResponse, site: context.Site) -> None:
    response.del_cookie(site.cookie_name, path="/", secure=site.secure_cookies, httponly=True, samesite="Lax")


def _single_param(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        # SECURITY: parameter pollution (url=good&url=evil) is refused, not resolved.
        raise BadInput("malformed-link", 400)
    return values[0] if values else None


def starting_point(request: web.Request) -> str | None:
    """The target of a starting-point link, read the ways EZproxy links are written:

    * ``/login?url=https://v.com/s?a=1&b=2``: everything after ``url=`` is the target, as typed
      (EZproxy's form: library web pages paste vendor URLs unencoded, queries included);
    * ``/login?url=https%3A%2F%2Fv.com%2F...``: one percent-encoded parameter;
    * ``/login?qurl=https%3A%2F%2Fv.com%2F...``: EZproxy's explicitly encoded form.

    The target is then checked like any other (``resolve_target``)."""
    raw_query = request.raw_path.partition("?")[2]
    if raw_query[:4].lower() == "url=":
        rest = raw_query[4:]
        if rest[:8].lower() == "https://" or rest[:7].lower() == "http://":
            return rest
    qurl = _single_param(request, "qurl")
    return qurl if qurl is not None else _single_param(request, "url")


def resolve_target(vendors: VendorMap, url: str) -> tuple[ParsedURL, Vendor] | None:
    """A starting-point URL and its vendor, or None when it names no configured vendor."""
    parsed = parse_absolute_url(url)
    vendor = vendors.match(parsed.origin) if parsed is not None else None
    if parsed is None or vendor is None or vendors.proxied_origin(parsed.origin) is None:
        # SECURITY: no open proxy and no open redirect: unknown targets stop here, no
        # connection is made, and the URL is not echoed back into the page.
        return None
    return parsed, vendor


def _login_target(vendors: VendorMap, url: str | None
                  ) -> tuple[ParsedURL, Vendor] | tuple[None, None] | None:
    """A sign-in's ``url``: its target, (None, None) when there is none, None when it names no
    configured vendor (the caller answers with the "not configured" page)."""
    if not url:
        return None, None
    return resolve_target(vendors, url)


def group_name(config_names: Mapping[str, str], group: str) -> str:
    """A group as patrons read it: its name from [groups], else its code made readable
    ("bibliomation" -> "Bibliomation", "west_side" -> "West Side")."""
    return config_names.get(group) or group.replace("_", " ").replace("-", " ").title()


def own_address(host: str, listen_port: int) -> bool:
    """True when ``host`` (a Host header, lower case) is a loopback name or address on the
    proxy's own listening port: someone typed ``http://localhost:8080/`` instead of the
    proxy's name. Such requests are sent to the proxy's public host instead of being told
    "not configured"."""
    name, _, port = host.rpartition(":")
    # (An IPv6 literal never gets here: the Host check refuses brackets before.)
    return port == str(listen_port) and name in ("localhost", "127.0.0.1")


def not_licensed(pages: Pages, config_names: Mapping[str, str], vendor: Vendor) -> web.Response:
    groups = "; ".join(sorted(group_name(config_names, g) for g in vendor.groups))
    return pages.message("not-licensed", vendor=vendor.title, groups=groups)


async def connect_redirect(request: web.Request, session_id: str, parsed: ParsedURL) -> web.Response:
    """Send a signed-in patron to a proxied page through one-time tickets.

    Each of the vendor's configured hosts gets its host-only cookie in one chain of redirects
    (the page asked for last), so a page's scripts can call the vendor's other hosts (an API
    host with ``credentials: "include"``) without a sign-in round trip that CORS would refuse.
    Hosts under a vendor's ``domains`` cannot be listed; they get their cookie on first use.
    """
    vendors = request.app[context.ROUTES].vendors
    target = vendors.proxied_origin(parsed.origin)
    assert target is not None  # resolve_target() checked it
    vendor = vendors.match(parsed.origin)
    others = sorted({
        proxied for o in (vendor.origins if vendor else ()) if o != parsed.origin
        and (proxied := vendors.proxied_origin(o)) is not None and proxied != target
    })[: MAX_CHAIN - 1]
    response = redirect("")
    bind = browser_binding(request, response, request.app[context.SITE])
    ticket = Ticket(session_id=session_id, final=f"{target}{parsed.rest}", chain=(*others, target), bind=bind)
    await _next_hop(response, request.app[context.SESSIONS], ticket)
    return response


async def _next_hop(response: web.Response, store: SessionStore, ticket: Ticket) -> None:
    """Point ``response`` at the first host of ``ticket.chain``, with a fresh one-time ticket
    for the rest of the chain."""
    ticket_id = secrets.token_urlsafe(24)
    first, rest = ticket.chain[0], ticket.chain[1:]
    await store.add_ticket(ticket_id, Ticket(ticket.session_id, ticket.final, rest, ticket.bind), TICKET_TTL)
    response.headers["Location"] = f"{first}/.libproxy/connect?ticket={ticket_id}"


def cross_site(request: web.Request, site: context.Site) -> bool:
    """True for a POST whose Origin is not the proxy's own (a form on another site or on a
    proxied vendor page). Browsers send Origin with every POST; its absence is tolerated."""
    origin = request.headers.get("Origin")
    return origin is not None and origin != site.public_origin


def _login_form(request: web.Request, url: str, vendor: Vendor | None, error: str | None = None,
                status: int = 200, card: str = "") -> web.Response:
    """The sign-in form; after a failure, with the error (tied to both fields) and the card
    number as typed, so only the PIN has to be typed again. The PIN is never sent back."""
    token = _csrf_token(request)
    response = request.app[context.PAGES].render(
        "login.html", status=status, csrf=token, url=url,
        vendor_title=vendor.title if vendor else None, error=i18n.gettext(error) if error else None,
        card=card, here=f"/login?url={quote(url, safe='')}" if url else "/login",
    )
    _set_csrf(response, request.app[context.SITE], token)
    return response


async def _read_form(request: web.Request) -> Mapping[str, object]:
    return await read_form(request, max_bytes=MAX_FORM_BYTES, deadline=FORM_DEADLINE)


@routes.get("/login")
async def login_page(request: web.Request) -> web.StreamResponse:
    app = request.app
    pages, site, store = app[context.PAGES], app[context.SITE], app[context.SESSIONS]
    url = starting_point(request)
    target = _login_target(app[context.ROUTES].vendors, url)
    if target is None:
        return pages.message("not-configured")
    parsed, vendor = target
    session = context.current_session(request)
    where = gate.start(vendor, gate.Patron.of(session.membership if session else None), context.library_groups(request))
    action = where.action
    if action is gate.StartAction.DIRECT and parsed is not None:
        # Like EZproxy's ExcludeIP: the vendor recognises the library's own address, so a
        # machine in the library goes straight there and the proxy stays out of the way.
        return redirect(f"{parsed.origin}{parsed.rest}", 302)
    if action is gate.StartAction.CONNECT_NETWORK and parsed is not None and where.new_network_session:
        # Like AutoLoginIP: in the library, no sign-in; the session carries no patron key.
        session = await store.create(Membership.on_network(where.new_network_session))
        response = await connect_redirect(request, session.id, parsed)
        set_session_cookie(response, site, session.id)
        return response
    if action is gate.StartAction.DATABASES:
        return redirect(f"{site.public_origin}/databases")
    if action is gate.StartAction.NOT_LICENSED and vendor is not None:
        return not_licensed(pages, app[context.CONFIG].group_names, vendor)
    if action is gate.StartAction.CONNECT and session is not None and parsed is not None:
        return await connect_redirect(request, session.id, parsed)
    return _login_form(request, url or "", vendor)


# The sign-in and sign-out forms: a body is invited only within their own cap.
_expect_form = expect_within(lambda request: MAX_FORM_BYTES,
                             lambda request: request.app[context.PAGES].message("form-too-large"))


@routes.post("/login", expect_handler=_expect_form)
async def login_submit(request: web.Request) -> web.StreamResponse:
    app = request.app
    pages, site, store, records = app[context.PAGES], app[context.SITE], app[context.SESSIONS], app[context.RECORDS]
    # SECURITY: login CSRF from a proxied vendor page, which is same-site with the proxy.
    if cross_site(request, site):
        return pages.message("cross-site")
    form = await _read_form(request)

    def field(name: str) -> str:
        value = form.get(name, "")
        return value if isinstance(value, str) else ""

    url, card, pin = field("url"), field("card").strip(), field("pin")
    target = _login_target(app[context.ROUTES].vendors, url)
    if target is None:
        return pages.message("not-configured")
    parsed, vendor = target
    # SECURITY: login CSRF: a form posted from another site cannot know this cookie's value.
    if not _csrf_ok(request, form):
        return _login_form(request, url, vendor, status=400, error=FORM_EXPIRED, card=card)
    client = str(context.client(request) or "")
    async with records.guard.attempt(card, client) as attempt:
        if attempt is None:
            # The same page whether or not the card exists: locking says nothing about it.
            return pages.message("locked")
        try:
            membership = await app[context.PATRONS].authenticate(card, pin)
        except CardRefused as refused:
            attempt.void()
            return pages.message(f"card-{refused.reason}")
        if membership is None:
            # The same words and status for an unknown card and a wrong PIN (the failure was
            # counted before the directory was asked).
            return _login_form(request, url, vendor, status=401, error=NOT_RECOGNISED, card=card)
        attempt.succeeded()
    records.stats.record(PROXY_VENDOR, kind="session", in_library=bool(context.library_groups(request)))
    old = context.current_session(request)
    if old is not None:
        await store.delete(old.id)
    # SECURITY: a fresh session id at every sign-in defeats session fixation.
    session = await store.create(membership)
    action = gate.after_sign_in(vendor, membership.groups)
    if action is gate.StartAction.CONNECT and parsed is not None:
        response: web.StreamResponse = await connect_redirect(request, session.id, parsed)
    elif action is gate.StartAction.NOT_LICENSED and vendor is not None:
        response = not_licensed(pages, app[context.CONFIG].group_names, vendor)
    else:
        response = redirect(f"{site.public_origin}/databases")
    set_session_cookie(response, site, session.id)
    response.del_cookie(site.csrf_cookie_name, path="/")
    return response


def _csrf_token(request: web.Request) -> str:
    """The browser's CSRF token (from its cookie), or a new one."""
    token = request.cookies.get(request.app[context.SITE].csrf_cookie_name, "")
    return token if len(token) == 32 and token.isalnum() else secrets.token_hex(16)


def _set_csrf(response: web.StreamResponse, site: context.Site, token: str) -> None:
    response.set_cookie(site.csrf_cookie_name, token, path="/", httponly=True, samesite="Strict",
                        secure=site.secure_cookies)


def _csrf_ok(request: web.Request, form: Mapping[str, object]) -> bool:
    cookie_token = request.cookies.get(request.app[context.SITE].csrf_cookie_name, "")
    sent = form.get("csrf")
    # SECURITY: a form posted from another site cannot know this cookie's value.
    return bool(cookie_token) and isinstance(sent, str) and hmac.compare_digest(cookie_token, sent)


@routes.get("/logout")
async def logout_page(request: web.Request) -> web.StreamResponse:
    """Sign-out needs a POST with the page's token; a GET (a link, or a cross-site navigation,
    which carries the Lax session cookie) only shows the button."""
    app = request.app
    pages, site = app[context.PAGES], app[context.SITE]
    if context.current_session(request) is None:
        return pages.message("signed-out")
    token = _csrf_token(request)
    response = pages.render("logout.html", csrf=token)
    _set_csrf(response, site, token)
    return response


@routes.post("/logout", expect_handler=_expect_form)
async def logout(request: web.Request) -> web.StreamResponse:
    app = request.app
    pages, site, store = app[context.PAGES], app[context.SITE], app[context.SESSIONS]
    session = context.current_session(request)
    # SECURITY: a form on a proxied vendor page is same-site (so it carries the cookie) but not
    # same-origin, which cross_site() sees; a form elsewhere cannot know the CSRF token.
    if cross_site(request, site):
        return pages.message("cross-site")
    if session is None:
        response = pages.message("signed-out")
        clear_session_cookie(response, site)
        return response
    form = await _read_form(request)
    if not _csrf_ok(request, form):
        return await logout_page(request)
    # Ends the session on the server: every proxied host's cookie dies with it, and the
    # vendor cookies kept for this patron are forgotten.
    await store.delete(session.id)
    everywhere = 0
    if session.membership.key and form.get("everywhere") == "1":
        everywhere = await store.delete_patron(session.membership.key)
    response = (pages.message("signed-out-everywhere", count=everywhere) if everywhere
                else pages.message("signed-out"))
    clear_session_cookie(response, site)
    return response


@routes.get("/session")
async def session_page(request: web.Request) -> web.StreamResponse:
    """Everything the proxy holds about the signed-in patron, in plain words."""
    app = request.app
    pages, config = app[context.PAGES], app[context.CONFIG]
    session = context.current_session(request)
    if session is None:
        return pages.message("no-session")
    ends = app[context.SESSIONS].lifetimes.ends_at(session.created, session.last_seen)
    names = config.group_names
    vendors = app[context.ROUTES].vendors.vendors
    token = _csrf_token(request)
    home = session.membership.home_library
    response = pages.render(
        "session.html",
        groups=sorted(group_name(names, g) for g in session.membership.groups),
        home=group_name(names, home) if home else None,
        signed_in_at=_when(session.created),
        ends_at=_when(ends),
        in_library=session.membership.in_library,
        visited=[v.title for v in vendors if v.id in session.visited or v.id in session.jars],
        kept=[(v.title, len(jar)) for v in vendors if (jar := session.jars.get(v.id))],
        csrf=token,
    )
    _set_csrf(response, app[context.SITE], token)
    return response


def _when(timestamp: float) -> str:
    """A moment as patrons read it, in the proxy's local time with its zone named
    ("November 30, 2026, 14:05 EST"; the date in the page's language)."""
    moment = datetime.fromtimestamp(timestamp).astimezone()
    return f"{format_date(moment, 'long', locale=i18n.current())}, {moment:%H:%M} {moment.tzname()}"


@routes.get("/privacy")
async def privacy_page(request: web.Request) -> web.StreamResponse:
    """The privacy page, generated from the configuration actually in force."""
    app = request.app
    config = app[context.CONFIG]
    vendors = app[context.ROUTES].vendors.vendors
    pairwise = [v.title for v in vendors if v.pairwise_id]
    facts = PrivacyFacts.from_config(config, config.records, pairwise_vendors=pairwise)
    sections = privacy_summary(facts, config.logging, translate=i18n.translations(i18n.current()),
                               language=i18n.current(), library_name=config.library.text("name", i18n.current()))
    return app[context.PAGES].render("privacy.html", sections=sections)


@routes.get("/databases")
async def databases(request: web.Request) -> web.StreamResponse:
    app = request.app
    site = app[context.SITE]
    session = context.current_session(request)
    on_site = context.library_groups(request)
    groups = (session.membership.groups if session else frozenset()) | on_site
    items = [
        {
            "title": v.title,
            "description": v.description,
            "licensed": v.licensed_for(groups),
            "link": sign_in_link(site.public_origin, v.start),
        }
        for v in app[context.ROUTES].vendors.vendors
    ]
    signed_in = session is not None and not session.membership.in_library
    return app[context.PAGES].render("databases.html", vendors=items, signed_in=signed_in, in_library=bool(on_site))


@routes.get("/")
async def index(request: web.Request) -> web.StreamResponse:
    return redirect(f"{request.app[context.SITE].public_origin}/databases", 302)


@routes.get(LANGUAGE_PATH + "{code}")
async def language(request: web.Request) -> web.StreamResponse:
    """The language link on every page: remember the patron's choice in a cookie that holds
    nothing but the language, and return to the page."""
    return request.app[context.PAGES].language_response(request, request.match_info["code"])


@routes.get(THEME_PATH)
async def theme(request: web.Request) -> web.StreamResponse:
    return request.app[context.PAGES].theme_css()


@routes.get(LOGO_PATH)
async def logo(request: web.Request) -> web.StreamResponse:
    return request.app[context.PAGES].logo_response()


@routes.get("/favicon.ico")
async def favicon(request: web.Request) -> web.StreamResponse:
    # Browsers ask for it on every host; without it every page load logs a 404.
    return web.FileResponse(STATIC / "favicon.ico", headers={"Cache-Control": "public, max-age=86400",
                                                              "Content-Type": "image/x-icon"})


@routes.get("/.well-known/jwks.json")
async def jwks(request: web.Request) -> web.StreamResponse:
    response = web.json_response(request.app[context.ASSERTIONS].jwks())
    response.headers["Cache-Control"] = "public, max-age=300"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@routes.post(CSP_REPORT_PATH)
async def csp_report(request: web.Request) -> web.StreamResponse:
    """Browsers report loads the proxied pages' policy blocked. Only the vendor (from the page's
    proxied host) and the blocked host name are kept (records/needhosts.py); nothing of the
    report is logged, and the answer is the same whatever was sent."""
    app = request.app
    if request.content_length is None or request.content_length <= needhosts.MAX_REPORT_BYTES:
        try:
            async with asyncio.timeout(5):
                body = await request.content.read(needhosts.MAX_REPORT_BYTES + 1)
        except TimeoutError:
            body = b""
        vendors = app[context.ROUTES].vendors
        proxy_name = app[context.SITE].host.split(":")[0]
        needed = app[context.NEEDED_HOSTS]
        for page_host, blocked in needhosts.parse_report(body):
            origin = vendors.origin_for_host(page_host)
            vendor = vendors.match(origin) if origin is not None else None
            if vendor is not None and blocked != proxy_name and not blocked.endswith("." + proxy_name):
                needed.note(vendor.id, blocked)
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})


routes.static("/static", str(STATIC))


async def connect(request: web.Request) -> web.StreamResponse:
    """On a proxied host: trade a one-time ticket for this host's session cookie."""
    app = request.app
    pages, site, store = app[context.PAGES], app[context.SITE], app[context.SESSIONS]
    ticket_id = _single_param(request, "ticket") or ""
    ticket = await store.take_ticket(ticket_id) if 16 <= len(ticket_id) <= 64 else None
    session = await store.get(ticket.session_id) if ticket else None
    if ticket is None or session is None:
        return pages.message("ticket-expired")
    presented = context.single_cookie(request, site.bind_cookie_name) or ""
    if not hmac.compare_digest(presented.encode(), ticket.bind.encode()):
        return pages.message("ticket-elsewhere")
    # Absolute (built by the proxy), so a "//host" path stays a path on this host.
    response = redirect(ticket.final)
    if ticket.chain:
        await _next_hop(response, store, ticket)
    set_session_cookie(response, site, session.id)
    pages.secure(response)
    return response
