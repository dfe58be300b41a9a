"""Which request headers may leave for a vendor, and which response headers may reach a browser.

Outbound headers are built from an ALLOW-list: a header not named here never leaves, whatever
its spelling (``X_Forwarded_For``, ``x.real.ip`` and odd case included, since only exact
lower-case names are looked up). Headers the client names in ``Connection`` are dropped first,
and the proxy's own headers (Host, the assertion, vendor cookies) are added by the caller *after*
this filter, so a client can neither forge them nor make the proxy drop them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from proxy.forward.fingerprint import first_language, reduce_user_agent

# Request headers a vendor may see. Everything identifying is absent by construction:
# Cookie (the proxy's), Authorization, X-Forwarded-*, Forwarded, X-Real-IP, True-Client-IP,
# Via, From, client hints (Sec-CH-*), tracing headers, and anything else not listed.
ALLOWED_REQUEST = frozenset({
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "access-control-request-headers",
    "access-control-request-method",
    "cache-control",
    "content-encoding",
    "content-language",
    "content-type",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "origin",
    "pragma",
    "range",
    "referer",
    "sec-fetch-dest",
    "sec-fetch-mode",
    "sec-fetch-site",
    "sec-fetch-user",
    "upgrade-insecure-requests",
    "user-agent",
    "x-requested-with",
})

# Headers that may appear once only; duplicates are a parsing ambiguity, so the first wins.
SINGLE_VALUED = frozenset({
    "content-type", "content-encoding", "if-range", "if-modified-since", "if-unmodified-since",
    "origin", "range", "referer", "user-agent",
})

# Hop-by-hop headers (RFC 9110 section 7.6.1) plus the non-standard ones seen in the wild.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade",
})

# Encodings the proxy can decode (for rewriting) and so may let a vendor use.
DECODABLE = ("gzip", "deflate", "br", "zstd")

# Response headers that never reach the browser from a vendor.
DROPPED_RESPONSE = HOP_BY_HOP | frozenset({
    "content-length",          # the proxy frames the body itself
    "set-cookie",              # vendor cookies stay in the server-side jar
    "set-cookie2",
    "strict-transport-security",  # a vendor must not pin policy onto the proxy's host names
    "public-key-pins",
    "public-key-pins-report-only",
    "alt-svc",                 # could send the browser to an endpoint outside the proxy
    "report-to",               # reporting endpoints would reach the vendor directly from the
    "reporting-endpoints",     # patron's browser, with the patron's address
    "nel",
    "clear-site-data",         # would wipe the proxy's own session cookie
    "service-worker-allowed",  # would widen a vendor's service worker to its whole proxied host,
                               # a worker that outlives sign-out
    "set-login",               # a login state signalled to the browser under the proxy's name
    "expect-ct",
})


def connection_tokens(values: Iterable[str]) -> frozenset[str]:
    """Header names listed in Connection header values, lower-cased (RFC 9110 7.6.1)."""
    tokens: set[str] = set()
    for value in values:
        for token in value.split(","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return frozenset(tokens)


@functools.lru_cache(maxsize=256)
def filter_accept_encoding(value: str) -> str | None:
    """Keep only the codings the proxy can decode; None when nothing is left."""
    kept = []
    for item in value.split(","):
        coding = item.split(";", 1)[0].strip().lower()
        if coding in DECODABLE or coding == "identity":
            kept.append(item.strip())
    return ", ".join(kept) if kept else None


@dataclass(frozen=True)
class OutboundPolicy:
    """What the caller knows about this request, for the few headers that are mapped."""

    map_origin: Callable[[str], str | None]   # proxied origin -> vendor origin, None = drop
    map_referer: Callable[[str], str | None]  # proxied URL -> vendor URL (same vendor only)
    user_agent: str | None = None             # replaces the browser's, when configured
    cookie_passthrough: bool = False          # forward browser-set (script) cookies
    proxy_cookie_names: frozenset[str] = frozenset()
    reduce_user_agent: bool = False           # browser family, major version, platform class only
    first_language: bool = False              # Accept-Language: its first language only


def outbound_headers(inbound: Iterable[tuple[str, str]], policy: OutboundPolicy) -> list[tuple[str, str]]:
    """The request headers to send to a vendor, from the browser's headers.

    Pure function: the caller adds Host, Content-Length, vendor cookies and the assertion.
    """
    pairs = [(name.lower(), name, value) for name, value in inbound]
    # SECURITY: a header named in Connection is hop-by-hop for this request and is dropped;
    # the proxy's own headers are added afterwards, so naming them here cannot remove them.
    dropped = connection_tokens(v for lname, _, v in pairs if lname == "connection")
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    browser_cookies: list[str] = []
    for lname, name, value in pairs:
        # SECURITY: allow-list by exact lower-case name; "_" and "." variants never match.
        if lname not in ALLOWED_REQUEST or lname in dropped:
            if lname == "cookie" and policy.cookie_passthrough and lname not in dropped:
                browser_cookies.append(value)
            continue
        if lname in SINGLE_VALUED:
            if lname in seen:
                continue
            seen.add(lname)
        mapped: str | None = value
        if lname in _MAPPED:
            if lname == "origin":
                mapped = value if value == "null" else policy.map_origin(value)
            elif lname == "referer":
                mapped = policy.map_referer(value)
            elif lname == "accept-encoding":
                mapped = filter_accept_encoding(value)
            elif lname == "accept-language":
                mapped = first_language(value) if policy.first_language else value
            elif policy.user_agent:  # user-agent
                mapped = policy.user_agent
            elif policy.reduce_user_agent:
                mapped = reduce_user_agent(value)
        if mapped is not None:
            out.append((name, mapped))
    if policy.user_agent and "user-agent" not in seen:
        out.append(("User-Agent", policy.user_agent))
    if browser_cookies:
        kept = _without_proxy_cookies(browser_cookies, policy.proxy_cookie_names)
        if kept:
            out.append(("Cookie", kept))
    return out


_MAPPED = frozenset({"origin", "referer", "accept-encoding", "accept-language", "user-agent"})


_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def is_proxy_cookie(name: str) -> bool:
    """True for any name the proxy's cookies could have (``libproxy...`` with or without the
    ``__Host-``/``__Secure-`` prefixes, in any case), and for any name that is not a valid cookie
    name at all: a server could read "0 __Host-libproxy" as the proxy's own."""
    stripped = name.strip()
    # SECURITY: broad on purpose: no spelling, prefix or junk around it gets a proxy cookie out.
    return "libproxy" in stripped.lower() or not _COOKIE_NAME.fullmatch(stripped)


def _without_proxy_cookies(values: list[str], names: frozenset[str]) -> str:
    """Browser cookie pairs minus the proxy's own session and sign-in cookies."""
    kept = []
    for value in values:
        for pair in value.split(";"):
            pair = pair.strip()
            name = pair.split("=", 1)[0].strip()
            # SECURITY: no cookie of the proxy's own ever leaves (session, ticket binding, CSRF),
            # under any prefix or case: the binding cookie is a stable per-browser value that
            # would let vendors link visits.
            if pair and name not in names and not is_proxy_cookie(name):
                kept.append(pair)
    return "; ".join(kept)


def response_headers(inbound: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Vendor response headers that may go on to the browser, before URL mapping."""
    pairs = [(k.lower(), k, v) for k, v in inbound]
    dropped = DROPPED_RESPONSE
    connection = [v for lk, _, v in pairs if lk == "connection"]
    if connection:
        dropped = dropped | connection_tokens(connection)
    return [(k, v) for lk, k, v in pairs if lk not in dropped]
