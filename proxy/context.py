"""The parts wired at start, each under its own typed application key, and per-request values.

Each key holds one part with one concept; handlers take the parts they use and nothing else:

    CONFIG      the configuration in force            SITE       the proxy's name and cookies
    ROUTES      vendor routes (swapped whole on reload) SESSIONS  the session store
    PATRONS     the patron source (Authenticator)     FORWARDER  sends requests to vendors
    PAGES       the proxy's own pages                 RECORDS    statistics, security memory
    CLIENTS     who the client is, and on which library network
    ASSERTIONS  the membership assertion minter (for the JWKS)
    NEEDED_HOSTS hosts vendors' pages tried to load from (CSP reports)
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from aiohttp import web

from proxy.assertion import AssertionMinter
from proxy.config import Config
from proxy.forward.handler import Forwarder
from proxy.forward.route import Routes
from proxy.network import IPAddress, IPNetwork, Networks, client_address
from proxy.patrons.base import Authenticator
from proxy.records.needhosts import NeededHosts
from proxy.records.service import Records
from proxy.sessions import Session, SessionStore
from proxy.web.pages import Pages


@dataclass(frozen=True, slots=True)
class Site:
    """The proxy's public identity: where it is, and the names of the cookies it sets."""

    public_origin: str  # "https://proxy.library.org"
    host: str  # the proxy's host[:port], under which vendor hosts are served
    secure_cookies: bool  # over https: Secure cookies with __Host-/__Secure- prefixes
    cookie_name: str  # the session cookie, host-only on every host
    bind_cookie_name: str  # the domain-wide browser binding of sign-on tickets
    csrf_cookie_name: str  # the sign-in form's CSRF token

    @classmethod
    def from_config(cls, config: Config) -> Site:
        https = config.proxy.scheme == "https"
        return cls(
            public_origin=config.proxy.public_origin,
            host=config.proxy.host.lower(),
            secure_cookies=https,
            cookie_name="__Host-libproxy" if https else "libproxy",
            bind_cookie_name="__Secure-libproxy_bind" if https else "libproxy_bind",
            # __Host-: over https the browser refuses it when set with a Domain (from a proxied host).
            csrf_cookie_name="__Host-libproxy_csrf" if https else "libproxy_csrf",
        )

    @property
    def cookie_names(self) -> frozenset[str]:
        """Every cookie the proxy sets: none of them may ever reach a vendor."""
        return frozenset({self.cookie_name, self.bind_cookie_name, self.csrf_cookie_name})


@dataclass(frozen=True, slots=True)
class Clients:
    """Who the client is (behind trusted proxies only) and which library network it is on."""

    networks: Networks
    trusted_proxies: tuple[IPNetwork, ...]
    forwarded_header: str

    def address(self, request: web.Request) -> IPAddress | None:
        header = self.forwarded_header
        return client_address(request.remote, request.headers.getall(header, ()), header, self.trusted_proxies)


CONFIG = web.AppKey("config", Config)
# The staff listener's socket when the parent of several workers bound it before forking (the
# first worker serves on it); without one, the staff listener binds [admin] listen itself.
ADMIN_SOCKET = web.AppKey("admin_socket", socket.socket)
SITE = web.AppKey("site", Site)
ROUTES = web.AppKey("routes", Routes)
SESSIONS = web.AppKey[SessionStore]("sessions")
PATRONS = web.AppKey[Authenticator]("patrons")
FORWARDER = web.AppKey("forwarder", Forwarder)
PAGES = web.AppKey("pages", Pages)
RECORDS = web.AppKey("records", Records)
CLIENTS = web.AppKey("clients", Clients)
ASSERTIONS = web.AppKey("assertions", AssertionMinter)
NEEDED_HOSTS = web.AppKey("needed_hosts", NeededHosts)

# Per-request values set by the middleware.
SESSION = web.RequestKey("libproxy.session", Session)
# The client's address (never logged, stored or sent); absent when the peer is unknown.
CLIENT = web.RequestKey[IPAddress]("libproxy.client")
# Groups granted by the library network the client is on (empty: none).
LIBRARY_GROUPS = web.RequestKey[frozenset[str]]("libproxy.library")


def current_session(request: web.Request) -> Session | None:
    return request.get(SESSION)


def library_groups(request: web.Request) -> frozenset[str]:
    groups = request.get(LIBRARY_GROUPS)
    return groups if groups is not None else frozenset()


def client(request: web.Request) -> IPAddress | None:
    return request.get(CLIENT)


def single_cookie(request: web.Request, name: str) -> str | None:
    """The value of one cookie, or None when absent or sent more than once.

    Cheaper than parsing every cookie on every proxied request; a name sent twice is refused
    because the second copy can only be a cookie planted by someone else (cookie tossing).
    """
    found: str | None = None
    for header in request.headers.getall("Cookie", ()):
        for pair in header.split(";"):
            key, sep, value = pair.partition("=")
            if sep and key.strip() == name:
                if found is not None:
                    return None
                found = value.strip().strip('"')
    return found
