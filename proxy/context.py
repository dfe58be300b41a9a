"""The parts wired at start (``Services``) and the typed keys the request path uses."""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from proxy.assertion import AssertionMinter
from proxy.config import Config
from proxy.forward.headers import OutboundPolicy
from proxy.network import IPAddress, IPNetwork, Networks
from proxy.patrons.base import Authenticator
from proxy.records.service import Records
from proxy.rewrite import FindReplace, HeaderMapper, RewriteTable
from proxy.sessions import Session, SessionStore
from proxy.vendors import Origin, VendorMap
from proxy.web.pages import Pages


@dataclass
class Services:
    config: Config
    vendors: VendorMap
    store: SessionStore
    authenticator: Authenticator
    minter: AssertionMinter
    client: aiohttp.ClientSession
    pages: Pages
    secret: bytes
    cookie_name: str
    secure_cookies: bool
    networks: Networks
    trusted_proxies: tuple[IPNetwork, ...]
    records: Records
    rewrite: RewriteTable
    header_map: HeaderMapper
    proxy_policy: str  # the CSP added to proxied documents (header_map.proxy_policy(), built once)
    # Built on first use, by vendor id: outbound header policies, find/replace rules.
    policies: dict[str, OutboundPolicy] = field(default_factory=dict)
    replace_rules: dict[str, tuple[FindReplace, ...]] = field(default_factory=dict)


SERVICES = web.AppKey("services", Services)

# Per-request values set by the middlewares (aiohttp requests are dict-like).
SESSION = "libproxy.session"
VENDOR_ORIGIN = "libproxy.origin"
CLIENT = "libproxy.client"          # the client's address (never logged, stored or sent)
LIBRARY_GROUPS = "libproxy.library"  # groups granted by the library network it is on, if any


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def current_session(request: web.Request) -> Session | None:
    value = request.get(SESSION)
    return value if isinstance(value, Session) else None


def vendor_origin(request: web.Request) -> Origin | None:
    value = request.get(VENDOR_ORIGIN)
    return value if isinstance(value, Origin) else None


def library_groups(request: web.Request) -> frozenset[str]:
    value = request.get(LIBRARY_GROUPS)
    return value if isinstance(value, frozenset) else frozenset()


def client(request: web.Request) -> IPAddress | None:
    value = request.get(CLIENT)
    return value if value is not None else None


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
