"""Mapping of URL-bearing headers between vendor space and proxy space (pure functions).

Every function takes the header *value* and returns the new value, or ``None`` meaning "do not
send this header". Nothing here emits a URL outside the proxy's host space or a non-http(s) URL.

Response headers (vendor -> browser):

* ``Location``/``Content-Location``: a relative reference stays as it is (with proxy by hostname
  it already resolves to the proxied host); an absolute or protocol-relative URL of a configured
  origin becomes its proxied URL; anything else (an unconfigured host, ``javascript:``,
  ``data:``, any other scheme, a malformed value) gives ``None`` and the caller answers with a
  neutral page instead of redirecting.
* ``Refresh``: the URL part is mapped like ``Location``; ``None`` if it cannot be.
* ``Link``: each ``<url>`` is mapped; link-values pointing outside the proxy are removed.
* ``Content-Security-Policy``: vendor hosts become proxied hosts, wildcards and bare schemes
  become the proxy's own wildcard, other hosts are removed, keywords, nonces and hashes are
  kept, reporting directives are removed (reports would carry proxied URLs to the vendor).
* ``Access-Control-Allow-Origin``: ``*`` and ``null`` stay; a configured origin is mapped;
  anything else is dropped, so CORS fails closed.

Request headers (browser -> vendor):

* ``Origin``: a proxied origin becomes the vendor origin; anything else is dropped.
* ``Referer``: mapped back only when it is a proxied page of the *same vendor* as the request's
  target; every other referer (another vendor, the proxy's own pages, third parties) is dropped.

``Set-Cookie``/``Cookie`` are not handled here: vendor cookies live in the server-side jar.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import quote

from proxy.rewrite.hosts import RewriteTable, Target
from proxy.vendors import Origin, parse_absolute_url

# Sent with every proxied response: cross-origin requests (between proxied vendor hosts, or to
# anything the rewriter missed) carry the origin only, never the path and query.
REFERRER_POLICY: Final = "strict-origin-when-cross-origin"

_SCHEME: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
# SECURITY: characters browsers strip or reinterpret in URLs (tab, newline, backslash, controls)
# could turn a harmless-looking relative URL into "//evil.example"; values with them are refused.
_UNSAFE: Final = re.compile(r"[\x00-\x20\x7f\\]")
# SECURITY: a vendor's header bytes that are not UTF-8 reach us as lone surrogates (aiohttp
# decodes with "surrogateescape"), and aiohttp's header writer drops them when it sends the
# response: "\xff//evil.example" would go out as "//evil.example". Surrogates and C1 controls
# (and the C0 ones above) in a URL-bearing header are refused before any mapping. (A tab is
# whitespace between a header's parts; map_url refuses it through _UNSAFE.)
_HOSTILE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")
# Printable ASCII: kept as it is when non-ASCII characters of a URL are percent-encoded.
_PRINTABLE: Final = "".join(chr(c) for c in range(0x21, 0x7F))
_REFRESH: Final = re.compile(
    r"""^\s*(?P<delay>\d+(?:\.\d*)?)\s*(?:[;,]\s*(?:url\s*=\s*)?(?P<q>['"]?)(?P<url>.*?)(?P=q)\s*)?$""",
    re.IGNORECASE | re.DOTALL | re.ASCII,  # ASCII: "\d" must not match other scripts' digits
)
_KEYWORD_SOURCES: Final = frozenset({
    "'self'", "'none'", "'unsafe-inline'", "'unsafe-eval'", "'strict-dynamic'", "'unsafe-hashes'",
    "'report-sample'", "'wasm-unsafe-eval'", "'unsafe-allow-redirects'", "'inline-speculation-rules'",
})
_LOCAL_SCHEMES: Final = frozenset({"data:", "blob:", "mediastream:", "filesystem:"})
_NETWORK_SCHEMES: Final = frozenset({"http:", "https:", "ws:", "wss:"})
_SOURCE_LIST_DIRECTIVES: Final = frozenset({
    "default-src", "script-src", "script-src-elem", "script-src-attr", "style-src", "style-src-elem",
    "style-src-attr", "img-src", "font-src", "connect-src", "media-src", "object-src", "frame-src",
    "child-src", "worker-src", "manifest-src", "prefetch-src", "form-action", "frame-ancestors",
    "base-uri", "navigate-to", "fenced-frame-src",
})
_REPORTING_DIRECTIVES: Final = frozenset({"report-uri", "report-to"})
_UPGRADE_DIRECTIVES: Final = frozenset({"upgrade-insecure-requests", "block-all-mixed-content"})
_HOST_SOURCE: Final = re.compile(
    r"^(?:(?P<scheme>[a-z][a-z0-9+.-]*)://)?(?P<host>\*|(?:\*\.)?[a-z0-9_.-]+)"
    r"(?::(?P<port>\d{1,5}|\*))?(?P<path>/[^\s;,]*)?$"
)
_ETAG: Final = re.compile(r'^\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*$')
_ETAG_MARK: Final = ".rw-"


class HeaderMapper:
    """Header mapping for one RewriteTable (build once, next to the table)."""

    def __init__(self, table: RewriteTable) -> None:
        self.table = table
        self.vendors = table.vendors
        scheme = table.proxy_scheme
        self._wild = f"{scheme}://*.{table.proxy_host}"
        self._wild_ws = f"{'wss' if scheme == 'https' else 'ws'}://*.{table.proxy_host}"

    # -- vendor -> browser ------------------------------------------------------------------

    def _target(self, origin: Origin, explicit_port: bool, context_scheme: str) -> Target | None:
        port = origin.port if explicit_port else None
        return self.table.forward_target(origin.host, origin.scheme, port, context_scheme)

    def map_url(self, value: str, context_scheme: str = "https") -> str | None:
        """A vendor URL as the browser should see it, or None when it must not be emitted.

        ``context_scheme`` is the scheme of the vendor response (for protocol-relative URLs).
        """
        # SECURITY: non-UTF-8 bytes (surrogates here) and controls would be dropped or read
        # differently on the way to the browser, changing the URL after it was checked.
        if not value or len(value) > 8192 or _UNSAFE.search(value) or _HOSTILE.search(value):
            return None
        if value.startswith("//"):
            value = f"{context_scheme}:{value}"
        elif _SCHEME.match(value) is None:
            # A relative reference ("/path", "page", "?q", "#f"): it resolves against the proxied
            # URL in the browser. "//" was handled above and "\" refused, so it cannot escape.
            # SECURITY: what remains non-ASCII (well-formed UTF-8 text) is percent-encoded, as a
            # browser would, so the header goes out in ASCII exactly as it was checked.
            return value if value.isascii() else quote(value, safe=_PRINTABLE)
        parsed = parse_absolute_url(value)
        if parsed is None:
            return None  # SECURITY: javascript:, data:, ftp:, userinfo, odd hosts: never emitted
        explicit_port = self._has_port(value)
        target = self._target(parsed.origin, explicit_port, context_scheme)
        if target is None:
            # A vendor echoing back a proxied URL it was given (a "return to" parameter the
            # browser sent in proxy terms) already points where it should.
            # SECURITY: re-serialised (host normalised, path percent-encoded), so only ASCII goes out.
            return f"{parsed.origin}{parsed.rest}" if self._in_proxy_space(parsed.origin) else None
        return f"{target.scheme}://{target.netloc}{parsed.rest}"

    def _in_proxy_space(self, origin: Origin) -> bool:
        """True for the proxy's own host or one of its proxied hosts."""
        if origin.scheme != self.table.proxy_scheme:
            return False
        return origin.netloc == self.table.proxy_host or self.vendors.origin_for_host(origin.netloc) is not None

    @staticmethod
    def _has_port(url: str) -> bool:
        authority = url.split("://", 1)[1]
        for stop in "/?#":
            authority = authority.split(stop, 1)[0]
        return ":" in authority

    def location(self, value: str, context_scheme: str = "https") -> str | None:
        """``Location``: mapped URL, the same relative reference, or None (show a neutral page)."""
        return self.map_url(value.strip(" "), context_scheme)

    def content_location(self, value: str, context_scheme: str = "https") -> str | None:
        """``Content-Location``: as ``location``; None means drop the header."""
        return self.map_url(value.strip(" "), context_scheme)

    def refresh(self, value: str, context_scheme: str = "https") -> str | None:
        """``Refresh: 5; url=...``: the URL mapped like ``location``; None means drop the header."""
        # SECURITY: a byte that is not UTF-8, or a control, anywhere in the value: drop it whole.
        if _HOSTILE.search(value):
            return None
        match = _REFRESH.match(value)
        if match is None:
            return None
        delay = match.group("delay")
        url = match.group("url")
        if not url:
            return delay
        mapped = self.map_url(url.strip(), context_scheme)
        return None if mapped is None else f"{delay}; url={mapped}"

    def link(self, value: str, context_scheme: str = "https") -> str | None:
        """``Link``: every ``<url>`` mapped; link-values that would leave the proxy are dropped."""
        # SECURITY: a byte that is not UTF-8, or a control, anywhere in the value: drop it whole
        # (aiohttp would drop the byte on the way out, and what is left was never checked).
        if _HOSTILE.search(value):
            return None
        kept: list[str] = []
        for item in _split_links(value):
            if not item.startswith("<") or ">" not in item:
                continue
            url, rest = item[1:].split(">", 1)
            mapped = self.map_url(url.strip(), context_scheme)
            if mapped is not None:
                kept.append(f"<{mapped}>{rest}")
        return ", ".join(kept) or None

    def access_control_allow_origin(self, value: str) -> str | None:
        """``Access-Control-Allow-Origin``: ``*``/``null`` kept, a vendor origin mapped, else None."""
        value = value.strip()
        if value in ("*", "null"):
            return value
        parsed = parse_absolute_url(value)
        if parsed is None or parsed.rest not in ("/", "") or value.endswith("/"):
            return None
        target = self._target(parsed.origin, self._has_port(value), parsed.origin.scheme)
        # SECURITY: an origin outside the vendor table is dropped, so CORS fails closed.
        return None if target is None else f"{target.scheme}://{target.netloc}"

    def content_security_policy(self, value: str, context_scheme: str = "https") -> str | None:
        """``Content-Security-Policy`` (or ``-Report-Only``) in proxy space; None if nothing is left.

        Host sources of configured origins become proxied origins; ``*``, ``https:`` and
        wildcards over a configured domain become ``<proxy scheme>://*.<proxy host>`` (the
        proxy's own space, which is as far as a proxied page can reach); any other host source
        is removed, and a source list left empty becomes ``'none'`` (fail closed).
        ``upgrade-insecure-requests`` is removed when the proxy itself is plain http.
        """
        # SECURITY: aiohttp drops a surrogate (a byte that was not UTF-8) when it sends a header,
        # so "report-\udcffuri" would go out as the "report-uri" removed below: drop it whole.
        if _HOSTILE.search(value):
            return None
        policies: list[str] = []
        for policy in value.split(","):
            directives: list[str] = []
            for raw in policy.split(";"):
                tokens = raw.split()
                if not tokens:
                    continue
                name = tokens[0].lower()
                if name in _REPORTING_DIRECTIVES:
                    continue  # SECURITY: reports would carry proxied page URLs to the vendor
                if name in _UPGRADE_DIRECTIVES and self.table.proxy_scheme == "http":
                    continue  # it would upgrade proxied http URLs to an https the proxy lacks
                if name in _SOURCE_LIST_DIRECTIVES:
                    sources = self._map_sources(name, tokens[1:], context_scheme)
                    directives.append(" ".join([name, *sources]))
                else:
                    directives.append(" ".join([name, *tokens[1:]]))
            if directives:
                policies.append("; ".join(directives))
        return ", ".join(policies) or None

    def _map_sources(self, directive: str, sources: list[str], context_scheme: str) -> list[str]:
        # WebSocket URLs are governed by connect-src (and default-src when it is absent).
        wild = [self._wild, self._wild_ws] if directive in ("connect-src", "default-src") else [self._wild]
        out: list[str] = []
        for source in sources:
            low = source.lower()
            if low in _KEYWORD_SOURCES or low.startswith(("'nonce-", "'sha256-", "'sha384-", "'sha512-")):
                mapped = [source]
            elif low in _LOCAL_SCHEMES:
                mapped = [low]
            elif low in _NETWORK_SCHEMES or low == "*":
                mapped = wild
            else:
                mapped = self._map_host_source(low, context_scheme, wild)
            for item in mapped:
                if item not in out:
                    out.append(item)
        if sources and not out:
            out.append("'none'")  # SECURITY: an emptied source list must block, not allow
        return out

    def _map_host_source(self, source: str, context_scheme: str, wild: list[str]) -> list[str]:
        match = _HOST_SOURCE.match(source)
        if match is None:
            return []
        scheme, host, port_text, path = match.group("scheme", "host", "port", "path")
        if scheme is not None and scheme not in ("http", "https", "ws", "wss"):
            return []
        if host.startswith("*"):
            domain = host[2:]
            covered = any(h == domain or h.endswith("." + domain) for h in self.table.hosts)
            return wild if covered else []
        web = {"ws": "http", "wss": "https"}.get(scheme or "", scheme)
        port = int(port_text) if port_text and port_text != "*" else None
        if port is not None and not 0 < port < 65536:
            return []
        target = self.table.forward_target(host, web, port, context_scheme)
        if target is None:
            return []
        if scheme in ("ws", "wss"):
            out_scheme = "wss" if target.scheme == "https" else "ws"
        else:
            out_scheme = target.scheme
        return [f"{out_scheme}://{target.netloc}{path or ''}"]

    def proxy_policy(self) -> str:
        """A CSP to add to every proxied HTML response (browsers enforce it and the vendor's).

        It keeps subresources, connections, forms, frames and ``<base>`` inside the proxy's host
        space, so a URL the rewriter missed fails in the browser instead of reaching the vendor
        or a tracker with the patron's address.
        """
        own = f"'self' {self._wild}"
        return (
            f"default-src {own} data: blob: 'unsafe-inline' 'unsafe-eval'; "
            f"connect-src {own} {self._wild_ws} data: blob:; "
            f"form-action {own}; frame-src {own} data: blob:; base-uri {own}"
        )

    # -- browser -> vendor ------------------------------------------------------------------

    def _vendor_origin(self, scheme: str, netloc: str) -> Origin | None:
        if scheme != self.table.proxy_scheme:
            return None
        return self.vendors.origin_for_host(netloc)

    def origin_to_vendor(self, value: str) -> str | None:
        """A request ``Origin`` for the vendor: a proxied origin mapped back, else None (drop)."""
        value = value.strip()
        if value == "null":
            return None  # an opaque origin tells the vendor nothing useful; drop it
        scheme, sep, netloc = value.partition("://")
        if not sep or not netloc or _UNSAFE.search(netloc) or "/" in netloc or "@" in netloc:
            return None
        origin = self._vendor_origin(scheme.lower(), netloc.lower())
        return None if origin is None else str(origin)

    def referer_to_vendor(self, value: str, target: Origin) -> str | None:
        """A request ``Referer`` for ``target``: mapped back when it is a proxied page of the same
        vendor as ``target``; None (drop) for anything else. The fragment is removed."""
        parsed = parse_absolute_url(value.strip())
        if parsed is None:
            return None
        proxied = parsed.origin
        netloc = proxied.host if proxied.default_port else f"{proxied.host}:{proxied.port}"
        origin = self._vendor_origin(proxied.scheme, netloc)
        if origin is None:
            return None
        mine = self.vendors.match(origin)
        # SECURITY: a page of another vendor (or of the proxy) must not tell this vendor where
        # the patron came from.
        if mine is None or mine is not self.vendors.match(target):
            return None
        rest = parsed.rest.split("#", 1)[0]
        return f"{origin}{rest}"


def _split_links(value: str) -> list[str]:
    """Split a Link header on top-level commas (not inside <...> or quoted strings)."""
    items: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for index, char in enumerate(value):
        if quoted:
            if char == '"' and value[index - 1] != "\\":
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "<":
            depth += 1
        elif char == ">":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            items.append(value[start:index].strip())
            start = index + 1
    items.append(value[start:].strip())
    return [item for item in items if item]


# ---------------------------------------------------------------------------------------------
# Validators of rewritten bodies


def etag_for_rewritten(etag: str | None, fingerprint: str) -> str | None:
    """The ETag to send with a rewritten body: weak, and tied to the rewrite table.

    The body differs from the vendor's bytes, so the vendor's tag cannot be sent as is; a weak
    tag ``W/"<vendor tag>.rw-<fingerprint>"`` changes when the vendor's body or the proxy
    configuration changes. None (send no ETag) when the vendor sent none or a malformed one.
    """
    if etag is None:
        return None
    match = _ETAG.match(etag)
    if match is None:
        return None
    return f'W/"{match.group(2)}{_ETAG_MARK}{fingerprint}"'


def if_none_match_to_vendor(value: str, fingerprint: str) -> str | None:
    """``If-None-Match`` for the vendor: tags minted by ``etag_for_rewritten`` are turned back
    into the vendor's (weak comparison applies to If-None-Match), tags minted under another
    fingerprint are dropped (the body would differ now), others pass. None if none is left."""
    if value.strip() == "*":
        return "*"
    kept: list[str] = []
    for item in value.split(","):
        match = _ETAG.match(item)
        if match is None:
            continue
        opaque = match.group(2)
        base, mark, fp = opaque.rpartition(_ETAG_MARK)
        if mark:
            if fp == fingerprint:
                kept.append(f'W/"{base}"')
            continue
        kept.append(item.strip())
    return ", ".join(kept) or None
