"""Who may use the console: staff sessions, CSRF on every POST, and the two roles' pages.

The middleware guards every path of the staff listener except the sign-in page, the stylesheet
and the monitoring endpoints (``/healthz``, ``/readyz``, ``/metrics``): unknown paths are
guarded too, so a page added later without thought is closed, not open.

Pages under ``/it/`` are the ``it`` role's, under ``/director/`` the director's; the rest (the
home page, the audit trail) are both roles'. A role opening the other's page is refused and
the refusal is audited.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from multidict import MultiDictProxy

from proxy.errors import BadInput, DirectoryUnavailable
from proxy.staff.accounts import ROLE_TITLES, valid_name
from proxy.staff.sessions import StaffSession
from proxy.staff.state import CONSOLE, STAFF_SESSION, Console
from proxy.web.forms import read_form

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# /favicon.ico: browsers fetch it on their own; answered "not found" rather than sent to /login.
OPEN_PATHS = frozenset({"/login", "/static/staff.css", "/favicon.ico", "/healthz", "/readyz", "/metrics"})
ROLE_PREFIXES = (("/it/", "it"), ("/director/", "director"))
MAX_FAILURES = 10  # wrong passwords per staff name within FAILURE_WINDOW before it is locked
FAILURE_WINDOW = 900.0
_LOGIN_CSRF = "libproxy_staff_login"


def cookie_name(request: web.Request) -> str:
    # SECURITY: over https the __Host- prefix makes the browser refuse a copy planted with a
    # Domain or without Secure; over plain http (loopback or an SSH tunnel) it cannot be used.
    return "__Host-libproxy_staff" if request.secure else "libproxy_staff"


def _set_cookie(response: web.StreamResponse, request: web.Request, name: str, value: str) -> None:
    # SECURITY: HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it).
    response.set_cookie(name, value, path="/", httponly=True, samesite="Strict", secure=request.secure)


def role_for(path: str) -> str | None:
    for prefix, role in ROLE_PREFIXES:
        if path.startswith(prefix):
            return role
    return None


def _same_origin(request: web.Request) -> bool:
    """SECURITY: a POST carrying another site's Origin (or Referer) is a forgery, token or not."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin:
        return True  # old clients send neither; the token still decides
    parts = urlsplit(origin)
    return parts.netloc.lower() == request.host.lower()


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    console = request.app[CONSOLE]
    try:
        return await _guarded(request, handler, console)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        words = {403: "You may not open this page.", 404: "There is no such page.",
                 405: "This page does not accept that kind of request."}
        response = console.pages.message("Not available", words.get(exc.status, "The request was refused."),
                                         status=exc.status, staff=request.get(STAFF_SESSION))
        return response


async def _guarded(request: web.Request, handler: Handler, console: Console) -> web.StreamResponse:
    session_id = request.cookies.get(cookie_name(request), "")
    session = console.sessions.get(session_id) if session_id else None
    if session is not None:
        request[STAFF_SESSION] = session
    path = request.path
    if path in OPEN_PATHS:
        return await handler(request)
    if session is None:
        if request.method in ("GET", "HEAD"):
            raise web.HTTPSeeOther("/login")
        raise web.HTTPForbidden()
    if request.method not in ("GET", "HEAD"):
        try:
            form = await staff_form(request)
        except BadInput as refused:
            return console.pages.message("Refused", "The form could not be read. Open the page again and retry.",
                                         status=refused.status, staff=session)
        token = form.get("csrf")
        # SECURITY: every state-changing request carries the session's own token (CSRF).
        if not (isinstance(token, str) and hmac.compare_digest(token, session.csrf)) or not _same_origin(request):
            return console.pages.message("Refused", "This form was not sent from this console's own page. "
                                         "Open the page again and retry.", status=403, staff=session)
    needed = role_for(path)
    if needed is not None and needed != session.role:
        await console.audit.record(session.user, "role-refused", needed)
        return console.pages.message(
            "Not for your role",
            f"This page is for the {ROLE_TITLES[needed]} role; you are signed in as {ROLE_TITLES[session.role]}.",
            status=403, staff=session, csrf=session.csrf)
    return await handler(request)


# The largest form of the console: a configuration pasted for checking (it.MAX_CANDIDATE,
# 512 KiB of text) as the browser percent-encodes it.
MAX_STAFF_FORM = 2 * 1024 * 1024
FORM_DEADLINE = 60.0
_FORM = web.RequestKey[MultiDictProxy[str]]("libproxy.staff_form")


async def staff_form(request: web.Request) -> MultiDictProxy[str]:
    """The request's form, read once (under a size cap and a deadline, see web/forms.py) and
    kept for the handler; raises BadInput when it is too large, too slow or malformed."""
    form = request.get(_FORM)
    if form is None:
        form = await read_form(request, max_bytes=MAX_STAFF_FORM, deadline=FORM_DEADLINE)
        request[_FORM] = form
    return form


def _login_token(request: web.Request) -> str:
    """The browser's sign-in form token: kept while it has one, so that a second tab, or a
    request the browser makes by itself, does not invalidate a form already on screen."""
    token = request.cookies.get(_LOGIN_CSRF, "")
    return token if re.fullmatch(r"[A-Za-z0-9_-]{43}", token) else secrets.token_urlsafe(32)


async def login_page(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    token = _login_token(request)
    response = console.pages.render("login.html", title="Staff sign-in", login_csrf=token, error="",
                                    problem=await console.accounts.status())
    _set_cookie(response, request, _LOGIN_CSRF, token)
    return response


MAX_TRACKED = 10_000


def _too_many(console: Console, name: str, now: float) -> bool:
    recent = [t for t in console.failures.get(name, []) if now - t < FAILURE_WINDOW]
    console.failures[name] = recent
    if not recent:
        console.failures.pop(name, None)
    return len(recent) >= MAX_FAILURES


def _note_failure(console: Console, name: str, now: float) -> None:
    """Count a failed sign-in for ``name``. Bounded: when the table is full, expired entries go,
    then the oldest; names that cannot be accounts are not counted (they never sign in).

    SECURITY: a full table must never stop the counting: names flooded in to fill it would
    otherwise leave every real staff name unlimited."""
    if not valid_name(name):
        return
    failures = console.failures
    if name not in failures and len(failures) >= MAX_TRACKED:
        for old in [n for n, times in failures.items() if not times or now - times[-1] >= FAILURE_WINDOW]:
            del failures[old]
        while len(failures) >= MAX_TRACKED:
            del failures[next(iter(failures))]
    failures.setdefault(name, []).append(now)


async def login(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    try:
        form = await staff_form(request)
    except BadInput as refused:
        return console.pages.message("Refused", "The sign-in form could not be read. Open it again and retry.",
                                     status=refused.status)
    name = str(form.get("name", "")).strip().lower()
    password = str(form.get("password", ""))
    token = str(form.get("csrf", ""))
    expected = request.cookies.get(_LOGIN_CSRF, "")
    # SECURITY: double-submit token for the sign-in form (no session exists yet): a forged
    # form from another site cannot read or set this listener's cookie.
    if not expected or not hmac.compare_digest(token, expected) or not _same_origin(request):
        return console.pages.message("Refused", "The sign-in form had expired. Open it again and retry.",
                                     status=400)
    now = time.time()
    # SECURITY: a guessed staff password opens the console; ten wrong ones lock the name a while.
    locked = _too_many(console, name, now)
    account = None if locked else await console.accounts.authenticate(name, password)
    # SECURITY: a local account's name is never also a directory account: a directory user who
    # shares it could otherwise sign in under it, indistinguishable in the audit trail.
    if account is None and not locked and console.directory is not None and not await console.accounts.exists(name):
        try:
            account = await console.directory.authenticate(name, password)
        except DirectoryUnavailable:
            await console.audit.record("(unknown name)", "sign-in-refused", "directory-down")
            retry = secrets.token_urlsafe(32)
            response = console.pages.render(
                "login.html", status=503, title="Staff sign-in", login_csrf=retry, problem=None,
                error="The library's directory is not answering, so directory accounts cannot sign in now. "
                      "Local staff accounts (libproxy staff add) still work.")
            _set_cookie(response, request, _LOGIN_CSRF, retry)
            return response
    if account is None:
        _note_failure(console, name, now)
        # A name typed by mistake may be anything (even a card number), and a directory name may
        # be a patron's: only names of local staff accounts are kept.
        who = name if await console.accounts.exists(name) else "(unknown name)"
        await console.audit.record(who, "sign-in-refused")
        retry = secrets.token_urlsafe(32)
        response = console.pages.render("login.html", status=401, title="Staff sign-in", login_csrf=retry,
                                        error="The name or password is not right, or there were too many "
                                              "attempts. Try again in a few minutes.", problem=None)
        _set_cookie(response, request, _LOGIN_CSRF, retry)
        return response
    console.failures.pop(name, None)
    old = request.get(STAFF_SESSION)
    if old is not None:
        console.sessions.delete(old.id)
    session = console.sessions.create(account.name, account.role)
    await console.audit.record(session.user, "sign-in", session.role)
    response = web.Response(status=303, headers={"Location": "/", "Cache-Control": "no-store"})
    _set_cookie(response, request, cookie_name(request), session.id)
    response.del_cookie(_LOGIN_CSRF, path="/")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    session: StaffSession = request[STAFF_SESSION]
    console.sessions.delete(session.id)
    await console.audit.record(session.user, "sign-out")
    response = console.pages.message("Signed out", "You have signed out of the staff console.")
    response.del_cookie(cookie_name(request), path="/")
    return response
