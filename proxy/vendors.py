"""The vendor table: which hosts the proxy serves, and the reversible host <-> label mapping.

Proxy by hostname serves a vendor origin as one DNS label under the proxy's host:

    https://www.vendor.com        ->  www-vendor-com.<proxy host>
    http://www.vendor.com         ->  www-vendor-com---h.<proxy host>
    http://127.0.0.1:8081         ->  127-0-0-1---h8081.<proxy host>
    https://my-vendor.com:8443    ->  my--vendor-com---s8443.<proxy host>

Encoding rules (``encode_label``/``decode_label`` are exact inverses):

* in the host, "-" becomes "--" and "." becomes "-";
* because a DNS label never starts or ends with "-", a dot is never next to a dash, so in an
  encoded host every run of dashes is either exactly one (a dot) or of even length (escaped
  dashes). A run of exactly three dashes therefore cannot come from a host and separates the
  host from a suffix: optional "a" (the host part is an alias from the vendor table), then the
  scheme and port: nothing for https on 443, "h" for http on 80, "h<port>" or "s<port>" otherwise;
* a label longer than 63 characters (the DNS limit) is replaced by an alias, "<alias>---a...",
  which only the vendor table can resolve. Aliases come from the vendor's ``aliases`` option or
  are derived from the vendor id.

Matching is exact host, or dot-boundary domain (``vendor.com`` matches ``www.vendor.com`` and
``vendor.com``, never ``evilvendor.com``), on the lower-cased, trailing-dot-stripped, IDNA host.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes

from proxy.counters import NO_PATTERNS, CounterPatterns, parse_counter_patterns
from proxy.settings import Problems, Reader, shown

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_LABEL = 63

_SPLIT = re.compile(r"(?<!-)---(?!-)")
_SUFFIX = re.compile(r"^(a?)(?:h(\d*)|s(\d+))?\Z")
_HOST_PART = re.compile(r"^[a-z0-9-]+\Z")
_ENC_DASH_RUN = re.compile(r"-+")
# SECURITY: anything that could make layers disagree about the host (userinfo, backslashes,
# percent-encoding, whitespace, control characters) is refused outright in a URL's authority.
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<rest>[/?#].*)?$", re.S)
_AUTHORITY_BAD = re.compile(r"[@\\%\s\x00-\x1f\x7f]")
_URL_HOSTILE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_HOSTNAME = re.compile(r"^(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\Z")
VENDOR_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}\Z")


# ----------------------------------------------------------------------------------------------
# Host-name syntax


def parse_hostport(text: str) -> tuple[str, int | None] | None:
    """Split "host[:port]" into a lower-case host name and an optional port; None if invalid."""
    host, sep, port_text = text.strip().lower().rpartition(":")
    if not sep:
        host, port_text = port_text, ""
    port: int | None = None
    if sep:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None
        port = int(port_text)
    host = host.rstrip(".")
    if not valid_host(host):
        return None
    return host, port


def valid_host(host: str) -> bool:
    """A DNS host name or an IPv4 literal (IPv6 vendors are not supported in host labels)."""
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
    except ValueError:
        return bool(_HOSTNAME.match(host))


def valid_scope(scope: str) -> bool:
    """A domain-like name (the library's scope in ``member@scope``)."""
    return bool(_HOSTNAME.match(scope))


# ----------------------------------------------------------------------------------------------
# Origins and labels


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int
    # Derived once: both are used on every proxied request.
    netloc: str = field(init=False, compare=False, repr=False)
    url: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        netloc = self.host if self.default_port else f"{self.host}:{self.port}"
        object.__setattr__(self, "netloc", netloc)
        object.__setattr__(self, "url", f"{self.scheme}://{netloc}")

    @property
    def default_port(self) -> bool:
        return DEFAULT_PORTS[self.scheme] == self.port

    def __str__(self) -> str:
        return self.url


def encode_host(host: str) -> str:
    return host.replace("-", "--").replace(".", "-")


def decode_host(part: str) -> str | None:
    if not part or not _HOST_PART.match(part) or part[0] == "-" or part[-1] == "-":
        return None
    out: list[str] = []
    pos = 0
    for run in _ENC_DASH_RUN.finditer(part):
        out.append(part[pos : run.start()])
        n = len(run.group())
        if n == 1:
            out.append(".")
        elif n % 2 == 0:
            out.append("-" * (n // 2))
        else:
            return None
        pos = run.end()
    out.append(part[pos:])
    return "".join(out)


def _suffix(origin: Origin, alias: bool) -> str:
    if origin.scheme == "https":
        scheme_part = "" if origin.port == 443 else f"s{origin.port}"
    else:
        scheme_part = "h" if origin.port == 80 else f"h{origin.port}"
    return ("a" if alias else "") + scheme_part


def encode_label(origin: Origin, alias: str | None = None) -> str:
    """The DNS label for an origin (with ``alias`` replacing the host part when given)."""
    suffix = _suffix(origin, alias is not None)
    head = alias if alias is not None else encode_host(origin.host)
    return f"{head}---{suffix}" if suffix else head


@dataclass(frozen=True, slots=True)
class DecodedLabel:
    scheme: str
    port: int
    host: str | None  # None when the label names an alias
    alias: str | None


def decode_label(label: str) -> DecodedLabel | None:
    """Inverse of encode_label; None for anything encode_label cannot produce."""
    label = label.lower()
    parts = _SPLIT.split(label)
    if len(parts) > 2:
        return None
    head, suffix = (parts[0], parts[1]) if len(parts) == 2 else (parts[0], "")
    if len(parts) == 2 and not suffix:
        return None
    match = _SUFFIX.match(suffix)
    if match is None:
        return None
    is_alias, http_port, https_port = match.groups()
    if http_port is not None:
        scheme, port = "http", int(http_port) if http_port else 80
        if http_port and (port == 80 or http_port.startswith("0")):
            return None  # not canonical: encode_label would not produce it
    elif https_port is not None:
        scheme, port = "https", int(https_port)
        if port == 443 or https_port.startswith("0"):
            return None
    else:
        scheme, port = "https", 443
    if not 0 < port < 65536:
        return None
    if is_alias:
        if not _HOST_PART.match(head) or "--" in head:
            return None
        return DecodedLabel(scheme, port, None, head)
    host = decode_host(head)
    if host is None:
        return None
    return DecodedLabel(scheme, port, host, None)


def normalise_host(raw: str) -> str | None:
    """Lower-case, strip one trailing dot, IDNA-encode; None when not a usable host."""
    host = raw.strip().rstrip(".") if raw.endswith(".") else raw
    try:
        host = host.encode("idna").decode("ascii").lower()
    except (UnicodeError, ValueError):
        return None
    return host if valid_host(host) else None


@dataclass(frozen=True, slots=True)
class ParsedURL:
    origin: Origin
    rest: str  # path, query and fragment, "/"-prefixed, safe to put on a URL


def parse_absolute_url(url: str) -> ParsedURL | None:
    """Parse a starting-point or Location URL strictly; None if it is not plainly http(s)://host.

    Unlike urlsplit this refuses the inputs browsers and Python read differently (see
    shared/corpus/bad-inputs.md, section 1): userinfo, backslashes, control characters,
    percent-encoded hosts and scheme-relative or schemeless forms.
    """
    if not url or len(url) > 8192:
        return None
    # SECURITY: browsers drop tabs and newlines inside URLs ("java\tscript:"); refuse them.
    if any(ch in url for ch in "\t\r\n\x00") or url != url.strip():
        return None
    # SECURITY: bytes that were not UTF-8 (lone surrogates after aiohttp's "surrogateescape"
    # decoding of a header) and C0/C1 controls: refused, never encoded, guessed at or dropped. A
    # header writer would drop them (so the URL sent would differ from the URL checked) and
    # quote() below cannot encode them (a 500 from one byte of a browser's Referer).
    if _URL_HOSTILE.search(url):
        return None
    match = _URL.match(url)
    if match is None:
        return None
    scheme = match.group("scheme").lower()
    if scheme not in DEFAULT_PORTS:
        return None
    authority = match.group("authority")
    if not authority or _AUTHORITY_BAD.search(authority):
        return None
    host_text, sep, port_text = authority.rpartition(":")
    if not sep:
        host_text, port_text = port_text, ""
    if sep and (not port_text.isdigit() or not 0 < int(port_text) < 65536):
        return None
    host = normalise_host(host_text)
    if host is None:
        return None
    port = int(port_text) if port_text else DEFAULT_PORTS[scheme]
    rest = match.group("rest") or "/"
    if rest[0] != "/":
        rest = "/" + rest
    # Non-ASCII and spaces in the path are percent-encoded, everything else is kept as typed.
    rest = quote(rest, safe="".join(chr(c) for c in range(0x21, 0x7F)))
    return ParsedURL(Origin(scheme, host, port), rest)


def parse_origin_spec(spec: str) -> tuple[Origin, ...] | None:
    """A vendor `hosts` entry: "https://h[:p]" or "http://h[:p]" (one origin), or a bare "h[:p]"
    (both http and https on that port, or on the default ports when none is given)."""
    if "://" in spec:
        parsed = parse_absolute_url(spec)
        if parsed is None or parsed.rest not in ("/", ""):
            return None
        return (parsed.origin,)
    hp = parse_hostport(spec)
    if hp is None:
        return None
    host, port = hp
    if port is None:
        return (Origin("https", host, 443), Origin("http", host, 80))
    return (Origin("https", host, port), Origin("http", host, port))


# SECURITY: a path is only "anonymous" when it is plain: no encoded dots, slashes, backslashes,
# NULs, semicolons or percent signs, no dot-segments and no empty segments. Otherwise a vendor
# that normalises "/open/%2e%2e/private" differently from us would serve a licensed page to
# anyone. Anything unusual simply requires sign-in.
_UNSAFE_PATH = re.compile(r"%(2e|2f|5c|00|3b|25|u)|[\\;]|//|(^|/)\.\.?(/|$)", re.IGNORECASE)


def _plain_utf8(path: str) -> bool:
    """True when the path's percent-encoded bytes are well-formed UTF-8.

    SECURITY: overlong forms (``%c0%ae`` is "." to a lenient decoder) and stray bytes are how
    "/open/%c0%ae%c0%ae/private" reaches a licensed page through a server that decodes them;
    strict UTF-8 refuses every overlong form.
    """
    if "%" not in path:
        return True
    try:
        unquote_to_bytes(path).decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        return False
    return True


def compile_globs(patterns: Sequence[str]) -> re.Pattern[str] | None:
    """One regex for path globs: "*" matches any run of characters (including "/")."""
    if not patterns:
        return None
    return re.compile("|".join(fnmatch.translate(p) for p in patterns))


@dataclass(frozen=True)
class VendorConfig:
    id: str
    title: str
    start: str
    hosts: tuple[str, ...]  # "scheme://host[:port]" origins, or bare "host[:port]" (https)
    domains: tuple[str, ...]  # whole domains: every host under them, dot-boundary only
    groups: frozenset[str]
    description: str = ""
    cookie_passthrough: bool = False
    aliases: Mapping[str, str] = field(default_factory=dict)
    on_site: str = "proxy"  # in the library: "proxy" (no sign-in) or "direct" (straight to vendor)
    anonymous: bool = False  # no sign-in at all (open resources)
    anonymous_paths: tuple[str, ...] = ()  # glob patterns of paths open without sign-in
    assert_on_site: bool = False  # tell the vendor whether the member is in the library
    pairwise_id: bool = False  # send a per-vendor pseudonym as `sub` (opt-in, personal features)
    counter: CounterPatterns = NO_PATTERNS  # which requests count as searches and downloads
    rewrite: bool = True  # rewrite vendor host names in text bodies (off: stream untouched)
    replace: tuple[tuple[str, str], ...] = ()  # literal find/replace rules for odd sites
    user_agent: str | None = None  # "reduce" or "pass"; None: the [privacy] default
    accept_language: str | None = None  # "first" or "pass"; None: the [privacy] default


@dataclass(frozen=True)
class Vendor:
    id: str
    title: str
    description: str
    start: str
    groups: frozenset[str]
    origins: frozenset[Origin]
    domains: tuple[str, ...]
    cookie_passthrough: bool
    on_site: str = "proxy"
    anonymous: bool = False
    anonymous_paths: re.Pattern[str] | None = None
    assert_on_site: bool = False
    pairwise_id: bool = False
    counter: CounterPatterns = NO_PATTERNS
    rewrite: bool = True
    replace: tuple[tuple[bytes, bytes], ...] = ()  # literal (find, replace) rules
    user_agent: str | None = None  # "reduce", "pass", or None for the [privacy] default
    accept_language: str | None = None  # "first", "pass", or None for the [privacy] default

    def licensed_for(self, groups: Iterable[str]) -> bool:
        return not self.groups.isdisjoint(groups)

    def is_anonymous(self, raw_path: str) -> bool:
        """True when this request path needs no sign-in (the whole vendor, or a plain path
        matching one of the vendor's anonymous patterns)."""
        if self.anonymous:
            return True
        if self.anonymous_paths is None:
            return False
        path = raw_path.split("?", 1)[0]
        if _UNSAFE_PATH.search(path) or not _plain_utf8(path):
            return False
        return self.anonymous_paths.fullmatch(path) is not None


class VendorMap:
    """All configured vendors, with the mapping between vendor origins and proxied hosts."""

    def __init__(self, configs: Sequence[VendorConfig], proxy_host: str, proxy_scheme: str) -> None:
        self.proxy_host = proxy_host.lower()  # host[:port]
        self.proxy_scheme = proxy_scheme
        self.vendors: tuple[Vendor, ...] = ()
        self._by_origin: dict[Origin, Vendor] = {}
        self._by_domain: list[tuple[str, Vendor]] = []
        self._alias_to_host: dict[str, str] = {}
        self._host_to_alias: dict[str, str] = {}
        self._host_cache: dict[str, Origin | None] = {}
        vendors = []
        for cfg in configs:
            origins: set[Origin] = set()
            for spec in cfg.hosts:
                found = parse_origin_spec(spec)
                if found:
                    origins.update(found)
            vendor = Vendor(
                id=cfg.id, title=cfg.title, description=cfg.description, start=cfg.start,
                groups=cfg.groups, origins=frozenset(origins), domains=cfg.domains,
                cookie_passthrough=cfg.cookie_passthrough, on_site=cfg.on_site,
                anonymous=cfg.anonymous, anonymous_paths=compile_globs(cfg.anonymous_paths),
                assert_on_site=cfg.assert_on_site, pairwise_id=cfg.pairwise_id, counter=cfg.counter,
                rewrite=cfg.rewrite,
                replace=tuple((f.encode(), r.encode()) for f, r in cfg.replace),
                user_agent=cfg.user_agent, accept_language=cfg.accept_language,
            )
            vendors.append(vendor)
            for origin in origins:
                self._by_origin.setdefault(origin, vendor)
            for domain in cfg.domains:
                self._by_domain.append((domain, vendor))
            for host, alias in cfg.aliases.items():
                self._add_alias(host.lower(), alias.lower())
            for n, origin in enumerate(sorted(origins, key=str), start=1):
                if len(encode_label(origin)) > MAX_LABEL and origin.host not in self._host_to_alias:
                    self._add_alias(origin.host, f"{cfg.id.replace('_', '-')}{n}".strip("-"))
        self.vendors = tuple(vendors)
        # Longest domain first so the most specific vendor wins.
        self._by_domain.sort(key=lambda item: -len(item[0]))

    def _add_alias(self, host: str, alias: str) -> None:
        self._alias_to_host.setdefault(alias, host)
        self._host_to_alias.setdefault(host, alias)

    def by_id(self, vendor_id: str) -> Vendor | None:
        return next((v for v in self.vendors if v.id == vendor_id), None)

    def match(self, origin: Origin) -> Vendor | None:
        """The vendor serving this origin, or None: only these origins are ever contacted."""
        vendor = self._by_origin.get(origin)
        if vendor is not None:
            return vendor
        if not origin.default_port:
            return None
        for domain, candidate in self._by_domain:
            if origin.host == domain or origin.host.endswith("." + domain):
                return candidate
        return None

    def label_for(self, origin: Origin) -> str | None:
        alias = self._host_to_alias.get(origin.host)
        label = encode_label(origin, alias)
        return label if len(label) <= MAX_LABEL else None

    def proxied_netloc(self, origin: Origin) -> str | None:
        label = self.label_for(origin)
        return f"{label}.{self.proxy_host}" if label else None

    def proxied_origin(self, origin: Origin) -> str | None:
        netloc = self.proxied_netloc(origin)
        return f"{self.proxy_scheme}://{netloc}" if netloc else None

    def origin_for_host(self, host_header: str) -> Origin | None:
        """The vendor origin a request Host header stands for, or None if it names none."""
        host = host_header.lower()
        try:
            return self._host_cache[host]
        except KeyError:
            pass
        origin = self._origin_for_host(host)
        if len(self._host_cache) >= 4096:
            self._host_cache.clear()  # bounded: random Host headers cannot grow it
        self._host_cache[host] = origin
        return origin

    def _origin_for_host(self, host: str) -> Origin | None:
        suffix = "." + self.proxy_host
        if not host.endswith(suffix):
            return None
        label = host[: -len(suffix)]
        if "." in label or not label:
            return None
        decoded = decode_label(label)
        if decoded is None:
            return None
        vhost = decoded.host
        if decoded.alias is not None:
            vhost = self._alias_to_host.get(decoded.alias)
            if vhost is None:
                return None
        assert vhost is not None
        origin = Origin(decoded.scheme, vhost, decoded.port)
        # Canonical form only: a host that has an alias is reachable under the alias alone.
        if self.label_for(origin) != label:
            return None
        return origin if self.match(origin) is not None else None


def url_problem(url: str) -> str:
    """Why ``parse_absolute_url`` refuses ``url``, in words for a configuration problem."""
    match = _URL.match(url.strip()) if url else None
    if match is None or match.group("scheme").lower() not in DEFAULT_PORTS:
        return "is not an http:// or https:// URL"
    authority = match.group("authority")
    if "@" in authority:
        return "must not contain a user name or password (user@host)"
    if _AUTHORITY_BAD.search(authority):
        return "has characters that are not allowed in a host name (%, \\, spaces or control characters)"
    _, sep, port = authority.rpartition(":")
    if sep and port.isdigit() and not 0 < int(port) < 65536:
        return f"has port {port}, out of the range 1-65535"
    if url != url.strip() or any(ch in url for ch in "\t\r\n"):
        return "has spaces, tabs or line breaks"
    if _URL_HOSTILE.search(url):
        return "has control characters or bytes that are not UTF-8"
    return "does not name a valid host"


def _origin_spec_problem(spec: str) -> str:
    if "://" in spec:
        problem = url_problem(spec)
        parsed = parse_absolute_url(spec)
        if parsed is not None:
            return "must be only scheme, host and port, without a path"
        return problem
    _, sep, port = spec.rpartition(":")
    if sep and port.isdigit() and not 0 < int(port) < 65536:
        return f"has port {port}, out of the range 1-65535"
    return 'is not a host name, "host:port" or "https://host[:port]"'


def check_vendor_table(configs: Sequence[VendorConfig], proxy_host: str = "") -> list[str]:
    """Problems in the vendor table as a whole: bad hosts, overlaps, unreachable start URLs,
    and vendor hosts or domains that would cover the proxy's own host names."""
    problems: list[str] = []
    proxy_name = proxy_host.rpartition(":")[0] if ":" in proxy_host else proxy_host
    owner: dict[Origin, str] = {}
    for cfg in configs:
        where = f"[[vendor]] {shown(cfg.id)}"
        origins: list[Origin] = []
        for spec in cfg.hosts:
            found = parse_origin_spec(spec)
            if found is None:
                problems.append(f"{where} hosts: {shown(spec)} {_origin_spec_problem(spec)}")
                continue
            origins.extend(found)
        for origin in origins:
            if proxy_name and (origin.host == proxy_name or origin.host.endswith("." + proxy_name)):
                problems.append(f"{where} hosts: {shown(origin.host)} is the proxy's own host name")
            other = owner.setdefault(origin, cfg.id)
            if other != cfg.id:
                problems.append(f"{where} hosts: {origin} is also listed by vendor {shown(other)}")
        for domain in cfg.domains:
            if not valid_host(domain) or "." not in domain:
                problems.append(
                    f"{where} domains: {shown(domain)} is not a domain with at least two labels "
                    "(a top-level domain would make the proxy open to a whole TLD)"
                )
            elif proxy_name and (proxy_name == domain or proxy_name.endswith("." + domain)):
                # SECURITY: the proxy's own pages and proxied hosts must never count as a vendor.
                problems.append(f"{where} domains: {shown(domain)} covers the proxy's own host {shown(proxy_name)}")
        for host, alias in cfg.aliases.items():
            if not re.fullmatch(r"[a-z0-9]([a-z0-9]|-(?!-)){0,40}", alias.lower()) or alias.endswith("-"):
                problems.append(
                    f"{where} aliases: {shown(alias)} for {shown(host)} must be short letters, digits and single dashes"
                )
        if cfg.start:
            parsed = parse_absolute_url(cfg.start)
            if parsed is None:
                problems.append(f"{where} start: {shown(cfg.start)} {url_problem(cfg.start)}")
            elif parsed.origin not in origins and not any(
                parsed.origin.default_port
                and (parsed.origin.host == d or parsed.origin.host.endswith("." + d))
                for d in cfg.domains
            ):
                problems.append(
                    f"{where} start: the host of {shown(cfg.start)} is not in this vendor's hosts or domains")
    return problems


# ----------------------------------------------------------------------------------------------
# The [[vendor]] tables of the configuration


def _parse_replace(v: Reader) -> tuple[tuple[str, str], ...]:
    """``[[vendor.replace]] find = "..." replace = "..."``: literal rules, like EZproxy's Find/Replace."""
    raw = v.raw("replace", [])
    if not isinstance(raw, list):
        v.bad("replace", "must be an array of tables ([[vendor.replace]])")
        return ()
    rules: list[tuple[str, str]] = []
    for index, item in enumerate(raw, start=1):
        rule = item if isinstance(item, Mapping) else {}
        find, replace = rule.get("find"), rule.get("replace")
        if not isinstance(find, str) or not find or not isinstance(replace, str) or set(rule) - {"find", "replace"}:
            v.bad("replace", f"rule #{index} must have exactly a non-empty find and a replace string")
            continue
        if len(find.encode()) > 4096:
            v.bad("replace", f"rule #{index}: find is limited to 4096 bytes")
            continue
        rules.append((find, replace))
    return tuple(rules)


def _override(v: Reader, key: str, choices: tuple[str, ...]) -> str | None:
    """A vendor's own value for a ``[privacy]`` option, or None to follow the default."""
    return v.choice(key, choices[0], choices) if v.has(key) else None


def _check_globs(v: Reader, key: str) -> tuple[str, ...]:
    patterns = v.str_list(key)
    for pattern in patterns:
        if not pattern.startswith("/"):
            v.bad(key, f"{shown(pattern)} must be a path pattern starting with \"/\", like \"/open/*\"")
    return patterns


def parse_vendors(root: Reader, problems: Problems, base: Path, proxy_host: str) -> tuple[VendorConfig, ...]:
    raw = root.raw("vendor", [])
    if not isinstance(raw, list):
        problems.add("[[vendor]]", "must be an array of tables ([[vendor]] sections)")
        return ()
    vendors: list[VendorConfig] = []
    seen_ids: set[str] = set()
    for index, item in enumerate(raw, start=1):
        if not isinstance(item, Mapping):
            problems.add(f"[[vendor]] #{index}", "must be a table")
            continue
        v = Reader(item, f"[[vendor]] #{index}", problems, base)
        vid = v.str("id", required=True)
        if vid:
            v.where = f"[[vendor]] {shown(vid)}"
            if not VENDOR_ID.match(vid):
                v.bad("id", "must be 1-40 lower-case letters, digits, '-' or '_'")
            if vid in seen_ids:
                v.bad("id", "is used by another vendor")
            seen_ids.add(vid)
        hosts = v.str_list("hosts")
        domains = tuple(d.lower().lstrip(".") for d in v.str_list("domains"))
        start = v.str("start", required=True)
        before = len(problems.items)
        groups = frozenset(v.str_list("groups"))
        if not groups and len(problems.items) == before:  # one mistake, one line
            v.bad("groups", "must name at least one group (who is licensed for this vendor?)")
        if not hosts and not domains:
            v.bad("hosts", "must list at least one host (e.g. \"www.vendor.com\")")
        aliases = v.str_map("aliases")
        vendors.append(
            VendorConfig(
                id=vid, title=v.str("title", vid), start=start, hosts=hosts, domains=domains,
                groups=groups, description=v.str("description"),
                cookie_passthrough=v.bool("cookie_passthrough", False), aliases=aliases,
                on_site=v.choice("on_site", "proxy", ("proxy", "direct")),
                anonymous=v.bool("anonymous", False),
                anonymous_paths=_check_globs(v, "anonymous_paths"),
                assert_on_site=v.bool("assert_on_site", False),
                pairwise_id=v.bool("pairwise_id", False),
                counter=parse_counter_patterns(v.sub("counter")),
                rewrite=v.bool("rewrite", True),
                replace=_parse_replace(v),
                user_agent=_override(v, "user_agent", ("reduce", "pass")),
                accept_language=_override(v, "accept_language", ("first", "pass")),
            )
        )
        v.unknown_keys()
    # Host syntax, duplicates and start-URL checks need the whole table.
    for problem in check_vendor_table(vendors, proxy_host):
        problems.add("", problem)
    return tuple(vendors)
