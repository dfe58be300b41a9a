"""Configuration: one TOML file, checked as a whole at start into frozen dataclasses.

Every problem is collected with its place (``[sessions] idle: ...``) and reported at once in a
``ConfigError``, so an administrator fixes a file in one pass instead of one error per restart.
Secrets never sit in the file itself: a value ``"env:NAME"`` reads an environment variable,
``"file:/path"`` reads a file (relative paths are relative to the configuration file).

Pluggable parts parse their own sub-sections with the same ``Reader`` (see ``patrons/ldap.py``),
so the schema of a part lives next to its code while the problems still come out in one list.
"""

from __future__ import annotations

import builtins
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from proxy.errors import ConfigError
from proxy.records.logsetup import LogOptions
from proxy.records.logsetup import parse_options as parse_log_options
from proxy.records.options import RecordsOptions
from proxy.records.options import parse_options as parse_records_options
from proxy.records.stats import NO_PATTERNS, CounterPatterns, parse_counter_patterns

T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2,
    "gb": 1000**3, "gib": 1024**3,
}
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_IDENT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class Problems:
    """Collects configuration problems; ``raise_if_any`` turns them into one ConfigError."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}" if where else message)

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(self.items)


class Reader:
    """Typed access to one TOML table, recording problems instead of raising.

    Each getter returns a usable default after recording a problem, so checking goes on and
    the next problems are found too.
    """

    def __init__(self, data: Mapping[builtins.str, Any], where: builtins.str, problems: Problems, base: Path) -> None:
        self.data = data
        self.where = where
        self.problems = problems
        self.base = base
        self._seen: set[builtins.str] = set()

    def sub(self, key: builtins.str) -> Reader:
        value = self._get(key, {})
        if not isinstance(value, Mapping):
            self._bad(key, "must be a table")
            value = {}
        return Reader(value, f"{self.where}.{key}" if self.where else key, self.problems, self.base)

    def place(self, key: builtins.str) -> builtins.str:
        return f"[{self.where}] {key}" if self.where else key

    def _get(self, key: builtins.str, default: Any) -> Any:
        self._seen.add(key)
        return self.data.get(key, default)

    def _bad(self, key: builtins.str, message: builtins.str) -> None:
        self.problems.add(self.place(key), message)

    def has(self, key: builtins.str) -> builtins.bool:
        return key in self.data

    def _typed(self, key: builtins.str, default: T, kind: type | tuple[type, ...], label: builtins.str) -> T:
        value = self._get(key, default)
        # bool is an int in Python; a TOML `true` where a number is wanted is a mistake.
        if not isinstance(value, kind) or (isinstance(value, builtins.bool) and kind is not bool):
            self._bad(key, f"must be {label}, not {type(value).__name__}")
            return default
        return value  # type: ignore[return-value]

    def str(self, key: builtins.str, default: builtins.str = "", *, required: builtins.bool = False) -> builtins.str:
        if required and key not in self.data:
            self._bad(key, "is required")
            self._seen.add(key)
            return default
        return self._typed(key, default, builtins.str, "a string")

    def choice(self, key: builtins.str, default: builtins.str, choices: tuple[builtins.str, ...]) -> builtins.str:
        value = self.str(key, default)
        if value not in choices:
            self._bad(key, f"must be one of {', '.join(choices)}, not {value!r}")
            return default
        return value

    def bool(self, key: builtins.str, default: builtins.bool = False) -> builtins.bool:
        return self._typed(key, default, builtins.bool, "true or false")

    def int(
        self, key: builtins.str, default: builtins.int, *,
        minimum: builtins.int | None = None, maximum: builtins.int | None = None,
    ) -> builtins.int:
        value = self._typed(key, default, builtins.int, "a whole number")
        if minimum is not None and value < minimum:
            self._bad(key, f"must be at least {minimum}")
            return default
        if maximum is not None and value > maximum:
            self._bad(key, f"must be at most {maximum}")
            return default
        return value

    def str_list(self, key: builtins.str, default: tuple[builtins.str, ...] = ()) -> tuple[builtins.str, ...]:
        value = self._get(key, list(default))
        if isinstance(value, builtins.str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, builtins.str) for v in value):
            self._bad(key, "must be a list of strings")
            return default
        return tuple(value)

    def str_map(self, key: builtins.str) -> dict[builtins.str, builtins.str]:
        value = self._get(key, {})
        if not isinstance(value, Mapping) or not all(isinstance(v, builtins.str) for v in value.values()):
            self._bad(key, "must be a table of strings")
            return {}
        return {str(k): v for k, v in value.items()}

    def duration(self, key: builtins.str, default: builtins.str) -> float:
        """Seconds, from "90s", "5m", "2h", "7d" or a bare number of seconds."""
        raw = self._get(key, default)
        if isinstance(raw, builtins.int | float) and not isinstance(raw, builtins.bool):
            raw = str(raw)
        match = _DURATION.match(raw) if isinstance(raw, builtins.str) else None
        if match is None:
            self._bad(key, f"must be a duration like \"90s\", \"5m\", \"2h\" or \"7d\", not {raw!r}")
            match = _DURATION.match(default)
            assert match is not None
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        if seconds <= 0:
            self._bad(key, "must be longer than zero")
        return seconds

    def size(self, key: builtins.str, default: builtins.str) -> builtins.int:
        """Bytes, from "64KiB", "100MB", "1GiB" or a bare number."""
        raw = self._get(key, default)
        if isinstance(raw, builtins.int) and not isinstance(raw, builtins.bool):
            raw = str(raw)
        match = _SIZE.match(raw) if isinstance(raw, builtins.str) else None
        if match is None:
            self._bad(key, f"must be a size like \"64KiB\" or \"100MB\", not {raw!r}")
            match = _SIZE.match(default)
            assert match is not None
        unit = match.group(2).lower() if match.group(2) else None
        return int(match.group(1)) * _SIZE_UNITS[unit]

    def path(self, key: builtins.str, default: builtins.str = "", *, required: builtins.bool = False) -> Path | None:
        value = self.str(key, default, required=required)
        if not value:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base / path)

    def secret(self, key: builtins.str, *, required: builtins.bool = False) -> builtins.str | None:
        """A secret given as "env:NAME" or "file:PATH"; plain values are refused."""
        value = self.str(key, "", required=required)
        if not value:
            return None
        kind, _, ref = value.partition(":")
        if kind == "env" and ref:
            found = os.environ.get(ref)
            if not found:
                self._bad(key, f"environment variable {ref} is not set or empty")
            return found or None
        if kind == "file" and ref:
            path = Path(ref).expanduser()
            path = path if path.is_absolute() else self.base / path
            try:
                return path.read_text(encoding="utf-8").strip() or None
            except OSError as exc:
                self._bad(key, f"cannot read secret file {path}: {exc.strerror}")
                return None
        self._bad(key, 'must be "env:VARIABLE" or "file:PATH" (secrets are never written in the file)')
        return None

    def unknown_keys(self, known_tables: tuple[builtins.str, ...] = ()) -> None:
        """Report keys nobody asked for: a typo must not be silently ignored."""
        for key in self.data:
            if key not in self._seen and key not in known_tables:
                self._bad(key, "is not a known option (a typo?)")


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


# ----------------------------------------------------------------------------------------------
# The configuration itself.


@dataclass(frozen=True)
class LibraryConfig:
    id: str
    name: str
    scope: str  # the right-hand side of member@scope in the assertion


@dataclass(frozen=True)
class ProxySettings:
    listen_host: str
    listen_port: int
    host: str  # public host[:port] under which vendor hosts are served
    scheme: str  # public scheme: "https" when TLS is terminated here or in front
    state_dir: Path
    secret: str | None  # keyed-hash secret; generated into state_dir when absent
    tls_cert: Path | None
    tls_key: Path | None
    max_upload: int
    keepalive: float  # idle keep-alive connections are closed after this

    @property
    def public_origin(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def host_name(self) -> str:
        return self.host.rpartition(":")[0] if ":" in self.host else self.host


@dataclass(frozen=True)
class PatronsConfig:
    source: str
    file: Path | None
    # Source-specific options, already checked by the source's own parser.
    options: Any = None


@dataclass(frozen=True)
class SessionsConfig:
    store: str
    idle: float
    lifetime: float
    max_sessions: int
    redis_url: str | None


@dataclass(frozen=True)
class AssertionConfig:
    header: str
    lifetime: float
    algorithm: str
    key_file: Path


@dataclass(frozen=True)
class UpstreamConfig:
    connect_timeout: float
    read_timeout: float
    limit: int
    limit_per_host: int
    max_body: int  # cap on bodies the proxy decodes or buffers; streamed bodies are unbounded
    hosts: Mapping[str, str]  # static name -> address overrides (split DNS, tests)
    user_agent: str | None  # replace the browser's User-Agent when set


@dataclass(frozen=True)
class LibraryNetworkConfig:
    name: str
    cidrs: tuple[str, ...]
    groups: frozenset[str]


@dataclass(frozen=True)
class NetworkConfig:
    trusted_proxies: tuple[str, ...]  # CIDRs of load balancers allowed to name the client
    forwarded_header: str  # "x-forwarded-for", "forwarded", or a one-address header
    libraries: tuple[LibraryNetworkConfig, ...]


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


@dataclass(frozen=True)
class AdminConfig:
    """The staff listener (director's statistics, health): never on the public listener."""

    listen: str | None  # "127.0.0.1:9080"; None turns it off
    allow: tuple[str, ...]  # peer networks allowed to use it


@dataclass(frozen=True)
class Config:
    path: Path | None
    proxy: ProxySettings
    library: LibraryConfig
    patrons: PatronsConfig
    sessions: SessionsConfig
    assertion: AssertionConfig
    upstream: UpstreamConfig
    network: NetworkConfig
    vendors: tuple[VendorConfig, ...]
    logging: LogOptions
    records: RecordsOptions
    admin: AdminConfig
    group_names: Mapping[str, str] = field(default_factory=dict)


# Parsers of pluggable sources' options, keyed by source name. Each takes the [patrons] Reader.
PatronSourceParser = Callable[[Reader], Any]


def _patron_parsers() -> dict[str, PatronSourceParser]:
    from proxy.patrons import option_parsers

    return option_parsers()


def load(path: str | Path) -> Config:
    """Read and check a configuration file; raise ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: is not UTF-8 text"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return from_dict(data, base=path.parent.resolve(), path=path)


def from_dict(data: Mapping[str, Any], *, base: Path, path: Path | None = None) -> Config:
    problems = Problems()
    root = Reader(data, "", problems, base)

    p = root.sub("proxy")
    listen = p.str("listen", "127.0.0.1:8080")
    listen_host, _, listen_port_text = listen.rpartition(":")
    if not listen_host or not listen_port_text.isdigit() or not 0 < int(listen_port_text) < 65536:
        p._bad("listen", f"must be \"address:port\", not {listen!r}")
        listen_host, listen_port_text = "127.0.0.1", "8080"
    listen_host = listen_host.strip("[]")
    host = p.str("host", "proxy.localhost:8080").lower()
    parsed_host = parse_hostport(host)
    if parsed_host is None:
        p._bad("host", f"must be a host name with an optional port, not {host!r}")
    tls_cert = p.path("tls_cert")
    tls_key = p.path("tls_key")
    if (tls_cert is None) != (tls_key is None):
        p._bad("tls_cert", "tls_cert and tls_key must be given together")
    for key, tls_file in (("tls_cert", tls_cert), ("tls_key", tls_key)):
        if tls_file is not None and not tls_file.is_file():
            p._bad(key, f"file {tls_file} does not exist")
    scheme = p.choice("scheme", "https" if tls_cert else "http", ("http", "https"))
    state_dir = p.path("state_dir", "var") or base / "var"
    proxy = ProxySettings(
        listen_host=listen_host,
        listen_port=int(listen_port_text),
        host=host,
        scheme=scheme,
        state_dir=state_dir,
        secret=p.secret("secret"),
        tls_cert=tls_cert,
        tls_key=tls_key,
        max_upload=p.size("max_upload", "100MB"),
        keepalive=p.duration("keepalive", "15s"),
    )
    p.unknown_keys()

    lib = root.sub("library")
    library_id = lib.str("id", "library.example")
    library = LibraryConfig(
        id=library_id,
        name=lib.str("name", "Your Library"),
        scope=lib.str("scope", library_id),
    )
    if not _HOSTNAME.match(library.scope):
        lib._bad("scope", f"must be a domain-like scope such as \"wolcott.lib.ct.us\", not {library.scope!r}")
    lib.unknown_keys()

    pat = root.sub("patrons")
    parsers = _patron_parsers()
    source = pat.choice("source", "local", tuple(sorted(parsers)))
    patrons_file = pat.path("file", "patrons.toml") if source == "local" else None
    options = parsers[source](pat) if source in parsers else None
    patrons = PatronsConfig(source=source, file=patrons_file, options=options)
    pat.unknown_keys()

    s = root.sub("sessions")
    sessions = SessionsConfig(
        store=s.choice("store", "memory", ("memory", "redis")),
        idle=s.duration("idle", "2h"),
        lifetime=s.duration("lifetime", "12h"),
        max_sessions=s.int("max_sessions", 100_000, minimum=1),
        redis_url=None,
    )
    if sessions.store == "redis":
        try:
            import redis  # noqa: F401
        except ImportError:
            s._bad("store", 'is "redis" but the redis package is not installed: pip install "libproxy[redis]"')
        sessions = SessionsConfig(
            store="redis", idle=sessions.idle, lifetime=sessions.lifetime,
            max_sessions=sessions.max_sessions, redis_url=s.secret("redis_url", required=True),
        )
    if sessions.idle > sessions.lifetime:
        s._bad("idle", "must not be longer than lifetime")
    s.unknown_keys()

    a = root.sub("assertion")
    header = a.str("header", "X-Library-Membership")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}", header):
        a._bad("header", f"must be an HTTP header name of letters, digits and dashes, not {header!r}")
    assertion = AssertionConfig(
        header=header,
        lifetime=a.duration("lifetime", "5m"),
        algorithm=a.choice("algorithm", "ES256", ("ES256", "EdDSA")),
        key_file=a.path("key_file", "") or state_dir / "assertion-keys.json",
    )
    if assertion.lifetime > 3600:
        a._bad("lifetime", "must be at most one hour (an assertion is a short-lived ticket)")
    a.unknown_keys()

    u = root.sub("upstream")
    upstream_hosts = u.str_map("hosts")
    for name, address in upstream_hosts.items():
        try:
            ipaddress.ip_address(address)
        except ValueError:
            u._bad("hosts", f"{name!r} must map to an IP address, not {address!r}")
    upstream = UpstreamConfig(
        connect_timeout=u.duration("connect_timeout", "10s"),
        read_timeout=u.duration("read_timeout", "60s"),
        limit=u.int("connections", 200, minimum=1),
        limit_per_host=u.int("connections_per_host", 32, minimum=1),
        max_body=u.size("max_decoded_body", "64MiB"),
        hosts={k.lower(): v for k, v in upstream_hosts.items()},
        user_agent=u.str("user_agent", "") or None,
    )
    u.unknown_keys()

    network = _parse_network(root.sub("network"))
    group_names = root.str_map("groups")
    lg = root.sub("logging")
    log_options = parse_log_options(lg)
    lg.unknown_keys()
    rec = root.sub("records")
    records = parse_records_options(rec, state_dir=state_dir)
    rec.unknown_keys(("security",))
    adm = root.sub("admin")
    admin_listen = adm.str("listen", "127.0.0.1:9080")
    if admin_listen and (":" not in admin_listen or not admin_listen.rpartition(":")[2].isdigit()):
        adm._bad("listen", f'must be "address:port" or "" to turn the staff listener off, not {admin_listen!r}')
    admin_allow = adm.str_list("allow", ("127.0.0.1/32", "::1/128"))
    from proxy.network import parse_network

    for cidr in admin_allow:
        if parse_network(cidr) is None:
            adm._bad("allow", f"{cidr!r} is not a network like \"127.0.0.1/32\"")
    adm.unknown_keys()
    admin = AdminConfig(listen=admin_listen or None, allow=admin_allow)
    vendors = _parse_vendors(root, problems, base, proxy.host)
    root.unknown_keys(("vendor",))
    problems.raise_if_any()
    return Config(
        path=path, proxy=proxy, library=library, patrons=patrons, sessions=sessions,
        assertion=assertion, upstream=upstream, network=network, vendors=vendors,
        logging=log_options, records=records, admin=admin, group_names=group_names,
    )


def _parse_network(n: Reader) -> NetworkConfig:
    from proxy.network import parse_network

    trusted = n.str_list("trusted_proxies")
    for cidr in trusted:
        if parse_network(cidr) is None:
            n._bad("trusted_proxies", f"{cidr!r} is not an address or network like \"10.0.0.5/32\"")
    header = n.str("forwarded_header", "x-forwarded-for").lower()
    if not re.fullmatch(r"[a-z0-9-]{1,64}", header):
        n._bad("forwarded_header", f"{header!r} is not a header name")
    raw = n._get("library", [])
    libraries: list[LibraryNetworkConfig] = []
    if not isinstance(raw, list):
        n._bad("library", "must be an array of tables ([[network.library]])")
        raw = []
    for index, item in enumerate(raw, start=1):
        if not isinstance(item, Mapping):
            n._bad("library", f"entry #{index} must be a table")
            continue
        lib = Reader(item, f"network.library #{index}", n.problems, n.base)
        name = lib.str("name", f"network {index}")
        lib.where = f"network.library {name!r}"
        cidrs = lib.str_list("cidrs")
        if not cidrs:
            lib._bad("cidrs", "must list at least one network, like \"192.0.2.0/24\"")
        for cidr in cidrs:
            if parse_network(cidr) is None:
                lib._bad("cidrs", f"{cidr!r} is not a network like \"192.0.2.0/24\" or \"2001:db8::/48\"")
        groups = frozenset(lib.str_list("groups"))
        if not groups:
            lib._bad("groups", "must name the groups this network grants (e.g. [\"wolcott\", \"bibliomation\"])")
        libraries.append(LibraryNetworkConfig(name=name, cidrs=cidrs, groups=groups))
        lib.unknown_keys()
    n.unknown_keys(("library",))
    return NetworkConfig(trusted_proxies=trusted, forwarded_header=header, libraries=tuple(libraries))


def _parse_replace(v: Reader) -> tuple[tuple[str, str], ...]:
    """``[[vendor.replace]] find = "..." replace = "..."``: literal rules, like EZproxy's Find/Replace."""
    raw = v._get("replace", [])
    if not isinstance(raw, list):
        v._bad("replace", "must be an array of tables ([[vendor.replace]])")
        return ()
    rules: list[tuple[str, str]] = []
    for index, item in enumerate(raw, start=1):
        rule = item if isinstance(item, Mapping) else {}
        find, replace = rule.get("find"), rule.get("replace")
        if not isinstance(find, str) or not find or not isinstance(replace, str) or set(rule) - {"find", "replace"}:
            v._bad("replace", f"rule #{index} must have exactly a non-empty find and a replace string")
            continue
        if len(find.encode()) > 4096:
            v._bad("replace", f"rule #{index}: find is limited to 4096 bytes")
            continue
        rules.append((find, replace))
    return tuple(rules)


def _check_globs(v: Reader, key: str) -> tuple[str, ...]:
    patterns = v.str_list(key)
    for pattern in patterns:
        if not pattern.startswith("/"):
            v._bad(key, f"{pattern!r} must be a path pattern starting with \"/\", like \"/open/*\"")
    return patterns


def _parse_vendors(root: Reader, problems: Problems, base: Path, proxy_host: str) -> tuple[VendorConfig, ...]:
    raw = root._get("vendor", [])
    if not isinstance(raw, list):
        problems.add("[[vendor]]", "must be an array of tables ([[vendor]] sections)")
        return ()
    vendors: list[VendorConfig] = []
    seen_ids: set[str] = set()
    for index, item in enumerate(raw, start=1):
        if not isinstance(item, Mapping):
            problems.add(f"[[vendor]] #{index}", "must be a table")
            continue
        v = Reader(item, f"vendor #{index}", problems, base)
        vid = v.str("id", required=True)
        if vid:
            v.where = f"vendor {vid!r}"
            if not _IDENT.match(vid):
                v._bad("id", "must be 1-40 lower-case letters, digits, '-' or '_'")
            if vid in seen_ids:
                v._bad("id", "is used by another vendor")
            seen_ids.add(vid)
        hosts = v.str_list("hosts")
        domains = tuple(d.lower().lstrip(".") for d in v.str_list("domains"))
        start = v.str("start", required=True)
        groups = frozenset(v.str_list("groups"))
        if not groups:
            v._bad("groups", "must name at least one group (who is licensed for this vendor?)")
        if not hosts and not domains:
            v._bad("hosts", "must list at least one host (e.g. \"www.vendor.com\")")
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
            )
        )
        v.unknown_keys()
    # Host syntax, duplicates and start-URL checks need the whole table: vendors.py owns them.
    from proxy.vendors import check_vendor_table

    for problem in check_vendor_table(vendors, proxy_host):
        problems.add("", problem)
    return tuple(vendors)
