"""Patron source: a library system's SIP2 service (Evergreen, Koha, Sierra, Symphony, Polaris...).

One sign-in is one exchange on a pooled connection:

1. (new connections only) Login ``93`` as the proxy's SIP account when one is configured;
   a refused login is a broken configuration (``DirectoryUnavailable``), never a wrong PIN;
2. Patron Information ``63`` (or Patron Status ``23``) with the card as ``AA`` and the PIN as
   ``AD``;
3. from the answer, only: ``BL`` (valid patron), ``CQ`` (valid PIN), the 14 patron status
   flags, the home library field (``AQ`` by default) and, when configured, an expiry field.
   Names (``AE``), addresses, e-mails, phone numbers, fines and screen messages are skipped
   without being decoded (see ``sip2_codec.decode``).

``BL=N`` or ``CQ=N`` is "wrong card or PIN" (``None``), the same for both. Only when both say
yes are the status flags and the expiry looked at, so a card's standing is told to its holder
alone (``CardRefused``). An answer without ``CQ`` is a server that did not check the PIN: that
must never sign anyone in, so it is a broken service (``DirectoryUnavailable``).

Transport: asyncio streams (nothing blocks the event loop), TLS with certificate checks when
``tls = true`` (SIP2 is plain text; it is usually put behind stunnel), error detection with
sequence numbers and checksums (``AY``/``AZ``) verified on every answer. A damaged answer is
asked for again once (``97``); a server that keeps sending damaged answers, closes, hangs or
answers out of turn is marked down and the next server is tried. Connections are kept for
``keepalive`` seconds of idleness and reopened when the server has closed them.

Nothing here logs or keeps a message, a card number, a PIN or a field value: log lines name
servers, message types and exception types only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

import proxy.patrons.sip2_codec as codec
from proxy.errors import ConfigError, DirectoryUnavailable
from proxy.membership import Membership
from proxy.patrons.base import CardRefused, acceptable_credentials
from proxy.patrons.common import (
    Failover,
    check_groups,
    client_tls,
    day_expiry,
    is_loopback,
    library_of,
    parse_libraries,
)
from proxy.patrons.hashing import pseudonym
from proxy.settings import Reader

log = logging.getLogger(__name__)

T = TypeVar("T")

MESSAGES = ("patron_information", "patron_status")
ENCODINGS = ("utf-8", "cp850", "latin-1", "ascii")

# The 14 patron status flags of answers 24 and 64, by position (SIP2 2.00).
STATUS_FLAGS = (
    "charge_privileges_denied", "renewal_privileges_denied", "recall_privileges_denied",
    "hold_privileges_denied", "card_reported_lost", "too_many_items_charged",
    "too_many_items_overdue", "too_many_renewals", "too_many_claims_of_items_returned",
    "too_many_items_lost", "excessive_outstanding_fines", "excessive_outstanding_fees",
    "recall_overdue", "too_many_items_billed",
)
# A card the library system will not lend on, or that was reported lost (someone else may hold
# it), is refused by default; the rest concern loans, not reading databases.
DEFAULT_REFUSE = frozenset({"charge_privileges_denied", "card_reported_lost"})
ACTIONS = ("refuse", "allow")

# SECURITY: identifiers holding personal data (name, addresses, e-mail, phone, birth date
# extensions, screen and print lines, which may quote the name). The proxy needs none of them,
# so a configuration naming one is refused instead of quietly reading it.
PERSONAL_FIELDS = frozenset({"AE", "BD", "BE", "BF", "AF", "AG", "PB", "PD", "PE", "PF"})
# Identifiers the decoder always needs.
_CORE_FIELDS = frozenset({"AA", "BL", "CQ"})

_LOGIN = ("93", "94", 1)
_PATRON_INFORMATION = ("63", "64", 14 + 3 + 18 + 6 * 4)
_PATRON_STATUS = ("23", "24", 14 + 3 + 18)
_SC_STATUS = ("99", "98", 1 + 1 + 1 + 1 + 1 + 1 + 3 + 3 + 18 + 4)

# Failures of the transport or of the server's end of the protocol: the connection is dropped
# and the server skipped for a while.
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, broken pipe, and ssl.SSLError (certificate not trusted...)
    asyncio.IncompleteReadError,  # the server closed the connection
    asyncio.LimitOverrunError,  # an answer longer than MAX_FRAME
    TimeoutError,
    codec.FormatError,
)


# ----------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class Sip2Options:
    """The ``[patrons.sip2]`` table, checked. See ``config/sip2-example.toml`` for each option."""

    servers: tuple[tuple[str, int], ...]
    tls: bool = False
    ca_file: Path | None = None
    verify: bool = True
    allow_plaintext: bool = False
    login_user: str = ""
    # SECURITY: kept out of repr() so that a logged or printed configuration shows no secret.
    login_password: str | None = field(default=None, repr=False)
    location_code: str = ""
    institution: str = ""
    terminal_password: str | None = field(default=None, repr=False)
    message: str = "patron_information"
    checksums: bool = True
    encoding: str = "utf-8"
    groups: frozenset[str] = frozenset()
    home_field: str = "AQ"
    libraries: Mapping[str, str] = field(default_factory=dict)
    expiry_field: str = ""
    refuse: frozenset[str] = DEFAULT_REFUSE  # status flags that refuse a card
    connect_timeout: float = 3.0
    response_timeout: float = 5.0
    timeout: float = 10.0
    pool_size: int = 4
    keepalive: float = 60.0
    server_retry: float = 30.0

    def wanted(self) -> frozenset[str]:
        """The identifiers read from an answer: exactly those the rules use."""
        return _CORE_FIELDS | {name for name in (self.home_field, self.expiry_field) if name}

    def server_names(self) -> tuple[str, ...]:
        return tuple(f"{host}:{port}" for host, port in self.servers)


def parse_options(reader: Reader) -> Sip2Options:
    """Check the ``[patrons.sip2]`` table under the ``[patrons]`` reader; every problem is
    recorded on the reader and a usable value returned regardless (see ``ldap.parse_options``)."""
    r = reader.sub("sip2")
    tls = r.bool("tls", False)
    allow_plaintext = r.bool("allow_plaintext", False)
    servers = _parse_servers(r, tls, allow_plaintext)
    ca_file = r.path("ca_file")
    if ca_file is not None and not ca_file.is_file():
        r.bad("ca_file", f"file {ca_file} does not exist")
    verify = r.bool("verify", True)
    login_user = r.str("login_user")
    login_password = r.secret("login_password")
    if login_user and login_password is None and not r.has("login_password"):
        r.bad("login_password", 'is required with login_user ("env:NAME" or "file:PATH")')
    if login_password is not None and not login_user:
        r.bad("login_password", "is given without login_user")
    location_code = r.str("location_code")
    institution = r.str("institution")
    terminal_password = r.secret("terminal_password")
    for key, value in (("login_user", login_user), ("location_code", location_code),
                       ("institution", institution), ("login_password", login_password or ""),
                       ("terminal_password", terminal_password or "")):
        if not codec.valid_value(value):
            r.bad(key, "must not contain '|' or control characters")
    message = r.choice("message", "patron_information", MESSAGES)
    checksums = r.bool("checksums", True)
    encoding = r.choice("encoding", "utf-8", ENCODINGS)
    groups = frozenset(r.str_list("groups"))
    check_groups(r, "groups", groups)
    home_field = r.str("home_field", "AQ")
    expiry_field = r.str("expiry_field")
    for key, name in (("home_field", home_field), ("expiry_field", expiry_field)):
        _check_field(r, key, name)
    # The home library is read only when the libraries table can map it (only configured ids
    # ever become groups); AQ is the usual field.
    libraries = parse_libraries(r, "home_field", home_field if r.has("libraries") or r.has("home_field") else "")
    home_field = home_field if libraries else ""
    refuse = _parse_status(r)
    connect_timeout = r.duration("connect_timeout", "3s")
    response_timeout = r.duration("response_timeout", "5s")
    timeout = r.duration("timeout", "10s")
    if connect_timeout > timeout or response_timeout > timeout:
        r.bad("timeout", "must be at least as long as connect_timeout and response_timeout")
    pool_size = r.int("pool_size", 4, minimum=1, maximum=64)
    keepalive = r.duration("keepalive", "60s")
    server_retry = r.duration("server_retry", "30s")
    r.unknown_keys(("status",))
    return Sip2Options(
        servers=servers, tls=tls, ca_file=ca_file, verify=verify, allow_plaintext=allow_plaintext,
        login_user=login_user, login_password=login_password, location_code=location_code,
        institution=institution, terminal_password=terminal_password, message=message,
        checksums=checksums, encoding=encoding, groups=groups, home_field=home_field,
        libraries=MappingProxyType(libraries), expiry_field=expiry_field, refuse=refuse,
        connect_timeout=connect_timeout, response_timeout=response_timeout, timeout=timeout,
        pool_size=pool_size, keepalive=keepalive, server_retry=server_retry,
    )


def _parse_servers(r: Reader, tls: bool, allow_plaintext: bool) -> tuple[tuple[str, int], ...]:
    raw = r.str_list("servers")
    if not raw:
        r.bad("servers", 'is required: a list such as ["sip.example.org:6001", "sip2.example.org:6001"]')
    servers: list[tuple[str, int]] = []
    for text in raw:
        host, sep, port_text = text.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            r.bad("servers", f"{text!r} must be host:port")
            continue
        # SECURITY: SIP2 carries PINs in clear text; off this machine only over TLS, or when an
        # administrator explicitly says the network in between is private.
        if not tls and not allow_plaintext and not is_loopback(host):
            r.bad("servers", f"{text!r} would send PINs unencrypted: use tls = true (e.g. stunnel in "
                             "front of the SIP2 server), or allow_plaintext = true on a private network")
        servers.append((host, int(port_text)))
    return tuple(servers)


def _check_field(r: Reader, key: str, name: str) -> None:
    if not name:
        return
    if not codec.valid_field_id(name):
        r.bad(key, f"{name!r} is not a SIP2 field identifier (two characters, such as AQ)")
    elif name in PERSONAL_FIELDS:
        r.bad(key, f"{name!r} holds personal data; the proxy must not read it (privacy policy)")
    elif name in _CORE_FIELDS:
        r.bad(key, f"{name!r} is read for its own purpose and cannot be used here")


def _parse_status(r: Reader) -> frozenset[str]:
    table = r.sub("status")
    refuse = set(DEFAULT_REFUSE)
    for flag in STATUS_FLAGS:
        if table.has(flag):
            if table.choice(flag, "refuse", ACTIONS) == "refuse":
                refuse.add(flag)
            else:
                refuse.discard(flag)
    table.unknown_keys()
    return frozenset(refuse)


# ----------------------------------------------------------------------------------------------
# Pure rules


def parse_expiry(raw: str) -> datetime | None:
    """When a card stops being valid, from an expiry field: ``YYYYMMDD`` (optionally followed by
    the rest of a SIP2 timestamp) or ``YYYY-MM-DD``, valid through that day. None for an empty
    value (no expiry). Raises ValueError when it cannot be read."""
    text = raw.strip()
    if not text:
        return None
    digits = text[:10].replace("-", "") if text[4:5] == "-" else text[:8]
    if len(digits) != 8 or not digits.isdigit():
        raise ValueError("not a date")
    return day_expiry(date(int(digits[:4]), int(digits[4:6]), int(digits[6:8])))


def refusal(answer: codec.Answer, options: Sip2Options, now: datetime) -> str | None:
    """Why a card whose PIN was right may not be used ("blocked", "expired"), or None."""
    status = answer.fixed[:14]
    for position, flag in enumerate(STATUS_FLAGS):
        if flag in options.refuse and status[position : position + 1] not in (" ", "N", ""):
            return "blocked"
    if options.expiry_field:
        raw = answer.fields.get(options.expiry_field)
        if raw is not None:
            try:
                moment = parse_expiry(raw)
            except ValueError:
                # Fail closed, in words that blame nobody: the library has to look at the record.
                log.warning("a SIP2 answer has an unreadable %s value; refusing the card", options.expiry_field)
                return "blocked"
            if moment is not None and now >= moment:
                return "expired"
    return None


def judge(answer: codec.Answer, card: str, options: Sip2Options, secret: bytes, now: datetime) -> Membership | None:
    """The contract of ``authenticate`` applied to one answer about ``card``."""
    if answer.fields.get("BL", "Y") != "Y":
        return None
    pin_valid = answer.fields.get("CQ")
    if pin_valid is None:
        log.error("the SIP2 server did not say whether the PIN is valid (no CQ field); no patron "
                  "can sign in until it does")
        raise DirectoryUnavailable("the SIP2 server does not check PINs")
    if pin_valid != "Y":
        return None
    reason = refusal(answer, options, now)
    if reason is not None:
        raise CardRefused(reason)
    home = library_of(answer.fields.get(options.home_field), options.libraries) if options.home_field else None
    groups = set(options.groups)
    if home is not None:
        groups.add(home)
    return Membership(
        groups=frozenset(groups),
        home_library=home,
        key=pseudonym(secret, "patron", "sip2", options.institution, card),
        source="sip2",
    )


# ----------------------------------------------------------------------------------------------
# Connections


class _Connection:
    """One open, logged-in connection to one server. Used by one sign-in at a time."""

    def __init__(self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 options: Sip2Options) -> None:
        self.index = index
        self._reader = reader
        self._writer = writer
        self._options = options
        self._sequence = 0
        self.last_used = time.monotonic()

    async def exchange(self, kind: tuple[str, str, int], fixed: str, fields: list[tuple[str, str]],
                       wanted: frozenset[str]) -> codec.Answer:
        """Send one request and read its answer, asking once more for a damaged one."""
        request, answer_command, fixed_length = kind
        o = self._options
        sequence = self._sequence if o.checksums else None
        self._sequence = (self._sequence + 1) % 10
        frame = codec.encode(request, fixed, fields, sequence=sequence, encoding=o.encoding)
        self._writer.write(frame)
        await self._writer.drain()
        for attempt in range(2):
            line = await self._read_line()
            if line.lstrip(b"\n").startswith(b"96"):
                # The server received our request damaged: send it again, once.
                if attempt:
                    break
                self._writer.write(frame)
                await self._writer.drain()
                continue
            try:
                answer = codec.decode(line, command=answer_command, fixed_length=fixed_length, wanted=wanted,
                                      checksums=o.checksums, encoding=o.encoding)
            except codec.ChecksumError:
                if attempt:
                    raise
                self._writer.write(codec.resend_request(checksums=o.checksums))
                await self._writer.drain()
                continue
            if o.checksums and answer.sequence != sequence:
                raise codec.FormatError("the answer's sequence number is not the request's")
            self.last_used = time.monotonic()
            return answer
        raise codec.FormatError("the server kept asking for the request again")

    async def _read_line(self) -> bytes:
        async with asyncio.timeout(self._options.response_timeout):
            return await self._reader.readuntil(codec.TERMINATOR)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()


class _Pool:
    """Logged-in connections, reused; at most ``pool_size`` in use at once. Event loop only."""

    def __init__(self, options: Sip2Options) -> None:
        self._options = options
        self.failover = Failover(options.server_names(), options.server_retry, "SIP2")
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(options.pool_size)
        self._ssl = client_tls("patrons.sip2", options.ca_file, options.verify) if options.tls else None

    async def run(self, operation: Callable[[_Connection], Awaitable[T]]) -> T:
        """``operation(connection)``, retried on a fresh connection when the transport fails.
        Raises DirectoryUnavailable when no server completes it."""
        async with self._slots:
            for _ in range(len(self._options.servers) + 1):
                conn, fresh = await self._take()
                try:
                    result = await operation(conn)
                except _TRANSPORT_ERRORS as exc:
                    conn.close()
                    # A kept connection the server closed meanwhile is normal; anything else,
                    # or any failure of a fresh connection, counts against the server.
                    closed = isinstance(exc, asyncio.IncompleteReadError | ConnectionResetError | BrokenPipeError)
                    if fresh or not closed:
                        self.failover.mark_down(conn.index, _describe(exc))
                    continue
                except BaseException:
                    # Cancelled or refused mid-exchange: the connection's state is unknown.
                    conn.close()
                    raise
                self._idle.append(conn)
                return result
        raise DirectoryUnavailable("the SIP2 servers stopped answering")

    async def _take(self) -> tuple[_Connection, bool]:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.last_used < self._options.keepalive and not self.failover.is_down(conn.index):
                return conn, False
            conn.close()
        for index in self.failover.preference():
            try:
                conn = await self.connect(index)
            except _TRANSPORT_ERRORS as exc:
                self.failover.mark_down(index, _describe(exc))
                continue
            self.failover.mark_up(index)
            return conn, True
        raise DirectoryUnavailable("no SIP2 server could be reached")

    async def connect(self, index: int) -> _Connection:
        """A new connection to server ``index``, logged in when a SIP account is configured.
        Raises a transport error when it cannot be used, and DirectoryUnavailable when the
        server refuses the proxy's SIP account."""
        o = self._options
        host, port = o.servers[index]
        async with asyncio.timeout(o.connect_timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=self._ssl, server_hostname=host if self._ssl else None,
                limit=codec.MAX_FRAME,
            )
        conn = _Connection(index, reader, writer, o)
        if not o.login_user:
            return conn
        try:
            answer = await conn.exchange(
                _LOGIN, "00",
                [("CN", o.login_user), ("CO", o.login_password or ""), ("CP", o.location_code)],
                frozenset(),
            )
        except BaseException:
            conn.close()
            raise
        if answer.fixed != "1":
            conn.close()
            log.error("SIP2 server %s refused the proxy's SIP account (login_user)", self.failover.names[index])
            raise DirectoryUnavailable("the SIP2 server refused the proxy's SIP account")
        return conn

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _describe(exc: BaseException) -> str:
    """An exception for an administrator's eyes: its type, and the reason of a TLS failure or
    a format error (fixed phrases, never data)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not trusted: {exc.verify_message}"
    if isinstance(exc, codec.FormatError):
        return f"bad answer: {exc}"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "closed the connection"
    return type(exc).__name__


# ----------------------------------------------------------------------------------------------
# The authenticator


class Sip2Authenticator:
    """Patrons from a SIP2 service. See the module docstring and ``base.Authenticator``.

    Built without I/O, so ``probe()`` and ``authenticate()`` work without ``start()``.
    """

    name = "sip2"

    def __init__(self, options: Sip2Options, secret: bytes) -> None:
        if not options.servers:
            raise ConfigError(["[patrons.sip2] servers: at least one server is required"])
        for host, _ in options.servers:
            if not options.tls and not options.allow_plaintext and not is_loopback(host):
                raise ConfigError([f"[patrons.sip2] servers: {host} would receive PINs unencrypted"])
        self._options = options
        self._secret = secret
        self._pool = _Pool(options)
        kind = _PATRON_STATUS if options.message == "patron_status" else _PATRON_INFORMATION
        self._kind = kind
        self._wanted = options.wanted()

    async def start(self) -> None:
        """Open one connection now. A service down now is not fatal: signed-in patrons keep
        reading, and each sign-in tries again."""
        try:
            async with asyncio.timeout(self._options.timeout):
                await self._pool.run(_nothing)
        except (DirectoryUnavailable, TimeoutError) as exc:
            log.warning("the SIP2 service is not usable at start (%s); sign-ins will retry", type(exc).__name__)

    async def close(self) -> None:
        self._pool.close()

    async def authenticate(self, card: str, pin: str) -> Membership | None:
        """See ``base.Authenticator``."""
        if not acceptable_credentials(card, pin) or not (codec.valid_value(card) and codec.valid_value(pin)):
            return None
        try:
            card.encode(self._options.encoding)
            pin.encode(self._options.encoding)
        except UnicodeEncodeError:
            # A character the SIP server's encoding cannot carry is no card or PIN of its: the
            # same answer as a wrong PIN (and no exception whose text would quote the PIN).
            return None
        try:
            async with asyncio.timeout(self._options.timeout):
                answer = await self._pool.run(lambda conn: self._ask(conn, card, pin))
        except TimeoutError:
            log.warning("the SIP2 service did not answer within %.1fs", self._options.timeout)
            raise DirectoryUnavailable("the SIP2 service did not answer in time") from None
        return judge(answer, card, self._options, self._secret, datetime.now(UTC))

    async def _ask(self, conn: _Connection, card: str, pin: str) -> codec.Answer:
        answer = await conn.exchange(self._kind, self._fixed(), self._request_fields(card, pin), self._wanted)
        patron = answer.fields.get("AA")
        if patron is not None and patron.strip() != card:
            # SECURITY: an answer about another card answers another request (a connection out
            # of step): never sign anyone in on it; the connection is dropped.
            raise codec.FormatError("the answer names another patron")
        return answer

    def _fixed(self) -> str:
        now = codec.sip_datetime(datetime.now())
        if self._kind is _PATRON_STATUS:
            return "000" + now
        return "000" + now + " " * 10  # language unknown, transaction date, no item lists

    def _request_fields(self, card: str, pin: str) -> list[tuple[str, str]]:
        return [("AO", self._options.institution), ("AA", card),
                ("AC", self._options.terminal_password or ""), ("AD", pin)]

    async def probe(self) -> list[str]:
        """For ``check-config --probe``: every server connected to (TLS, SIP login) and asked
        for its status (``99``). Human-readable problems naming the server; empty when all is well."""
        problems: list[str] = []
        o = self._options
        for index, name in enumerate(o.server_names()):
            try:
                async with asyncio.timeout(o.connect_timeout + 3 * o.response_timeout):
                    conn = await self._pool.connect(index)
                    try:
                        answer = await conn.exchange(_SC_STATUS, "0" + "080" + "2.00", [], frozenset())
                    finally:
                        conn.close()
            except DirectoryUnavailable as exc:
                problems.append(f"{name}: {exc}")
                continue
            except _TRANSPORT_ERRORS as exc:
                problems.append(f"{name}: cannot use the server: {_describe(exc)}")
                continue
            if answer.fixed[:1] != "Y":
                problems.append(f"{name}: the server says it is offline (ACS status online = N)")
        return problems


async def _nothing(conn: _Connection) -> None:
    return None
