"""The access policy as a table: every rule of DESIGN.md and the README, one or more rows each.

``gate.decide`` and ``gate.start`` are pure, so each row is a plain value in, a plain value out.
The end-to-end suites check that the middleware acts on these decisions.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from proxy import gate
from proxy.gate import (
    ANONYMOUS,
    AS_MEMBER,
    CONNECT,
    IN_LIBRARY_ASSET,
    NOT_CONFIGURED,
    NOT_FOUND,
    NOT_LICENSED,
    OWN_PAGE,
    SIGN_IN,
    SIGNED_OUT,
    STATIC_ASSET,
    Decision,
    Facts,
    HostKind,
    Patron,
    StartAction,
)
from proxy.membership import Membership
from proxy.vendors import Vendor, VendorConfig, VendorMap


def _vendor(vid: str, **kw: object) -> Vendor:
    base: dict[str, object] = {"id": vid, "title": vid.title(), "start": f"https://www.{vid}.example/",
                               "hosts": (f"www.{vid}.example",), "domains": (), "groups": frozenset({"wolcott"})}
    base.update(kw)
    vmap = VendorMap([VendorConfig(**base)], "proxy.lib.example", "https")  # type: ignore[arg-type]
    return vmap.vendors[0]


GALE = _vendor("gale", groups=frozenset({"wolcott", "bibliomation"}))
DERBY_ONLY = _vendor("derbydb", groups=frozenset({"derby"}))
OPEN = _vendor("openlib", anonymous=True)
HELP = _vendor("helpful", anonymous_paths=("/help/*", "/open"))
DIRECT = _vendor("direct", on_site="direct")

MEMBER = Patron(frozenset({"wolcott", "bibliomation"}))
DERBY = Patron(frozenset({"derby"}))
IN_LIBRARY = Patron(frozenset({"wolcott", "bibliomation"}), in_library=True)
WOLCOTT_NET = frozenset({"wolcott", "bibliomation"})
NO_NET: frozenset[str] = frozenset()


def facts(vendor: Vendor | None, session: Patron | None = None, *, path: str = "/page", method: str = "GET",
          library: frozenset[str] = NO_NET, host: HostKind = HostKind.VENDOR) -> Facts:
    return Facts(host=host, method=method, path=path, vendor=vendor, session=session, library=library)


NETWORK_FORWARD = Decision(gate.Action.FORWARD, member=True, new_network_session=WOLCOTT_NET)

CASES: list[tuple[str, Facts, Decision]] = [
    # The proxy's own host and hosts that name nothing configured.
    ("proxy host, no session", facts(None, host=HostKind.PROXY, path="/login"), OWN_PAGE),
    ("proxy host, signed in", facts(None, MEMBER, host=HostKind.PROXY, path="/databases"), OWN_PAGE),
    ("proxy host, reserved-looking path is still the proxy's", facts(None, host=HostKind.PROXY,
                                                                     path="/.libproxy/connect"), OWN_PAGE),
    ("unknown host", facts(None, host=HostKind.UNKNOWN), NOT_CONFIGURED),
    ("unknown host, even signed in and in the library", facts(None, MEMBER, host=HostKind.UNKNOWN,
                                                                library=WOLCOTT_NET), NOT_CONFIGURED),
    # Reserved paths on proxied hosts.
    ("connect ticket (GET)", facts(GALE, path="/.libproxy/connect"), CONNECT),
    ("connect ticket, signed in", facts(GALE, MEMBER, path="/.libproxy/connect"), CONNECT),
    ("connect by POST is not a route", facts(GALE, path="/.libproxy/connect", method="POST"), NOT_FOUND),
    ("other reserved path", facts(GALE, MEMBER, path="/.libproxy/logout"), NOT_FOUND),
    ("reserved prefix on an anonymous vendor", facts(OPEN, path="/.libproxy/x"), NOT_FOUND),
    # Members.
    ("licensed member, GET", facts(GALE, MEMBER), AS_MEMBER),
    ("licensed member, POST", facts(GALE, MEMBER, method="POST"), AS_MEMBER),
    ("licensed member in the library", facts(GALE, MEMBER, library=WOLCOTT_NET), AS_MEMBER),
    ("member of another library", facts(GALE, DERBY), NOT_LICENSED),
    ("member not licensed for a vendor of another library", facts(DERBY_ONLY, MEMBER), NOT_LICENSED),
    ("member not licensed, in the library of another", facts(DERBY_ONLY, MEMBER, library=WOLCOTT_NET),
     NOT_LICENSED),
    # Signed out.
    ("no session, GET: sign in and come back", facts(GALE), SIGN_IN),
    ("no session, HEAD", facts(GALE, method="HEAD"), SIGN_IN),
    ("no session, POST cannot come back", facts(GALE, method="POST"), SIGNED_OUT),
    ("no session, DELETE", facts(GALE, method="DELETE"), SIGNED_OUT),
    # Anonymous vendors and paths (AnonymousURL).
    ("anonymous vendor, no session", facts(OPEN), ANONYMOUS),
    ("anonymous vendor, POST", facts(OPEN, method="POST"), ANONYMOUS),
    ("anonymous vendor, licensed member is still a member", facts(OPEN, MEMBER), AS_MEMBER),
    ("anonymous vendor, unlicensed session", facts(OPEN, DERBY), ANONYMOUS),
    ("anonymous path", facts(HELP, path="/help/topics"), ANONYMOUS),
    ("anonymous exact path", facts(HELP, path="/open"), ANONYMOUS),
    ("anonymous path, member", facts(HELP, MEMBER, path="/help/topics"), AS_MEMBER),
    ("not an anonymous path", facts(HELP, path="/private"), SIGN_IN),
    ("prefix without its slash", facts(HELP, path="/helpdesk"), SIGN_IN),
    ("dot-segment traversal", facts(HELP, path="/help/../private"), SIGN_IN),
    ("encoded dots", facts(HELP, path="/help/%2e%2e/private"), SIGN_IN),
    ("encoded dots, upper case", facts(HELP, path="/help/%2E%2E/private"), SIGN_IN),
    ("encoded slash", facts(HELP, path="/help/..%2fprivate"), SIGN_IN),
    ("encoded backslash", facts(HELP, path="/help/..%5cprivate"), SIGN_IN),
    ("backslash", facts(HELP, path="/help/..\\private"), SIGN_IN),
    ("empty segment", facts(HELP, path="/help//private"), SIGN_IN),
    ("semicolon path parameter", facts(HELP, path="/help/..;/private"), SIGN_IN),
    ("encoded NUL", facts(HELP, path="/help/%00/../private"), SIGN_IN),
    ("double-encoded dots", facts(HELP, path="/help/%252e%252e/private"), SIGN_IN),
    ("trailing dot segment", facts(HELP, path="/help/."), SIGN_IN),
    # The library's own network (AutoLoginIP).
    ("in the library, no session: a new in-library session", facts(GALE, library=WOLCOTT_NET), NETWORK_FORWARD),
    ("in the library, POST: a new in-library session", facts(GALE, method="POST", library=WOLCOTT_NET),
     NETWORK_FORWARD),
    ("in the library, in-library session", facts(GALE, IN_LIBRARY, library=WOLCOTT_NET), AS_MEMBER),
    ("network that does not grant the vendor", facts(DERBY_ONLY, library=WOLCOTT_NET), SIGN_IN),
    ("anonymous path in the library", facts(HELP, path="/help/x", library=WOLCOTT_NET), ANONYMOUS),
    # Credentialless subresources of the same vendor's pages (fonts, crossorigin scripts).
    ("credentialless subresource, no session", replace(facts(GALE), subresource=True), STATIC_ASSET),
    ("credentialless subresource, HEAD", replace(facts(GALE, method="HEAD"), subresource=True), STATIC_ASSET),
    ("credentialless subresource cannot POST", replace(facts(GALE, method="POST"), subresource=True), SIGNED_OUT),
    ("subresource with a licensed session is a member", replace(facts(GALE, MEMBER), subresource=True),
     AS_MEMBER),
    ("subresource with an unlicensed session", replace(facts(GALE, DERBY), subresource=True), NOT_LICENSED),
    # Its answer's cookie would be dropped by the browser: a member, but no session made.
    ("subresource in the library: member, no session", replace(facts(GALE, library=WOLCOTT_NET),
                                                                subresource=True), IN_LIBRARY_ASSET),
    ("subresource in the library, network without the vendor", replace(
        facts(DERBY_ONLY, library=WOLCOTT_NET), subresource=True), STATIC_ASSET),
]


@pytest.mark.parametrize(("facts_", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(facts_: Facts, expected: Decision) -> None:
    assert gate.decide(facts_) == expected


USABLE: list[tuple[str, Patron, frozenset[str], bool]] = [
    ("a card session, at home", MEMBER, NO_NET, True),
    ("a card session, in the library", MEMBER, WOLCOTT_NET, True),
    ("in-library session, in the library", IN_LIBRARY, WOLCOTT_NET, True),
    ("in-library session, laptop carried home", IN_LIBRARY, NO_NET, False),
    ("in-library session, on a network granting fewer groups", IN_LIBRARY, frozenset({"wolcott"}), False),
    ("in-library session, on a network granting more", IN_LIBRARY, WOLCOTT_NET | {"derby"}, True),
]


@pytest.mark.parametrize(("patron", "library", "usable"), [c[1:] for c in USABLE], ids=[c[0] for c in USABLE])
def test_session_usable(patron: Patron, library: frozenset[str], usable: bool) -> None:
    assert gate.session_usable(patron, library) is usable


def test_laptop_carried_home_signs_in_with_a_card() -> None:
    """The two rules together, as the middleware applies them: the session is dropped, so the
    request is decided as one without a session."""
    usable = gate.session_usable(IN_LIBRARY, NO_NET)
    decision = gate.decide(facts(GALE, IN_LIBRARY if usable else None))
    assert decision == SIGN_IN


STARTS: list[tuple[str, Vendor | None, Patron | None, frozenset[str], gate.Start]] = [
    ("at home, signed out: the form", GALE, None, NO_NET, gate.Start(StartAction.FORM)),
    ("at home, signed in: to the vendor", GALE, MEMBER, NO_NET, gate.Start(StartAction.CONNECT)),
    ("at home, other library's card", GALE, DERBY, NO_NET, gate.Start(StartAction.NOT_LICENSED)),
    ("no target, signed out: the form", None, None, NO_NET, gate.Start(StartAction.FORM)),
    ("no target, signed in: the databases", None, MEMBER, NO_NET, gate.Start(StartAction.DATABASES)),
    ("no target, in the library", None, None, WOLCOTT_NET, gate.Start(StartAction.FORM)),
    ("in the library, signed out: in-library session", GALE, None, WOLCOTT_NET,
     gate.Start(StartAction.CONNECT_NETWORK, WOLCOTT_NET)),
    ("in the library, unlicensed card: in-library session", GALE, DERBY, WOLCOTT_NET,
     gate.Start(StartAction.CONNECT_NETWORK, WOLCOTT_NET)),
    ("in the library, signed in: keeps the session", GALE, MEMBER, WOLCOTT_NET, gate.Start(StartAction.CONNECT)),
    ("on-site direct, in the library: straight to the vendor", DIRECT, None, WOLCOTT_NET,
     gate.Start(StartAction.DIRECT)),
    ("on-site direct, signed in, in the library", DIRECT, MEMBER, WOLCOTT_NET, gate.Start(StartAction.DIRECT)),
    ("on-site direct, at home: the form", DIRECT, None, NO_NET, gate.Start(StartAction.FORM)),
    ("on-site direct, at home, signed in: proxied", DIRECT, MEMBER, NO_NET, gate.Start(StartAction.CONNECT)),
    ("network that does not grant the vendor", DERBY_ONLY, None, WOLCOTT_NET, gate.Start(StartAction.FORM)),
]


@pytest.mark.parametrize(("vendor", "patron", "library", "expected"), [c[1:] for c in STARTS],
                         ids=[c[0] for c in STARTS])
def test_start(vendor: Vendor | None, patron: Patron | None, library: frozenset[str], expected: gate.Start) -> None:
    assert gate.start(vendor, patron, library) == expected


def test_after_sign_in() -> None:
    assert gate.after_sign_in(GALE, MEMBER.groups) is StartAction.CONNECT
    assert gate.after_sign_in(GALE, DERBY.groups) is StartAction.NOT_LICENSED
    assert gate.after_sign_in(None, MEMBER.groups) is StartAction.DATABASES


def test_patron_of_a_membership() -> None:
    assert Patron.of(None) is None
    assert Patron.of(Membership(groups=frozenset({"wolcott"}), key="k" * 32)) == Patron(frozenset({"wolcott"}))
    network = Membership.on_network(WOLCOTT_NET)
    assert network.key is None and Patron.of(network) == IN_LIBRARY
