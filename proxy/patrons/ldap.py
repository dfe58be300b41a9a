"""Patron source: an LDAP directory (OpenLDAP, 389-DS, Active Directory...) through ldap3.

One sign-in runs in one worker thread of a dedicated pool:

1. find the patron's entry: in ``search`` mode a search for ``filter`` under ``base_dn``, as the
   service account or anonymously, with the card escaped as a filter value (RFC 4515); in
   ``direct`` mode the DN from ``dn_template``, with the card escaped as a DN value (RFC 4514);
2. bind as that entry with the PIN; a failed bind is "wrong PIN", exactly like an unknown card;
3. read only the attributes the rules below need (never names, e-mails, addresses, birth dates),
   and optionally search the groups the entry belongs to;
4. refuse blocked or expired cards (``CardRefused``), otherwise build the ``Membership``: the
   configured network groups, the home library (also a group) and the groups of matching rules,
   with a keyed hash of a stable directory identifier as its key.

Threads and connections: ldap3 is blocking, so every directory call runs in a
``ThreadPoolExecutor`` of ``pool_size`` workers owned by the authenticator (a stalled directory
then cannot starve the default executor other parts use), under an asyncio timeout. Connections
use the thread-safe ``SAFE_SYNC`` strategy with ``get_info=NONE`` and are reused: one idle pool for
the service account (or anonymous searches), one for patron binds. A connection is used by one
thread at a time, because LDAP bind state belongs to the connection.

Failover: the configured servers are tried in order; one that fails is skipped for
``server_retry`` seconds, but tried again when every server is marked down. ldap3's own
``ServerPool`` is not used: after a failed round it sleeps ``POOLING_LOOP_TIMEOUT`` (10 s) before
giving up, and its state is shared between threads without a lock.

Nothing here logs or keeps a card number, PIN, DN or attribute value: log lines name servers,
result codes and exception types only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import re
import secrets
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ldap3
from cachetools import TTLCache
from ldap3.core import exceptions as ldap_errors
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn

from proxy.errors import ConfigError, DirectoryUnavailable
from proxy.membership import Membership
from proxy.network import is_ip_literal
from proxy.patrons.base import CardRefused, acceptable_credentials
from proxy.patrons.common import check_groups, day_expiry, is_loopback, parse_libraries
from proxy.patrons.hashing import pseudonym
from proxy.settings import Reader

log = logging.getLogger(__name__)

T = TypeVar("T")

MODES = ("search", "direct")
SCOPES = {"subtree": ldap3.SUBTREE, "one": ldap3.LEVEL}
EXPIRY_FORMATS = ("generalized-time", "date", "days-since-epoch")

# LDAP result codes the authenticator tells apart (RFC 4511, appendix A).
_SUCCESS = 0
_SIZE_LIMIT_EXCEEDED = 4
_NO_SUCH_OBJECT = 32
_INVALID_DN_SYNTAX = 34
_INVALID_CREDENTIALS = 49
# A bind refused with one of these means "these credentials do not sign in"; any other code means
# the directory (or our configuration of it) is broken, which must never look like a wrong PIN.
_WRONG_CREDENTIALS = frozenset({_INVALID_CREDENTIALS, _NO_SUCH_OBJECT, _INVALID_DN_SYNTAX})

# Failures of the transport: the server is down, slow, or its TLS is not trusted. The connection is
# dropped and the server skipped for a while; anything else is a configuration or data problem.
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    ldap_errors.LDAPCommunicationError,
    ldap_errors.LDAPResponseTimeoutError,
    ldap_errors.LDAPStartTLSError,
    ldap_errors.LDAPCertificateError,
    ldap_errors.LDAPBindError,  # ldap3 raises it when the server closes the socket during a bind
    OSError,
)

# SECURITY: attributes holding personal data. The proxy needs none of them to decide membership,
# so a configuration naming one is refused instead of quietly fetching names or e-mails.
PERSONAL_ATTRIBUTES = frozenset(name.casefold() for name in (
    "cn", "commonName", "sn", "surname", "givenName", "gn", "displayName", "initials", "name",
    "fullName", "mail", "email", "emailAddress", "rfc822Mailbox", "otherMailbox", "proxyAddresses",
    "telephoneNumber", "homePhone", "homeTelephoneNumber", "mobile", "mobileTelephoneNumber",
    "pager", "facsimileTelephoneNumber", "postalAddress", "homePostalAddress", "registeredAddress",
    "street", "streetAddress", "postalCode", "postOfficeBox", "birthDate", "dateOfBirth",
    "jpegPhoto", "photo", "thumbnailPhoto", "userPassword", "unicodePwd", "userPKCS12",
    "sambaNTPassword", "sambaLMPassword",
))

_ATTRIBUTE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9-]{0,63}|\d+(?:\.\d+)+)\Z")
_CACHE_ENTRIES = 10_000
_MAX_CACHE_TTL = 900.0  # a cached sign-in outlives a PIN change or a block by at most this long
_GROUP_SEARCH_LIMIT = 1000


# ----------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True, slots=True)
class GroupRule:
    """Patrons whose ``attribute`` holds one of ``values`` get ``groups``.

    ``values`` are stored in the form ``normalize_value`` gives, so comparison ignores case and
    the spacing of DNs (``memberOf`` values).
    """

    attribute: str
    values: frozenset[str]
    groups: frozenset[str]


@dataclass(frozen=True)
class LdapOptions:
    """The ``[patrons.ldap]`` table, checked. See ``config/ldap-example.toml`` for each option."""

    servers: tuple[str, ...]
    start_tls: bool = False
    ca_file: Path | None = None
    verify: bool = True
    allow_plaintext: bool = False
    mode: str = "search"
    bind_dn: str | None = None
    # SECURITY: kept out of repr() so that a logged or printed configuration shows no secret.
    bind_password: str | None = field(default=None, repr=False)
    base_dn: str = ""
    filter: str = "(uid={card})"
    scope: str = "subtree"
    dn_template: str = ""
    id_attribute: str = "entryUUID"
    groups: frozenset[str] = frozenset()
    home_attribute: str = ""
    # normalize_value(directory value) -> library id (also a group)
    libraries: Mapping[str, str] = field(default_factory=dict)
    group_rules: tuple[GroupRule, ...] = ()
    group_base_dn: str = ""
    group_filter: str = "(&(objectClass=groupOfNames)(member={dn}))"
    expiry_attribute: str = ""
    expiry_format: str = "generalized-time"
    blocked_attribute: str = ""
    blocked_values: frozenset[str] = frozenset()
    connect_timeout: float = 3.0
    response_timeout: float = 5.0
    timeout: float = 10.0
    pool_size: int = 8
    server_retry: float = 30.0
    cache_ttl: float = 0.0  # 0: no cache

    def attributes(self) -> tuple[str, ...]:
        """The attributes to fetch from a patron's entry: exactly those the rules read."""
        wanted = [self.id_attribute, self.home_attribute, self.expiry_attribute, self.blocked_attribute]
        wanted += [rule.attribute for rule in self.group_rules]
        if self.group_base_dn:
            # memberOf is filled from the group search instead of read from the entry.
            wanted = [name for name in wanted if name.casefold() != "memberof"]
        unique: dict[str, str] = {}
        for name in wanted:
            if name:
                unique.setdefault(name.casefold(), name)
        # "1.1" asks for no attributes at all (RFC 4511, 4.5.1.8).
        return tuple(unique.values()) or ("1.1",)


def parse_options(reader: Reader) -> LdapOptions:
    """Check the ``[patrons.ldap]`` table under the ``[patrons]`` reader.

    Problems are recorded on the reader (every one, with its place) and a usable value is
    returned regardless, so that ``check-config`` lists all problems at once.
    """
    r = reader.sub("ldap")
    servers, start_tls, ca_file, verify, allow_plaintext = _parse_transport(r)
    mode = r.choice("mode", "search", MODES)
    bind_dn = r.str("bind_dn") or None
    bind_password = r.secret("bind_password")
    base_dn = r.str("base_dn")
    filter_template = r.str("filter", "(uid={card})")
    scope = r.choice("scope", "subtree", tuple(SCOPES))
    dn_template = r.str("dn_template")
    _check_mode(r, mode, bind_dn, bind_password, base_dn, filter_template, dn_template)

    id_attribute = r.str("id_attribute", "entryUUID")
    groups = frozenset(r.str_list("groups"))
    home_attribute = r.str("home_attribute")
    libraries = parse_libraries(r, "home_attribute", home_attribute, normalize_value)
    rules = _parse_group_rules(r)
    group_base_dn = r.str("group_base_dn")
    group_filter = r.str("group_filter", "(&(objectClass=groupOfNames)(member={dn}))")
    if group_base_dn:
        _check_dn(r, "group_base_dn", group_base_dn)
        _check_filter(r, "group_filter", group_filter, "{dn}")
    expiry_attribute = r.str("expiry_attribute")
    expiry_format = r.choice("expiry_format", "generalized-time", EXPIRY_FORMATS)
    blocked_attribute = r.str("blocked_attribute")
    blocked_values = frozenset(normalize_value(v) for v in r.str_list("blocked_values"))
    if bool(blocked_attribute) != bool(blocked_values):
        r.bad("blocked_values", "blocked_attribute and blocked_values must be given together")
    for key, name in (("id_attribute", id_attribute), ("home_attribute", home_attribute),
                      ("expiry_attribute", expiry_attribute), ("blocked_attribute", blocked_attribute)):
        _check_attribute(r, key, name)
    if not id_attribute:
        r.bad("id_attribute", "is required (a stable identifier such as entryUUID or uid)")
    for key, names in (("groups", groups), *(("group_rule", rule.groups) for rule in rules)):
        check_groups(r, key, names)

    connect_timeout = r.duration("connect_timeout", "3s")
    response_timeout = r.duration("response_timeout", "5s")
    timeout = r.duration("timeout", "10s")
    if connect_timeout > timeout or response_timeout > timeout:
        r.bad("timeout", "must be at least as long as connect_timeout and response_timeout")
    pool_size = r.int("pool_size", 8, minimum=1, maximum=64)
    server_retry = r.duration("server_retry", "30s")
    cache_ttl = 0.0
    if r.has("cache_ttl"):  # absent: no cache (the default)
        cache_ttl = r.duration("cache_ttl", "60s")
        if cache_ttl > _MAX_CACHE_TTL:
            r.bad("cache_ttl", f"must be at most {_MAX_CACHE_TTL:.0f}s (a PIN change or a block "
                                "must not wait longer)")
    r.unknown_keys(("group_rule",))
    return LdapOptions(
        servers=servers, start_tls=start_tls, ca_file=ca_file, verify=verify,
        allow_plaintext=allow_plaintext, mode=mode, bind_dn=bind_dn, bind_password=bind_password,
        base_dn=base_dn, filter=filter_template, scope=scope, dn_template=dn_template,
        id_attribute=id_attribute, groups=groups, home_attribute=home_attribute,
        libraries=MappingProxyType(libraries),
        group_rules=rules, group_base_dn=group_base_dn, group_filter=group_filter,
        expiry_attribute=expiry_attribute, expiry_format=expiry_format,
        blocked_attribute=blocked_attribute, blocked_values=blocked_values,
        connect_timeout=connect_timeout, response_timeout=response_timeout, timeout=timeout,
        pool_size=pool_size, server_retry=server_retry, cache_ttl=cache_ttl,
    )


def _parse_transport(r: Reader) -> tuple[tuple[str, ...], bool, Path | None, bool, bool]:
    servers = r.str_list("servers")
    start_tls = r.bool("start_tls", False)
    ca_file = r.path("ca_file")
    verify = r.bool("verify", True)
    allow_plaintext = r.bool("allow_plaintext", False)
    if not servers:
        r.bad("servers", 'is required: a list such as ["ldaps://ldap1.example.org", "ldaps://ldap2.example.org"]')
    for url in servers:
        parts = _split_url(url)
        if parts is None:
            r.bad("servers", f"{url!r} must be ldap://host[:port] or ldaps://host[:port]")
            continue
        scheme, host, _ = parts
        # SECURITY: PINs cross the wire in a simple bind; in clear text only over loopback, or
        # when an administrator explicitly says the network in between is private.
        if scheme == "ldap" and not start_tls and not allow_plaintext and not is_loopback(host):
            r.bad("servers", f"{url!r} would send PINs unencrypted: use ldaps://, start_tls = true, "
                              "or allow_plaintext = true on a private network")
    if ca_file is not None and not ca_file.is_file():
        r.bad("ca_file", f"file {ca_file} does not exist")
    return servers, start_tls, ca_file, verify, allow_plaintext


def _check_mode(r: Reader, mode: str, bind_dn: str | None, bind_password: str | None, base_dn: str,
                filter_template: str, dn_template: str) -> None:
    if mode == "search":
        if not base_dn:
            r.bad("base_dn", "is required in search mode (where the patron entries are)")
        _check_filter(r, "filter", filter_template, "{card}")
        if dn_template:
            r.bad("dn_template", 'is used only with mode = "direct"')
    else:
        if not dn_template:
            r.bad("dn_template", 'is required with mode = "direct", e.g. "uid={card},ou=patrons,dc=example,dc=org"')
        elif "{card}" not in dn_template:
            r.bad("dn_template", "must contain {card}")
        else:
            _check_dn(r, "dn_template", dn_template.replace("{card}", "x"))
        if bind_dn:
            r.bad("bind_dn", 'is not used with mode = "direct" (the patron binds as themselves)')
    if base_dn:
        _check_dn(r, "base_dn", base_dn)
    if bind_dn:
        _check_dn(r, "bind_dn", bind_dn)
        if bind_password is None and not r.has("bind_password"):
            r.bad("bind_password", 'is required with bind_dn ("env:NAME" or "file:PATH")')
    elif bind_password is not None:
        r.bad("bind_password", "is given without bind_dn")


def _parse_group_rules(r: Reader) -> tuple[GroupRule, ...]:
    raw = r.raw("group_rule", [])
    if not isinstance(raw, list):
        r.bad("group_rule", "must be an array of tables ([[patrons.ldap.group_rule]] sections)")
        return ()
    rules: list[GroupRule] = []
    for index, item in enumerate(raw, start=1):
        if not isinstance(item, Mapping):
            r.bad("group_rule", f"#{index} must be a table")
            continue
        rule = Reader(item, f"{r.where}.group_rule #{index}", r.problems, r.base)
        attribute = rule.str("attribute", required=True)
        values = rule.str_list("values")
        groups = rule.str_list("groups")
        _check_attribute(rule, "attribute", attribute)
        if not values:
            rule.bad("values", "must list at least one value (or a DN, for memberOf)")
        if not groups:
            rule.bad("groups", "must list at least one proxy group")
        rule.unknown_keys()
        rules.append(GroupRule(attribute, frozenset(normalize_value(v) for v in values), frozenset(groups)))
    return tuple(rules)


def _check_attribute(r: Reader, key: str, name: str) -> None:
    if not name:
        return
    if not _ATTRIBUTE.match(name):
        r.bad(key, f"{name!r} is not an attribute name")
    elif name.casefold() in PERSONAL_ATTRIBUTES:
        r.bad(key, f"{name!r} holds personal data; the proxy must not read it (privacy policy)")


def _check_dn(r: Reader, key: str, dn: str) -> None:
    try:
        parse_dn(dn)
    except ldap_errors.LDAPInvalidDnError:
        r.bad(key, f"{dn!r} is not a valid DN")


def _check_filter(r: Reader, key: str, template: str, placeholder: str) -> None:
    if placeholder not in template:
        r.bad(key, f"must contain {placeholder}")
    if not _balanced_filter(template):
        r.bad(key, f"{template!r} is not an LDAP filter (parentheses must enclose and balance)")


def _balanced_filter(text: str) -> bool:
    if not (text.startswith("(") and text.endswith(")")):
        return False
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def _split_url(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an ldap:// or ldaps:// URL without credentials, path or query."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
        return None
    if parts.username or parts.password or parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    return parts.scheme, parts.hostname, port or (636 if parts.scheme == "ldaps" else 389)


# ----------------------------------------------------------------------------------------------
# Pure rules: escaping, comparison, status and membership. No I/O.


def card_filter(template: str, card: str) -> str:
    """The patron filter with the card as an escaped assertion value (``*()\\`` and NUL)."""
    # SECURITY: escaping stops filter injection: "*" would match every entry, ")(" would add
    # clauses of the caller's choosing.
    return template.replace("{card}", escape_filter_chars(card))


def card_dn(template: str, card: str) -> str:
    """The patron DN with the card escaped as an RDN value (``,+"\\<>;=`` and edge spaces)."""
    # SECURITY: escaping stops DN injection: "x,ou=staff" must stay one value, not a new branch.
    return template.replace("{card}", escape_rdn(card))


def normalize_value(value: str) -> str:
    """The comparison form of a directory value: case-folded, and DNs with spacing normalised,
    so ``CN=Staff, OU=Groups,DC=x`` equals ``cn=staff,ou=groups,dc=x``."""
    text = value.strip()
    if "=" in text:
        try:
            parts = parse_dn(text, strip=True)
        except ldap_errors.LDAPInvalidDnError:
            return text.casefold()
        return "".join(f"{name.casefold()}={val.casefold()}{sep}" for name, val, sep in parts)
    return text.casefold()


@dataclass(frozen=True, slots=True)
class PatronEntry:
    """What the directory returned about one patron: the DN (used only to bind and to search
    groups, never kept) and the raw values of the requested attributes, by lower-case name."""

    dn: str
    attributes: Mapping[str, tuple[bytes, ...]]

    def raw(self, name: str) -> tuple[bytes, ...]:
        return self.attributes.get(name.casefold(), ())

    def texts(self, name: str) -> list[str]:
        return [value.decode("utf-8", "replace") for value in self.raw(name)]


def expires_at(raw: str, fmt: str) -> datetime | None:
    """The first instant at which a card is no longer valid (aware, UTC); None if it never expires.

    ``generalized-time``: ``YYYYMMDDhh[mm[ss]][.f][Z|±hh[mm]]`` (no zone: UTC); ``date``:
    ``YYYY-MM-DD`` or ``YYYYMMDD`` (also accepted as generalized-time), valid through that day in
    the proxy's local time; ``days-since-epoch``: shadowExpire semantics (the card stops on that
    day, UTC; negative means never). Raises ValueError or OverflowError when it cannot be read.
    """
    text = raw.strip()
    if fmt == "days-since-epoch":
        days = int(text)
        return None if days < 0 else datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=days)
    if fmt == "date" or re.fullmatch(r"\d{8}", text):
        day = date.fromisoformat(text) if "-" in text else datetime.strptime(text, "%Y%m%d").date()
        return day_expiry(day)
    match = re.fullmatch(r"(\d{10})(\d{2})?(\d{2})?(?:[.,]\d+)?(Z|[+-]\d{2}(?:\d{2})?)?", text)
    if match is None:
        raise ValueError("not a GeneralizedTime")
    stamp = match.group(1) + (match.group(2) or "00") + (match.group(3) or "00")
    moment = datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    zone = match.group(4)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5] or 0))
        moment -= sign * offset
    return moment


def refusal(entry: PatronEntry, options: LdapOptions, now: datetime) -> str | None:
    """Why the card may not be used ("blocked", "expired"), or None. Only call after the bind
    succeeded: the reason is told to the card holder alone."""
    if options.blocked_attribute:
        if any(normalize_value(v) in options.blocked_values for v in entry.texts(options.blocked_attribute)):
            return "blocked"
    if options.expiry_attribute:
        for value in entry.texts(options.expiry_attribute):
            try:
                moment = expires_at(value, options.expiry_format)
            except (ValueError, OverflowError):
                # Fail closed, in words that blame nobody: the library has to look at the record.
                log.warning("a patron entry has an unreadable %s value; refusing the card",
                            options.expiry_attribute)
                return "blocked"
            if moment is not None and now >= moment:
                return "expired"
    return None


def home_library(entry: PatronEntry, options: LdapOptions) -> str | None:
    """The configured library id of the first home-attribute value the ``libraries`` table knows."""
    if not options.home_attribute:
        return None
    for value in entry.texts(options.home_attribute):
        library = options.libraries.get(normalize_value(value))
        if library is not None:
            return library
    return None


def groups_of(entry: PatronEntry, options: LdapOptions, home: str | None) -> frozenset[str]:
    """Network groups, the home library, and the groups of every matching rule. Only configured
    names come out: a directory value never becomes a group by itself."""
    groups = set(options.groups)
    if home is not None:
        groups.add(home)
    for rule in options.group_rules:
        if any(normalize_value(v) in rule.values for v in entry.texts(rule.attribute)):
            groups |= rule.groups
    return frozenset(groups)


def stable_id(entry: PatronEntry, options: LdapOptions) -> tuple[str, str]:
    """(kind, identifier) to derive the patron's pseudonymous key from. The raw bytes are taken
    in hex because some identifiers (Active Directory's objectGUID) are binary."""
    values = entry.raw(options.id_attribute)
    if values:
        return options.id_attribute.casefold(), values[0].hex()
    # An entry without the identifier still gets a stable key, from its DN; renaming the entry
    # changes it, which only resets counters.
    return "dn", normalize_value(entry.dn)


def membership_of(entry: PatronEntry, options: LdapOptions, secret: bytes, now: datetime) -> Membership:
    """The Membership of a patron whose bind succeeded; raises CardRefused for refused cards."""
    reason = refusal(entry, options, now)
    if reason is not None:
        raise CardRefused(reason)
    home = home_library(entry, options)
    return Membership(
        groups=groups_of(entry, options, home),
        home_library=home,
        key=pseudonym(secret, "patron", "ldap", *stable_id(entry, options)),
        source="ldap",
    )


# ----------------------------------------------------------------------------------------------
# Connections (blocking; called from worker threads only)


def _close_quietly(conn: Any) -> None:
    try:
        conn.unbind()
    except Exception:  # noqa: S110 - a connection being thrown away may already be broken
        pass


def _result_code(result: Any) -> int:
    if isinstance(result, Mapping):
        return int(result.get("result", -1))
    return -1


def _result_name(result: Any) -> str:
    if isinstance(result, Mapping):
        return f"{result.get('description', 'unknown')} ({result.get('result', '?')})"
    return "no result"


class ServerUnreachable(ConnectionError):
    """A server could not be connected to (refused, timed out, TLS not trusted...). The message
    is for administrators: it names the failure, never a patron (only the service account binds
    while connecting)."""


def _failure_text(exc: BaseException, last_error: Any) -> str:
    # ldap3 keeps the clearest description in the connection's last_error; its exceptions
    # sometimes wrap it in tuple reprs, or quote a whole certificate.
    text = str(last_error or exc).strip()
    if "doesn't match any name" in text:
        text = "the server's certificate is not issued for this host name"
    return f"{type(exc).__name__}: {text[:200]}"


def _describe(exc: BaseException) -> str:
    """An exception for an administrator's eyes (probe output): type and a bounded message."""
    if isinstance(exc, ServerUnreachable):
        return str(exc)
    return _failure_text(exc, None)


@dataclass(frozen=True, slots=True)
class _ServerSpec:
    host: str
    port: int
    ssl: bool
    tls: Any  # ldap3.Tls or None


class _Servers:
    """The configured servers, in order of preference, with failover. Thread-safe.

    A new ``ldap3.Server`` is made for every connection: ldap3 keeps mutable state on it (the
    current address, addresses it saw fail, skipped for 5 s), which threads sharing one Server
    would overwrite under each other, and which would second-guess the failover here.
    """

    def __init__(self, options: LdapOptions) -> None:
        self._options = options
        self.urls = options.servers
        self._specs = [self._make_spec(url) for url in options.servers]
        self._down_until = [0.0] * len(self._specs)
        self._lock = threading.Lock()

    def _make_spec(self, url: str) -> _ServerSpec:
        parts = _split_url(url)
        if parts is None:  # parse_options refused it already; a hand-built LdapOptions may not
            raise ConfigError([f"[patrons.ldap] servers: not an LDAP server URL: {url!r}"])
        scheme, host, port = parts
        o = self._options
        tls = None
        if scheme == "ldaps" or o.start_tls:
            if not o.verify:
                log.warning("certificate checking is off for %s: anyone on the path can read PINs", url)
            try:
                tls = ldap3.Tls(
                    # SECURITY: certificates are checked (chain and host name) unless turned off.
                    validate=ssl.CERT_REQUIRED if o.verify else ssl.CERT_NONE,
                    ca_certs_file=str(o.ca_file) if o.ca_file else None,
                    sni=None if is_ip_literal(host) else host,
                )
            except ldap_errors.LDAPSSLConfigurationError as exc:
                raise ConfigError([f"[patrons.ldap] ca_file: {exc}"]) from None
        return _ServerSpec(host, port, scheme == "ldaps", tls)

    def preference(self) -> list[int]:
        """Server indexes to try, healthy ones first in configured order. Servers that failed
        recently come last rather than never: when all are marked down, one may be back."""
        now = time.monotonic()
        with self._lock:
            healthy = [i for i, until in enumerate(self._down_until) if until <= now]
        return healthy + [i for i in range(len(self._specs)) if i not in healthy]

    def is_down(self, index: int) -> bool:
        with self._lock:
            return self._down_until[index] > time.monotonic()

    def mark_down(self, index: int, exc: BaseException) -> None:
        with self._lock:
            self._down_until[index] = time.monotonic() + self._options.server_retry
        log.warning("LDAP server %s failed (%s); trying the others first for %.0fs", self.urls[index],
                    _describe(exc) if isinstance(exc, ServerUnreachable) else type(exc).__name__,
                    self._options.server_retry)

    def mark_up(self, index: int) -> None:
        with self._lock:
            self._down_until[index] = 0.0

    def connect(self, index: int, credentials: tuple[str, str] | None) -> Any:
        """A new connection to server ``index``: opened, TLS started when configured, and bound
        as ``credentials`` (the service account) when given; anonymous otherwise.

        Raises ServerUnreachable when the server cannot be used, and DirectoryUnavailable when
        it refuses the service account.
        """
        o = self._options
        spec = self._specs[index]
        server = ldap3.Server(spec.host, port=spec.port, use_ssl=spec.ssl, tls=spec.tls,
                              get_info=ldap3.NONE, connect_timeout=o.connect_timeout)
        conn = ldap3.Connection(
            server, authentication=ldap3.ANONYMOUS, client_strategy=ldap3.SAFE_SYNC,
            auto_bind=ldap3.AUTO_BIND_NONE, read_only=True, lazy=False, raise_exceptions=False,
            # SECURITY: a referral would send the next bind, with a PIN, to a server we did not choose.
            auto_referrals=False,
            # ldap3 packs this into a struct timeval of whole seconds: an int, at least 1.
            receive_timeout=max(1, math.ceil(o.response_timeout)),
            auto_escape=False, return_empty_attributes=False,
        )
        try:
            conn.open(read_server_info=False)
            if o.start_tls and not spec.ssl:
                started = conn.start_tls(read_server_info=False)
                if not (started[0] if isinstance(started, tuple) else started):
                    raise ldap_errors.LDAPStartTLSError("the server did not start TLS")
            if credentials is not None:
                code, result = _simple_bind(conn, *credentials)
                if code != _SUCCESS:
                    log.error("LDAP server %s refused the service account: %s",
                              self.urls[index], _result_name(result))
                    raise DirectoryUnavailable("the directory refused the proxy's service account "
                                               f"({_result_name(result)})")
        except _NETWORK_ERRORS as exc:
            detail = _failure_text(exc, conn.last_error)
            _close_quietly(conn)
            raise ServerUnreachable(detail) from None
        except BaseException:
            _close_quietly(conn)
            raise
        return conn

    def open_any(self, credentials: tuple[str, str] | None) -> tuple[Any, int]:
        """A connection to the first server that answers, and its index."""
        for index in self.preference():
            try:
                conn = self.connect(index, credentials)
            except _NETWORK_ERRORS as exc:
                self.mark_down(index, exc)
                continue
            self.mark_up(index)
            return conn, index
        raise DirectoryUnavailable("no directory server could be reached")


def _simple_bind(conn: Any, dn: str, password: str) -> tuple[int, Any]:
    """Bind ``conn`` as ``dn``; (LDAP result code, result). The connection keeps no credentials."""
    # SECURITY: a simple bind with an empty password is an unauthenticated bind that servers
    # answer with "success": it must never be sent, whatever the caller checked before.
    if not password:
        return _INVALID_CREDENTIALS, None
    conn.authentication = ldap3.SIMPLE
    conn.user = dn
    conn.password = password
    try:
        returned = conn.bind(read_server_info=False)
    finally:
        # SECURITY: drop the connection's references to the DN and PIN: it outlives this
        # sign-in in the pool, and ldap3 would otherwise keep them for a reconnect.
        conn.user = None
        conn.password = None
    result = returned[1] if isinstance(returned, tuple) else conn.result
    return _result_code(result), result


class _Pool:
    """Idle connections of one identity (the service account, anonymous, or unbound for patron
    binds), opened on demand and reused. Thread-safe; each connection serves one thread at a time."""

    def __init__(self, servers: _Servers, credentials: tuple[str, str] | None, size: int) -> None:
        self._servers = servers
        self._credentials = credentials
        self._size = size
        self._idle: deque[tuple[Any, int]] = deque()
        self._lock = threading.Lock()

    def run(self, operation: Callable[[Any], T]) -> T:
        """``operation(connection)``, retried on another connection when the transport fails
        (an idle connection may have been closed by the server; a server may die mid-way).

        Raises DirectoryUnavailable when no server completes it.
        """
        for _ in range(len(self._servers.urls) + 1):
            conn, index = self._take()
            try:
                result = operation(conn)
            except _NETWORK_ERRORS as exc:
                _close_quietly(conn)
                self._servers.mark_down(index, exc)
                continue
            except DirectoryUnavailable:
                # The server answered (with an error the operation judged fatal): the connection
                # itself is fine.
                self._give_back(conn, index)
                raise
            except Exception as exc:
                # A configuration or protocol problem (a filter ldap3 cannot parse...) or a bug:
                # fail closed as "directory unavailable", never as a crash or a wrong PIN.
                # SECURITY: not chained, and only the type is logged: the message may quote the
                # filter, card included.
                _close_quietly(conn)
                log.error("LDAP operation failed: %s", type(exc).__name__)
                raise DirectoryUnavailable(f"LDAP operation failed ({type(exc).__name__})") from None
            except BaseException:
                _close_quietly(conn)
                raise
            self._give_back(conn, index)
            return result
        raise DirectoryUnavailable("the directory servers stopped answering")

    def _take(self) -> tuple[Any, int]:
        while True:
            with self._lock:
                item = self._idle.pop() if self._idle else None
            if item is None:
                return self._servers.open_any(self._credentials)
            if not self._servers.is_down(item[1]):
                return item
            # An idle connection to a server that failed meanwhile: fail over now instead of
            # waiting for it to time out.
            _close_quietly(item[0])

    def _give_back(self, conn: Any, index: int) -> None:
        with self._lock:
            if len(self._idle) < self._size:
                self._idle.append((conn, index))
                return
        _close_quietly(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = list(self._idle), deque()
        for conn, _ in idle:
            _close_quietly(conn)


class _Directory:
    """The blocking side: every method runs in a worker thread."""

    def __init__(self, options: LdapOptions, secret: bytes) -> None:
        self.options = options
        self._secret = secret
        self.servers = _Servers(options)
        service = (options.bind_dn, options.bind_password or "") if options.bind_dn else None
        self._service = _Pool(self.servers, service, options.pool_size)
        self._binds = _Pool(self.servers, None, options.pool_size)
        self._attributes = list(options.attributes())
        self._scope = SCOPES[options.scope]
        self._time_limit = max(1, int(options.response_timeout))
        # A DN that cannot exist, bound to when the card is unknown (see _search_and_bind).
        self._nobody_dn = f"cn=no-such-patron-{secrets.token_hex(8)},{options.base_dn or 'dc=invalid'}"

    def check(self, card: str, pin: str) -> Membership | None:
        """The contract of ``Authenticator.authenticate``, blocking."""
        if self.options.mode == "direct":
            entry = self._binds.run(partial(self._bind_and_read, card_dn(self.options.dn_template, card), pin))
        else:
            entry = self._search_and_bind(card, pin)
        if entry is None:
            return None
        return membership_of(entry, self.options, self._secret, datetime.now(UTC))

    def _search_and_bind(self, card: str, pin: str) -> PatronEntry | None:
        found = self._service.run(partial(self._find, card))
        if found is None:
            # SECURITY: bind anyway, to a DN that cannot exist, so that an unknown card costs the
            # same round trips as a wrong PIN and the two cannot be told apart by timing.
            self._binds.run(partial(self._bind, self._nobody_dn, pin))
            return None
        if not self._binds.run(partial(self._bind, found.dn, pin)):
            return None
        if self.options.group_base_dn:
            found = self._service.run(partial(self._with_groups, found))
        return found

    def _bind_and_read(self, dn: str, pin: str, conn: Any) -> PatronEntry | None:
        """Direct mode: bind as the patron, then read their own entry on that connection."""
        if not self._bind(dn, pin, conn):
            return None
        entry = self._read(conn, dn)
        return self._with_groups(entry, conn) if self.options.group_base_dn else entry

    def _bind(self, dn: str, pin: str, conn: Any) -> bool:
        code, result = _simple_bind(conn, dn, pin)
        if code == _SUCCESS:
            return True
        if code in _WRONG_CREDENTIALS:
            return False
        log.error("the directory answered a patron bind with %s", _result_name(result))
        raise DirectoryUnavailable(f"patron bind failed: {_result_name(result)}")

    def _search(self, conn: Any, base: str, filter_text: str, scope: Any, attributes: Sequence[str],
                size_limit: int) -> tuple[int, Any, list[PatronEntry]]:
        _, result, response, _ = conn.search(
            base, filter_text, search_scope=scope, dereference_aliases=ldap3.DEREF_NEVER,
            attributes=list(attributes), size_limit=size_limit, time_limit=self._time_limit,
        )
        entries = [
            PatronEntry(
                dn=str(item["dn"]),
                attributes={str(name).casefold(): tuple(values)
                            for name, values in (item.get("raw_attributes") or {}).items()},
            )
            for item in response or ()
            if item.get("type") == "searchResEntry"
        ]
        return _result_code(result), result, entries

    def _find(self, card: str, conn: Any) -> PatronEntry | None:
        code, result, entries = self._search(
            conn, self.options.base_dn, card_filter(self.options.filter, card), self._scope,
            self._attributes, size_limit=2,
        )
        if code == _SIZE_LIMIT_EXCEEDED or len(entries) > 1:
            # SECURITY: an ambiguous match must not sign anyone in as "whichever came first".
            log.warning("the patron filter matched more than one entry; refusing the sign-in "
                        "(make [patrons.ldap] filter stricter)")
            return None
        if code != _SUCCESS:
            log.error("the patron search failed: %s", _result_name(result))
            raise DirectoryUnavailable(f"patron search failed: {_result_name(result)}")
        return entries[0] if entries else None

    def _read(self, conn: Any, dn: str) -> PatronEntry:
        code, result, entries = self._search(conn, dn, "(objectClass=*)", ldap3.BASE, self._attributes, 1)
        if code != _SUCCESS or not entries:
            log.error("a patron cannot read their own entry (%s); the directory's access rules "
                      "must let patrons read the attributes the rules need", _result_name(result))
            raise DirectoryUnavailable("cannot read the patron's entry")
        return entries[0]

    def _with_groups(self, entry: PatronEntry, conn: Any) -> PatronEntry:
        """The entry with ``memberof`` set to the DNs of the groups found by the group search."""
        o = self.options
        code, result, groups = self._search(
            conn, o.group_base_dn, o.group_filter.replace("{dn}", escape_filter_chars(entry.dn)),
            ldap3.SUBTREE, ["1.1"], _GROUP_SEARCH_LIMIT,
        )
        if code not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED):
            log.error("the group search failed: %s", _result_name(result))
            raise DirectoryUnavailable(f"group search failed: {_result_name(result)}")
        attributes = dict(entry.attributes)
        attributes["memberof"] = tuple(group.dn.encode("utf-8") for group in groups)
        return PatronEntry(entry.dn, attributes)

    def probe(self) -> list[str]:
        """Connect to every server as the proxy would (TLS, service bind) and check that the
        configured base DNs can be seen. Human-readable problems; empty when all is well."""
        problems: list[str] = []
        credentials = (self.options.bind_dn, self.options.bind_password or "") if self.options.bind_dn else None
        for index, url in enumerate(self.servers.urls):
            try:
                conn = self.servers.connect(index, credentials)
            except DirectoryUnavailable as exc:
                problems.append(f"{url}: {exc}")
                continue
            except _NETWORK_ERRORS as exc:
                problems.append(f"{url}: cannot connect: {_describe(exc)}")
                continue
            try:
                problems += [f"{url}: {problem}" for problem in self._probe_dns(conn)]
            except _NETWORK_ERRORS as exc:
                problems.append(f"{url}: stopped answering: {_describe(exc)}")
            finally:
                _close_quietly(conn)
        return problems

    def _probe_dns(self, conn: Any) -> list[str]:
        who = "the service account" if self.options.bind_dn else "an anonymous client"
        problems = []
        for key in ("base_dn", "group_base_dn"):
            dn = getattr(self.options, key)
            if not dn:
                continue
            code, result, entries = self._search(conn, dn, "(objectClass=*)", ldap3.BASE, ["1.1"], 1)
            if code == _NO_SUCH_OBJECT or (code == _SUCCESS and not entries):
                problems.append(f"{key} {dn!r} was not found (missing, or not visible to {who})")
            elif code != _SUCCESS:
                problems.append(f"reading {key} {dn!r} failed: {_result_name(result)}")
        return problems

    def warm_up(self) -> None:
        """Open one connection of each pool now, so the first sign-in does not pay for it."""
        if self.options.mode == "search":
            self._service.run(lambda conn: None)
        self._binds.run(lambda conn: None)

    def close(self) -> None:
        self._service.close()
        self._binds.close()


# ----------------------------------------------------------------------------------------------
# The authenticator (the asyncio side)


class LdapAuthenticator:
    """Patrons from an LDAP directory. See the module docstring and ``base.Authenticator``.

    Everything is built in the constructor (no I/O), so ``probe()`` and ``authenticate()`` work
    without ``start()``; ``start()`` only warms the connection pools up.
    """

    name = "ldap"

    def __init__(self, options: LdapOptions, secret: bytes) -> None:
        self._options = options
        self._directory = _Directory(options, secret)
        # A pool of our own: a stalled directory then ties up these threads only, never the
        # default executor that file reads and PIN hashing elsewhere rely on.
        self._executor = ThreadPoolExecutor(max_workers=options.pool_size, thread_name_prefix="ldap")
        self._closed = False
        # Successful checks only, keyed by an HMAC of card and PIN under a key that lives in this
        # process alone: the cache holds no PIN, and nothing in it survives a restart.
        self._cache: TTLCache[bytes, Membership] | None = (
            TTLCache(maxsize=_CACHE_ENTRIES, ttl=options.cache_ttl) if options.cache_ttl > 0 else None
        )
        self._cache_key = secrets.token_bytes(32)

    async def start(self) -> None:
        """Warm the connection pools up. A directory that is down now is not fatal: the proxy
        must start and serve signed-in patrons; each sign-in tries the directory again."""
        try:
            await self._in_thread(self._directory.warm_up, self._options.timeout)
        except DirectoryUnavailable as exc:
            log.warning("the LDAP directory is not usable at start (%s); sign-ins will retry", exc)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Threads stuck on a stalled server finish on their own, bounded by response_timeout.
        self._executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self._directory.close)

    async def authenticate(self, card: str, pin: str) -> Membership | None:
        """See ``base.Authenticator``: a Membership, None (wrong PIN or unknown card), or raises
        CardRefused / DirectoryUnavailable."""
        if not acceptable_credentials(card, pin):
            return None
        cache_key = self._cache_digest(card, pin) if self._cache is not None else None
        if self._cache is not None and cache_key is not None:
            cached = self._cache.get(cache_key)
            if cached is not None:
                return cached
        membership = await self._in_thread(partial(self._directory.check, card, pin), self._options.timeout)
        if membership is not None and self._cache is not None and cache_key is not None:
            self._cache[cache_key] = membership
        return membership

    async def probe(self) -> list[str]:
        """For ``check-config --probe``: every server connected to (TLS, service bind) and the
        base DNs looked up. Human-readable problems, naming the server; empty when all is well."""
        o = self._options
        budget = len(o.servers) * (o.connect_timeout + 4 * o.response_timeout)
        try:
            return await self._in_thread(self._directory.probe, budget)
        except DirectoryUnavailable as exc:
            return [str(exc)]

    def _cache_digest(self, card: str, pin: str) -> bytes:
        # NUL cannot occur in either (acceptable_credentials refuses it), so the pair is unambiguous.
        return hmac.new(self._cache_key, f"{card}\x00{pin}".encode(), hashlib.sha256).digest()

    async def _in_thread(self, call: Callable[[], T], budget: float) -> T:
        """``call()`` in the pool, abandoned after ``budget`` seconds (the thread then ends on
        its own, bounded by response_timeout) with DirectoryUnavailable."""
        if self._closed:
            raise DirectoryUnavailable("the LDAP authenticator is closed")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(budget):
                return await loop.run_in_executor(self._executor, call)
        except TimeoutError:
            log.warning("the LDAP directory did not answer within %.1fs", budget)
            raise DirectoryUnavailable("the directory did not answer in time") from None
