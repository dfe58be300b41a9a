"""Configuration: one TOML file, checked as a whole at start into frozen dataclasses.

Every problem is collected with its place (``[sessions] idle: ...``) and reported at once in a
``ConfigError``, so an administrator fixes a file in one pass instead of one error per restart.
Secrets never sit in the file itself: a value ``"env:NAME"`` reads an environment variable,
``"file:/path"`` reads a file (relative paths are relative to the configuration file).

Each part parses its own table with the ``Reader`` of ``settings.py`` (vendors in
``vendors.py``, records in ``records/``, each patron source in its module), so the schema of a
part lives next to its code while the problems still come out in one list. This module only
assembles them: it imports the parts' parsers, and none of them imports it back.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.errors import ConfigError
from proxy.network import parse_network
from proxy.records.logsetup import LogOptions
from proxy.records.logsetup import parse_options as parse_log_options
from proxy.records.options import RecordsOptions
from proxy.records.options import parse_options as parse_records_options
from proxy.settings import Problems, Reader, shown
from proxy.staff.options import StaffOptions, parse_staff_options
from proxy.vendors import VendorConfig as VendorConfig  # re-exported: tests and tools build vendor tables
from proxy.vendors import parse_hostport, parse_vendors, valid_host, valid_scope


@dataclass(frozen=True)
class LibraryConfig:
    id: str
    name: str
    scope: str  # the right-hand side of member@scope in the assertion
    # Patron pages (docs/patron-pages.md): the languages offered (the first is the default), who
    # to ask about privacy, and the library's own look.
    languages: tuple[str, ...] = ("en", "es")
    contact: str = ""
    # The name and contact in other languages: {"es": {"name": ..., "contact": ...}}.
    texts: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    logo: Path | None = None
    accent: str | None = None  # "#rrggbb", checked for contrast against the white page
    templates: Path | None = None  # a folder of template overrides

    def text(self, key: str, language: str) -> str:
        """The library's ``name`` or ``contact`` in ``language``, or as given in [library]."""
        default = self.name if key == "name" else self.contact
        return self.texts.get(language, {}).get(key, default)


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
    # A request body must arrive within body_grace + size / body_min_rate seconds (slow POSTs).
    body_grace: float = 30.0
    body_min_rate: int = 8192  # bytes per second
    # On SIGTERM: stop accepting, let answers in progress (downloads) run this long, then stop.
    shutdown_deadline: float = 30.0

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
    redis_pool: int = 64  # connections per process; requests wait for a free one...
    redis_wait: float = 2.0  # ...this long at most
    redis_timeout: float = 2.0  # connect and per-command timeout


@dataclass(frozen=True)
class AssertionConfig:
    header: str
    lifetime: float
    algorithm: str
    key_file: Path
    # "file": key_file; "redis": one key set for every instance, in the sessions' Redis.
    key_store: str = "file"


@dataclass(frozen=True)
class UpstreamConfig:
    connect_timeout: float
    read_timeout: float
    limit: int
    limit_per_host: int
    per_client: int  # parallel requests to vendors per session (or address, when anonymous; see library_share)
    queue_wait: float  # how long a request may wait for a free connection or client slot
    max_body: int  # cap on bodies the proxy decodes or buffers; streamed bodies are unbounded
    hosts: Mapping[str, str]  # static name -> address overrides (split DNS, tests)
    user_agent: str | None  # replace the browser's User-Agent when set


LIBRARY_SHARE = 4  # a library network's shared address: this many clients' worth of connections


def library_share(upstream: UpstreamConfig) -> int:
    """Parallel sessionless requests to vendors from one library-network address (the machines
    of a branch behind one public address): LIBRARY_SHARE clients' worth, and never more than
    half a vendor's pool (or one client's share, when that is larger), so the patrons elsewhere
    keep the other half."""
    return min(upstream.per_client * LIBRARY_SHARE, max(upstream.per_client, upstream.limit_per_host // 2))


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
class PrivacyConfig:
    """``[privacy]``: how much of the browser's own headers a vendor sees (per vendor overridable)."""

    user_agent: str = "reduce"  # "reduce": family, major version, platform class; "pass": as sent
    accept_language: str = "first"  # "first": the first language only; "pass": as sent


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
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    staff: StaffOptions = field(default_factory=StaffOptions)  # the staff console (proxy/staff/)
    # Old proxy names (EZproxy's) whose links are redirected here (see migration.py).
    old_hosts: tuple[str, ...] = ()


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
    if listen_host and listen_port_text.isdigit() and not 0 < int(listen_port_text) < 65536:
        p.bad("listen", f"port {listen_port_text} is out of the range 1-65535")
        listen_host, listen_port_text = "127.0.0.1", "8080"
    elif not listen_host or not listen_port_text.isdigit():
        p.bad("listen", f"must be \"address:port\", not {shown(listen)}")
        listen_host, listen_port_text = "127.0.0.1", "8080"
    listen_host = listen_host.strip("[]")
    host = p.str("host", "proxy.localhost:8080").lower()
    parsed_host = parse_hostport(host)
    if parsed_host is None:
        p.bad("host", f"must be a host name with an optional port, not {shown(host)}")
    tls_cert = p.path("tls_cert")
    tls_key = p.path("tls_key")
    if (tls_cert is None) != (tls_key is None):
        p.bad("tls_cert", "tls_cert and tls_key must be given together")
    for key, tls_file in (("tls_cert", tls_cert), ("tls_key", tls_key)):
        if tls_file is not None and not tls_file.is_file():
            p.bad(key, f"file {tls_file} does not exist")
    scheme = p.choice("scheme", "https" if tls_cert else "http", ("http", "https"))
    state_dir = p.path("state_dir", "var") or base / "var"
    proxy = ProxySettings(
        listen_host=listen_host,
        listen_port=int(listen_port_text),
        host=host,
        scheme=scheme,
        state_dir=state_dir,
        secret=_checked_secret(p),
        tls_cert=tls_cert,
        tls_key=tls_key,
        max_upload=p.size("max_upload", "100MB"),
        keepalive=p.duration("keepalive", "15s"),
        shutdown_deadline=p.duration("shutdown_deadline", "30s"),
        body_grace=p.duration("body_grace", "30s"),
        body_min_rate=p.size("body_min_rate", "8KiB"),
    )
    p.unknown_keys()

    lib = root.sub("library")
    library_id = lib.str("id", "library.example")
    library = LibraryConfig(
        id=library_id,
        name=lib.str("name", "Your Library"),
        scope=lib.str("scope", library_id),
        **_library_look(lib),
    )
    if not valid_scope(library.scope):
        lib.bad("scope", f"must be a domain-like scope such as \"wolcott.lib.ct.us\", not {shown(library.scope)}")
    lib.unknown_keys(library.languages)

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
            s.bad("store", 'is "redis" but the redis package is not installed: pip install "libproxy[redis]"')
        sessions = SessionsConfig(
            store="redis", idle=sessions.idle, lifetime=sessions.lifetime,
            max_sessions=sessions.max_sessions, redis_url=s.secret("redis_url", required=True),
            redis_pool=s.int("redis_pool", 64, minimum=1, maximum=10_000),
            redis_wait=s.duration("redis_wait", "2s"), redis_timeout=s.duration("redis_timeout", "2s"),
        )
    if sessions.idle > sessions.lifetime:
        s.bad("idle", "must not be longer than lifetime")
    s.unknown_keys()

    a = root.sub("assertion")
    header = a.str("header", "X-Library-Membership")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}", header):
        a.bad("header", f"must be an HTTP header name of letters, digits and dashes, not {shown(header)}")
    assertion = AssertionConfig(
        header=header,
        lifetime=a.duration("lifetime", "5m"),
        algorithm=a.choice("algorithm", "ES256", ("ES256", "EdDSA")),
        key_file=a.path("key_file", "") or state_dir / "assertion-keys.json",
        key_store=a.choice("key_store", "redis" if sessions.store == "redis" else "file", ("file", "redis")),
    )
    if assertion.key_store == "redis" and sessions.store != "redis":
        a.bad("key_store", 'is "redis", which needs [sessions] store = "redis" (its redis_url is used)')
    if assertion.lifetime > 3600:
        a.bad("lifetime", "must be at most one hour (an assertion is a short-lived ticket)")
    a.unknown_keys()

    u = root.sub("upstream")
    upstream_hosts = u.str_map("hosts")
    for name, address in upstream_hosts.items():
        try:
            ipaddress.ip_address(address)
        except ValueError:
            u.bad("hosts", f"{shown(name)} must map to an IP address, not {shown(address)}")
    upstream = UpstreamConfig(
        connect_timeout=u.duration("connect_timeout", "10s"),
        read_timeout=u.duration("read_timeout", "60s"),
        limit=u.int("connections", 200, minimum=1),
        limit_per_host=u.int("connections_per_host", 64, minimum=1),
        per_client=u.int("connections_per_client", 8, minimum=1),
        queue_wait=u.duration("queue_wait", "5s"),
        max_body=u.size("max_decoded_body", "64MiB"),
        hosts={k.lower(): v for k, v in upstream_hosts.items()},
        user_agent=u.str("user_agent", "") or None,
    )
    if upstream.per_client >= upstream.limit_per_host:
        u.bad("connections_per_client", "must be below connections_per_host, or one patron could fill the pool")
    if proxy.body_min_rate < 1:
        p.bad("body_min_rate", "must be at least 1 byte per second")
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
        adm.bad("listen", f'must be "address:port" or "" to turn the staff listener off, not {shown(admin_listen)}')
    admin_allow = adm.str_list("allow", ("127.0.0.1/32", "::1/128"))
    for cidr in admin_allow:
        if parse_network(cidr) is None:
            adm.bad("allow", f"{shown(cidr)} is not a network like \"127.0.0.1/32\"")
    adm.unknown_keys()
    admin = AdminConfig(listen=admin_listen or None, allow=admin_allow)
    pv = root.sub("privacy")
    privacy = PrivacyConfig(
        user_agent=pv.choice("user_agent", "reduce", ("reduce", "pass")),
        accept_language=pv.choice("accept_language", "first", ("first", "pass")),
    )
    pv.unknown_keys()
    mig = root.sub("migration")
    old_hosts = tuple(h.lower().rstrip(".") for h in mig.str_list("old_hosts"))
    for old in old_hosts:
        if not valid_host(old) or "." not in old:
            mig.bad("old_hosts", f"{shown(old)} is not a host name like \"ezproxy.library.org\"")
        elif parsed_host is not None and (old == parsed_host[0] or parsed_host[0].endswith("." + old)):
            mig.bad("old_hosts", f"{shown(old)} covers this proxy's own host name")
    mig.unknown_keys()
    staff = parse_staff_options(root.sub("staff"))
    vendors = parse_vendors(root, problems, base, proxy.host)
    root.unknown_keys(("vendor",))
    if problems:
        raise ConfigError(problems.items)
    return Config(
        path=path, proxy=proxy, library=library, patrons=patrons, sessions=sessions,
        assertion=assertion, upstream=upstream, network=network, vendors=vendors,
        logging=log_options, records=records, admin=admin, group_names=group_names, privacy=privacy,
        old_hosts=old_hosts, staff=staff,
    )


MIN_SECRET = 32


def _checked_secret(p: Reader) -> str | None:
    secret = p.secret("secret")
    if secret is not None and len(secret) < MIN_SECRET:
        # SECURITY: the secret keys every patron pseudonym; a short one can be guessed offline.
        p.bad("secret", f"must be at least {MIN_SECRET} characters (for example the output of "
                        "`openssl rand -base64 48`), or leave it out to have one generated in state_dir")
        return None
    return secret


def _loopback_name(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_ADDRESS_LIKE = re.compile(r"\[?([0-9a-fA-F:]*:[0-9a-fA-F:.]+|\d{1,3}(?:\.\d{1,3}){3})\]?")


def operator_addresses(config: Config) -> set[str]:
    """IP literals the configuration itself names (listen addresses, directory and session
    servers): logs may show them (see records/scrub.py); no patron's address is among them."""
    texts = [config.proxy.listen_host, config.admin.listen or "", config.sessions.redis_url or "",
             repr(config.patrons.options)]
    found = set()
    for text in texts:
        for match in _ADDRESS_LIKE.finditer(text):
            try:
                found.add(str(ipaddress.ip_address(match.group(1))))
            except ValueError:
                continue
    return found


def _library_look(lib: Reader) -> dict[str, Any]:
    """[library] languages, contact, per-language texts, logo, accent and template folder."""
    from proxy.web.i18n import SUPPORTED

    languages = lib.str_list("languages", ("en", "es"))
    for code in languages:
        if code not in SUPPORTED:
            lib.bad("languages", f"{shown(code)} is not a language the pages are written in "
                                 f"({', '.join(shown(c) for c in SUPPORTED)})")
    languages = tuple(dict.fromkeys(c for c in languages if c in SUPPORTED)) or ("en",)
    texts: dict[str, dict[str, str]] = {}
    for code in languages:
        if lib.has(code):
            per = lib.sub(code)
            texts[code] = {k: v for k in ("name", "contact") if (v := per.str(k))}
            per.unknown_keys()
    logo = lib.path("logo")
    if logo is not None and (not logo.is_file() or logo.suffix.lower() not in LOGO_TYPES):
        lib.bad("logo", f"{shown(str(logo))} must be an existing {', '.join(sorted(LOGO_TYPES))} file")
        logo = None
    accent = lib.str("accent") or None
    if accent is not None:
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", accent):
            lib.bad("accent", f"must be a colour like \"#0b5394\", not {shown(accent)}")
            accent = None
        elif (ratio := contrast_ratio(accent, "#ffffff")) < 4.5:
            # WCAG 2.1 AA (1.4.3): links in the accent colour on the white page, and white text
            # on accent buttons, both need 4.5:1; the two ratios are the same number.
            lib.bad("accent", f"{shown(accent)} has a contrast of {ratio:.1f}:1 with the white page; WCAG AA "
                              "needs at least 4.5:1 for text (choose a darker colour)")
            accent = None
    templates = lib.path("templates")
    if templates is not None and not templates.is_dir():
        lib.bad("templates", f"{shown(str(templates))} is not a folder")
        templates = None
    return {"languages": languages, "contact": lib.str("contact"), "texts": texts, "logo": logo,
            "accent": accent.lower() if accent else None, "templates": templates}


# Logo files the proxy serves, by suffix, with the type they are sent as.
LOGO_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
              ".gif": "image/gif", ".webp": "image/webp"}


def contrast_ratio(first: str, second: str) -> float:
    """WCAG 2.1 contrast ratio of two "#rrggbb" colours (1.0 to 21.0)."""
    def luminance(colour: str) -> float:
        channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(first), luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def warnings(config: Config) -> list[str]:
    """Things that are allowed but unwise, said at start and by ``check-config``."""
    found = []
    if config.proxy.scheme == "http" and not _loopback_name(config.proxy.host_name):
        found.append(
            f"[proxy] scheme is \"http\" for {config.proxy.host_name}: over plain http the session cookie "
            "cannot use the __Host- prefix, so a script on a vendor's page could set a domain-wide copy "
            "and sign patrons out, and everything patrons send crosses the network readable. Production "
            "needs https (tls_cert/tls_key, or scheme = \"https\" behind a TLS terminator)."
        )
    if config.sessions.store == "redis" and not config.proxy.secret:
        # A warning, not a problem: workers of one machine (serve --workers) all read the same
        # state_dir/secret and agree; only instances on several machines do not.
        found.append(
            "[sessions] store is \"redis\" but [proxy] secret is not set: each machine then uses the "
            f"secret generated in its own state_dir ({config.proxy.state_dir / 'secret'}), so instances on "
            "different machines compute different keyed hashes: a card locked on one is not locked on the "
            "others, and patron keys (sign out everywhere, usage limits) differ. Give every instance the same "
            "secret, e.g. secret = \"env:LIBPROXY_SECRET\" (openssl rand -base64 48)."
        )
    return found


def _parse_network(n: Reader) -> NetworkConfig:
    trusted = n.str_list("trusted_proxies")
    for cidr in trusted:
        if parse_network(cidr) is None:
            n.bad("trusted_proxies", f"{shown(cidr)} is not an address or network like \"10.0.0.5/32\"")
    header = n.str("forwarded_header", "x-forwarded-for").lower()
    if not re.fullmatch(r"[a-z0-9-]{1,64}", header):
        n.bad("forwarded_header", f"{shown(header)} is not a header name")
    raw = n.raw("library", [])
    libraries: list[LibraryNetworkConfig] = []
    if not isinstance(raw, list):
        n.bad("library", "must be an array of tables ([[network.library]])")
        raw = []
    for index, item in enumerate(raw, start=1):
        if not isinstance(item, Mapping):
            n.bad("library", f"entry #{index} must be a table")
            continue
        lib = Reader(item, f"[[network.library]] #{index}", n.problems, n.base)
        name = lib.str("name", f"network {index}")
        lib.where = f"[[network.library]] {shown(name)}"
        cidrs = lib.str_list("cidrs")
        if not cidrs:
            lib.bad("cidrs", "must list at least one network, like \"192.0.2.0/24\"")
        for cidr in cidrs:
            if parse_network(cidr) is None:
                lib.bad("cidrs", f"{shown(cidr)} is not a network like \"192.0.2.0/24\" or \"2001:db8::/48\"")
        groups = frozenset(lib.str_list("groups"))
        if not groups:
            lib.bad("groups", "must name the groups this network grants (e.g. [\"wolcott\", \"bibliomation\"])")
        libraries.append(LibraryNetworkConfig(name=name, cidrs=cidrs, groups=groups))
        lib.unknown_keys()
    n.unknown_keys(("library",))
    return NetworkConfig(trusted_proxies=trusted, forwarded_header=header, libraries=tuple(libraries))
