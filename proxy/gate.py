"""The access gate: who may reach which vendor, and how. Pure: no aiohttp, no I/O.

The middleware gathers the ``Facts`` of a request (which host it names, the path and method,
the session if any, the library network the client is on) and acts on the ``Decision`` that
``decide`` returns. ``start`` does the same for a starting-point link (``/login?url=...``).
Every rule of the product's access policy is here, and ``tests/test_gate.py`` holds it as a
table of cases:

* the proxy's own host serves the proxy's pages; a host that names no configured vendor gets
  "not configured", without any connection;
* on a proxied host, ``/.libproxy/connect`` trades a sign-on ticket (GET only); every other
  ``/.libproxy/`` path is the proxy's and does not exist;
* a session licensed for the vendor is forwarded as a member;
* an anonymous vendor, or a plain path matching its anonymous patterns, is forwarded without
  sign-in and without the membership assertion, unless the session is licensed (a member is
  always a member);
* a machine on a library network licensed for the vendor is forwarded without sign-in, in a
  new in-library session that carries no patron key (like EZproxy's AutoLoginIP); a
  subresource load in CORS mode from there (a web font, a ``crossorigin`` script, a fetch: see
  below) is forwarded the same way but without a session: such loads mostly go without cookies
  and the browser drops the cookie of their answer, so each would leave one more unused session
  (the sign-on chain gives every configured host of the vendor its cookie beforehand, so only a
  host reached some other way goes without a jar);
* an in-library session is worth nothing off the library's network (a laptop carried home):
  it is ignored and the patron signs in with a card instead;
* without a session, a GET or HEAD is sent to sign in and comes back to the same page; any
  other method gets "please sign in" (a form post cannot survive the detour);
* a session not licensed for the vendor gets "not included with your card";
* a starting-point link, from the library network, to a vendor with ``on_site = "direct"``
  sends the browser straight to the vendor, which knows the library's address (ExcludeIP);
* a request without a session that the browser marks as a cross-origin subresource fetch of a
  page of the *same* vendor (a web font, a ``crossorigin`` script or stylesheet, an image or a
  fetch in CORS mode, which browsers send without cookies) is forwarded without the membership
  assertion, and only a static asset (font, stylesheet, script, image) is relayed: anything
  else gets a 401 the page's script can read. A client forging those headers gets nothing a
  library licenses beyond the static files of the vendor's pages.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from proxy.membership import Membership
from proxy.vendors import Vendor

RESERVED_PREFIX = "/.libproxy/"
CONNECT_PATH = RESERVED_PREFIX + "connect"


class HostKind(enum.Enum):
    PROXY = "proxy"      # the proxy's own host name
    VENDOR = "vendor"    # a proxied host of a configured vendor
    UNKNOWN = "unknown"  # anything else under (or outside) the proxy's name


@dataclass(frozen=True, slots=True)
class Patron:
    """What the gate needs of a session: its groups, and whether it is an in-library one."""

    groups: frozenset[str]
    in_library: bool = False

    @classmethod
    def of(cls, membership: Membership | None) -> Patron | None:
        if membership is None:
            return None
        return cls(membership.groups, in_library=membership.in_library)


@dataclass(frozen=True, slots=True)
class Facts:
    host: HostKind
    method: str
    path: str  # the raw path, without the query
    vendor: Vendor | None  # set when host is VENDOR
    session: Patron | None
    library: frozenset[str]  # groups granted by the library network the client is on
    # A credentialless CORS subresource fetch by a page of this same vendor (Sec-Fetch-Mode:
    # cors, Sec-Fetch-Dest font/script/style/image/empty, Origin a proxied host of the vendor).
    subresource: bool = False


class Action(enum.Enum):
    OWN_PAGE = "own-page"            # the proxy's own routes
    NOT_CONFIGURED = "not-configured"
    NOT_FOUND = "not-found"          # a reserved path on a proxied host
    CONNECT = "connect"              # trade a sign-on ticket for this host's cookie
    SIGN_IN = "sign-in"              # redirect to sign in, coming back to this page
    SIGNED_OUT = "signed-out"        # "please sign in" (not a GET: cannot come back)
    NOT_LICENSED = "not-licensed"
    FORWARD = "forward"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    # FORWARD: whether the membership assertion goes along (False: anonymous use).
    member: bool = False
    # FORWARD: the groups of a new in-library session to create first, if any.
    new_network_session: frozenset[str] | None = None
    # FORWARD: relay only static assets (fonts, styles, scripts, images); anything else is a 401.
    static_only: bool = False


OWN_PAGE = Decision(Action.OWN_PAGE)
NOT_CONFIGURED = Decision(Action.NOT_CONFIGURED)
NOT_FOUND = Decision(Action.NOT_FOUND)
CONNECT = Decision(Action.CONNECT)
SIGN_IN = Decision(Action.SIGN_IN)
SIGNED_OUT = Decision(Action.SIGNED_OUT)
NOT_LICENSED = Decision(Action.NOT_LICENSED)
AS_MEMBER = Decision(Action.FORWARD, member=True)
ANONYMOUS = Decision(Action.FORWARD, member=False)
STATIC_ASSET = Decision(Action.FORWARD, member=False, static_only=True)
IN_LIBRARY_ASSET = Decision(Action.FORWARD, member=True)  # no session: its cookie would be dropped


def session_usable(session: Patron, library: frozenset[str]) -> bool:
    """False for an in-library session used off the library's network (or from a network that
    grants fewer groups): the laptop carried home."""
    return not session.in_library or session.groups <= library


def decide(facts: Facts) -> Decision:
    """The decision for one request; ``facts.session`` must already be usable (see above)."""
    if facts.host is HostKind.PROXY:
        return OWN_PAGE
    vendor = facts.vendor
    if facts.host is HostKind.UNKNOWN or vendor is None:
        return NOT_CONFIGURED
    if facts.path.startswith(RESERVED_PREFIX):
        return CONNECT if facts.path == CONNECT_PATH and facts.method == "GET" else NOT_FOUND
    session = facts.session
    if session is not None and vendor.licensed_for(session.groups):
        return AS_MEMBER
    if vendor.is_anonymous(facts.path):
        return ANONYMOUS
    if session is None and vendor.licensed_for(facts.library):
        if facts.subresource:
            return IN_LIBRARY_ASSET
        return Decision(Action.FORWARD, member=True, new_network_session=facts.library)
    if session is None and facts.subresource and facts.method in ("GET", "HEAD"):
        return STATIC_ASSET
    if session is None:
        return SIGN_IN if facts.method in ("GET", "HEAD") else SIGNED_OUT
    return NOT_LICENSED


class StartAction(enum.Enum):
    FORM = "form"                    # show the sign-in form
    DIRECT = "direct"                # in the library, on_site = "direct": straight to the vendor
    CONNECT = "connect"              # to the vendor's proxied hosts with the current session
    CONNECT_NETWORK = "connect-network"  # the same, in a new in-library session
    NOT_LICENSED = "not-licensed"
    DATABASES = "databases"          # signed in, no target: the list of databases


@dataclass(frozen=True, slots=True)
class Start:
    action: StartAction
    new_network_session: frozenset[str] | None = None


def start(vendor: Vendor | None, session: Patron | None, library: frozenset[str]) -> Start:
    """What a starting-point link does (``vendor`` None: the link names no vendor); the link's
    vendor, when given, is already known to be configured."""
    if vendor is not None and vendor.licensed_for(library):
        if vendor.on_site == "direct":
            return Start(StartAction.DIRECT)
        if session is None or not vendor.licensed_for(session.groups):
            return Start(StartAction.CONNECT_NETWORK, new_network_session=library)
    if session is None:
        return Start(StartAction.FORM)
    if vendor is None:
        return Start(StartAction.DATABASES)
    if not vendor.licensed_for(session.groups):
        return Start(StartAction.NOT_LICENSED)
    return Start(StartAction.CONNECT)


def after_sign_in(vendor: Vendor | None, groups: frozenset[str]) -> StartAction:
    """Where a patron who just signed in goes: the vendor, "not licensed", or the list."""
    if vendor is None:
        return StartAction.DATABASES
    return StartAction.CONNECT if vendor.licensed_for(groups) else StartAction.NOT_LICENSED
