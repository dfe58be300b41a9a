"""Patron source: Evergreen's RemoteAuth service (Evergreen 3.4+), and Sierra's PatronAPI.

RemoteAuth checks a card and PIN against an Evergreen *profile*: which organisation's patrons it
accepts, whether expired or inactive cards pass, which standing penalties block. It has two forms:

``form = "basic"``
    ``GET <server><path>`` with HTTP Basic ``card:PIN``. ``200`` with JSON ``{"id": <card>}``:
    signed in. ``403``: wrong PIN, unknown, blocked or expired card (one answer for all four, so
    the proxy cannot tell a blocked patron why). ``401``: the request carried no credentials, or
    the service did not accept the proxy as a client. With ``[...profiles]`` (one profile per
    member library, each restricted to its library's patrons) every profile is asked at once and
    the first in configured order that says ``200`` is the patron's home library.

``form = "patronapi"`` (Innovative's PatronAPI, emulated by Evergreen and spoken by Sierra)
    ``GET <server><path>/<card>/<PIN>/pintest``: ``RETCOD=0`` signed in; ``ERRNUM=4`` wrong PIN or
    unknown card; ``ERRNUM=1`` on Evergreen: the PIN was right but the profile refuses the card
    (blocked, expired, not this library's) -> ``CardRefused``; on Sierra: no such record -> None.
    Only after a good PIN, and only when ``home_field`` or ``expiry_field`` is set,
    ``GET <server><path>/<card>/dump``: of its ``LABEL[code]=value`` lines only the configured
    codes are read; every other line (names, addresses, e-mails...) is skipped unread.

HTTP: aiohttp's client with connect and total timeouts, no redirects followed (a redirect would
take card and PIN elsewhere), no cookie jar, no proxy from the environment, answers bounded in
size. HTTPS with certificate checks; plain HTTP only to loopback or with ``allow_plaintext``.
Servers fail over in configured order. Card and PIN are percent-encoded as whole path segments.

Nothing here logs or keeps a card, a PIN, a URL holding them, or a field value: log lines name
servers, HTTP statuses and error numbers only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

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

FORMS = ("basic", "patronapi")
FLAVOURS = ("evergreen", "sierra")
_FIELD_CODE = re.compile(r"^p[a-z0-9]{1,4}\Z")
# SECURITY: PatronAPI codes of personal data (name, addresses, phones, e-mail, barcode, birth
# date, notes). Naming one is refused instead of quietly reading it.
PERSONAL_CODES = frozenset({"pn", "pa", "ph", "pt", "pz", "pb", "pu", "p51", "px", "pm"})
_DUMP_LINE = re.compile(r"\[(p[a-z0-9]{1,4})\]=(.*)$")
_PAIR = re.compile(r"^(RETCOD|ERRNUM)=(.*)$")
_TAG = re.compile(r"<[^>]*>")
# SECURITY: the only bytes left as they are in a path segment; everything else, "." and "/"
# included, is percent-encoded, so "..", "/" or "?" in a card or PIN stay inside their segment.
_SEGMENT_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class _ServerTrouble(Exception):
    """This server failed (transport, timeout, 5xx, oversize): try the next one."""


# ----------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class RemoteAuthOptions:
    """The ``[patrons.remoteauth]`` table, checked. See ``config/remoteauth-example.toml``."""

    servers: tuple[str, ...]  # origins: scheme://host[:port]
    form: str = "basic"
    path: str = ""
    profiles: Mapping[str, str] = field(default_factory=dict)  # library id -> path (basic form)
    flavour: str = "evergreen"
    ca_file: Path | None = None
    verify: bool = True
    allow_plaintext: bool = False
    client_cert: Path | None = None
    client_key: Path | None = None
    client_user: str = ""
    # SECURITY: kept out of repr() so that a logged or printed configuration shows no secret.
    client_password: str | None = field(default=None, repr=False)
    groups: frozenset[str] = frozenset()
    home_field: str = ""
    libraries: Mapping[str, str] = field(default_factory=dict)
    expiry_field: str = ""
    connect_timeout: float = 3.0
    response_timeout: float = 5.0
    timeout: float = 10.0
    max_response: int = 64 * 1024
    pool_size: int = 8
    server_retry: float = 30.0

    def dump_codes(self) -> frozenset[str]:
        return frozenset(code for code in (self.home_field, self.expiry_field) if code)


def parse_options(reader: Reader) -> RemoteAuthOptions:
    """Check ``[patrons.remoteauth]`` under the ``[patrons]`` reader (see ``ldap.parse_options``)."""
    r = reader.sub("remoteauth")
    form = r.choice("form", "basic", FORMS)
    allow_plaintext = r.bool("allow_plaintext", False)
    servers = _parse_servers(r, allow_plaintext)
    path = r.str("path")
    profiles = _parse_profiles(r)
    if form == "basic" and bool(path) == bool(profiles):
        r.bad("path", "give either path (one consortium profile) or [patrons.remoteauth.profiles] "
                      "(one profile per member library)")
    if form == "patronapi":
        if not path:
            r.bad("path", 'is required with form = "patronapi" (e.g. "/PATRONAPI" for Sierra)')
        if profiles:
            r.bad("profiles", 'are used only with form = "basic"')
    if path:
        _check_path(r, "path", path)
    flavour = r.choice("flavour", "evergreen", FLAVOURS)
    ca_file = _existing(r, "ca_file")
    verify = r.bool("verify", True)
    client_cert = _existing(r, "client_cert")
    client_key = _existing(r, "client_key")
    if bool(client_cert) != bool(client_key):
        r.bad("client_key", "client_cert and client_key must be given together")
    client_user = r.str("client_user")
    client_password = r.secret("client_password")
    if client_user and form == "basic":
        r.bad("client_user", 'cannot be sent with form = "basic" (the Authorization header carries the '
                             "patron's card and PIN); use client_cert")
    if client_user and client_password is None and not r.has("client_password"):
        r.bad("client_password", 'is required with client_user ("env:NAME" or "file:PATH")')
    if client_password is not None and not client_user:
        r.bad("client_password", "is given without client_user")
    if ":" in client_user:
        r.bad("client_user", "must not contain ':'")
    groups = frozenset(r.str_list("groups"))
    check_groups(r, "groups", groups)
    home_field = r.str("home_field")
    expiry_field = r.str("expiry_field")
    for key, code in (("home_field", home_field), ("expiry_field", expiry_field)):
        _check_code(r, key, code, form)
    libraries = parse_libraries(r, "home_field", home_field)
    connect_timeout = r.duration("connect_timeout", "3s")
    response_timeout = r.duration("response_timeout", "5s")
    timeout = r.duration("timeout", "10s")
    if connect_timeout > response_timeout or response_timeout > timeout:
        r.bad("timeout", "must be at least as long as response_timeout, and that as connect_timeout")
    max_response = r.size("max_response", "64KiB")
    pool_size = r.int("pool_size", 8, minimum=1, maximum=64)
    server_retry = r.duration("server_retry", "30s")
    r.unknown_keys(("profiles", "libraries"))
    return RemoteAuthOptions(
        servers=servers, form=form, path=path.rstrip("/"), profiles=MappingProxyType(profiles), flavour=flavour,
        ca_file=ca_file, verify=verify, allow_plaintext=allow_plaintext, client_cert=client_cert,
        client_key=client_key, client_user=client_user, client_password=client_password, groups=groups,
        home_field=home_field, libraries=MappingProxyType(libraries), expiry_field=expiry_field,
        connect_timeout=connect_timeout, response_timeout=response_timeout, timeout=timeout,
        max_response=max_response, pool_size=pool_size, server_retry=server_retry,
    )


def _parse_servers(r: Reader, allow_plaintext: bool) -> tuple[str, ...]:
    raw = r.str_list("servers")
    if not raw:
        r.bad("servers", 'is required: a list such as ["https://evergreen.example.org"]')
    servers: list[str] = []
    for url in raw:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            parts = None
        if (parts is None or parts.scheme not in ("https", "http") or not parts.hostname or parts.username
                or parts.password or parts.path not in ("", "/") or parts.query or parts.fragment):
            r.bad("servers", f"{url!r} must be https://host[:port] (the path goes in `path`)")
            continue
        # SECURITY: card and PIN travel in the request; in clear text only over loopback, or when
        # an administrator explicitly says the network in between is private.
        if parts.scheme == "http" and not allow_plaintext and not is_loopback(parts.hostname):
            r.bad("servers", f"{url!r} would send PINs unencrypted: use https://, or allow_plaintext = true "
                             "on a private network")
        servers.append(url.rstrip("/"))
    return tuple(servers)


def _parse_profiles(r: Reader) -> dict[str, str]:
    profiles: dict[str, str] = {}
    for library_id, path in r.str_map("profiles").items():
        check_groups(r, "profiles", (library_id,))
        _check_path(r, "profiles", path)
        profiles[library_id] = path.rstrip("/")
    return profiles


def _check_path(r: Reader, key: str, path: str) -> None:
    if not path.startswith("/") or any(c in path for c in "?#%\\ ") or "/../" in f"{path}/":
        r.bad(key, f"{path!r} must be an absolute path such as /api/basicauth")


def _check_code(r: Reader, key: str, code: str, form: str) -> None:
    if not code:
        return
    if form != "patronapi":
        r.bad(key, 'is read from the PatronAPI dump: only with form = "patronapi"')
    elif not _FIELD_CODE.match(code):
        r.bad(key, f"{code!r} is not a PatronAPI field code (such as p53)")
    elif code in PERSONAL_CODES:
        r.bad(key, f"{code!r} holds personal data; the proxy must not read it (privacy policy)")


def _existing(r: Reader, key: str) -> Path | None:
    path = r.path(key)
    if path is not None and not path.is_file():
        r.bad(key, f"file {path} does not exist")
    return path


# ----------------------------------------------------------------------------------------------
# Pure parts


def path_segment(text: str) -> str:
    """``text`` as one percent-encoded path segment (UTF-8): only letters, digits, '_' and '-'
    stay as they are."""
    return "".join(c if c in _SEGMENT_SAFE else quote(c, safe="").replace(".", "%2E") for c in text)


def pintest_result(body: str) -> tuple[str | None, str | None]:
    """(RETCOD, ERRNUM) of a PatronAPI answer; None for one that is absent. ERRMSG is not read."""
    found: dict[str, str] = {}
    for line in _TAG.sub("\n", body).splitlines():
        match = _PAIR.match(line.strip())
        if match and match.group(1) not in found:
            found[match.group(1)] = match.group(2).strip()
    return found.get("RETCOD"), found.get("ERRNUM")


def dump_fields(body: str, codes: frozenset[str]) -> dict[str, str]:
    """The values of the ``codes`` lines of a PatronAPI dump (first of each); every other line
    is matched on its code alone and dropped."""
    found: dict[str, str] = {}
    for line in _TAG.sub("\n", body).splitlines():
        match = _DUMP_LINE.search(line.strip())
        if match is None or match.group(1) not in codes or match.group(1) in found:
            continue
        found[match.group(1)] = match.group(2).strip()
    return found


def parse_expiry(raw: str) -> datetime | None:
    """PatronAPI's ``mm-dd-yy`` (or ``mm-dd-yyyy``), valid through that day; None when blank
    (Sierra writes ``  -  -  `` for "no expiry date"). Raises ValueError when unreadable.

    Two-digit years are 2000-2099: libraries set far-future dates such as 12-31-99 for cards
    that should not expire, while a card whose date lies in the 1900s is long expired and read
    as such only by a template that prints four digits."""
    text = raw.strip()
    if not text.strip("- "):
        return None
    month, day, year = (int(part) for part in text.split("-"))
    if year < 100:
        year += 2000
    return day_expiry(date(year, month, day))


# ----------------------------------------------------------------------------------------------
# The authenticator


class RemoteAuthAuthenticator:
    """Patrons from Evergreen RemoteAuth or a PatronAPI. See the module docstring."""

    name = "remoteauth"

    def __init__(self, options: RemoteAuthOptions, secret: bytes) -> None:
        if not options.servers:
            raise ConfigError(["[patrons.remoteauth] servers: at least one server is required"])
        for url in options.servers:
            host = urlsplit(url).hostname or ""
            if url.startswith("http:") and not options.allow_plaintext and not is_loopback(host):
                raise ConfigError([f"[patrons.remoteauth] servers: {url} would receive PINs unencrypted"])
        self._options = options
        self._secret = secret
        self._failover = Failover(options.servers, options.server_retry, "RemoteAuth")
        cert = (options.client_cert, options.client_key) if options.client_cert and options.client_key else None
        self._ssl = client_tls("patrons.remoteauth", options.ca_file, options.verify, cert)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            o = self._options
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=o.pool_size),
                # SECURITY: no cookie jar (a session cookie would tie sign-ins together) and no
                # proxy settings from the environment (card and PIN go to the configured server only).
                cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
                # Each request gets response_timeout, so a hung server leaves time for the next
                # one within the sign-in's whole `timeout`.
                timeout=aiohttp.ClientTimeout(total=o.response_timeout, sock_connect=o.connect_timeout),
                auto_decompress=False, headers={"Accept": "application/json, text/html;q=0.9"},
            )
        return self._session

    async def start(self) -> None:
        self._client()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def authenticate(self, card: str, pin: str) -> Membership | None:
        """See ``base.Authenticator``."""
        if not acceptable_credentials(card, pin):
            return None
        try:
            async with asyncio.timeout(self._options.timeout):
                if self._options.form == "basic":
                    return await self._basic(card, pin)
                return await self._patronapi(card, pin)
        except TimeoutError:
            log.warning("RemoteAuth did not answer within %.1fs", self._options.timeout)
            raise DirectoryUnavailable("RemoteAuth did not answer in time") from None

    # -- Basic form ------------------------------------------------------------------------------

    async def _basic(self, card: str, pin: str) -> Membership | None:
        if ":" in card:
            # SECURITY: RemoteAuth splits card:PIN at the first colon; a card holding one would
            # be checked as another card with another PIN.
            return None
        o = self._options
        auth = aiohttp.encode_basic_auth(card, pin, encoding="utf-8")
        if not o.profiles:
            return self._membership(card, None) if await self._basic_one(o.path, auth, card) else None
        libraries = list(o.profiles)
        answers = await asyncio.gather(*(self._basic_one(o.profiles[lib], auth, card) for lib in libraries),
                                       return_exceptions=True)
        for library, answer in zip(libraries, answers, strict=True):
            if answer is True:
                return self._membership(card, library)
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        return None

    async def _basic_one(self, path: str, auth: str, card: str) -> bool:
        """True for 200 with the card's id, False for 403; raises DirectoryUnavailable otherwise."""
        status, body = await self._get(path, (), auth)
        if status == 403:
            return False
        if status == 200:
            try:
                answer = json.loads(body)
            except ValueError:
                answer = None
            if isinstance(answer, dict) and str(answer.get("id", "")) == card:
                return True
            log.error("RemoteAuth answered 200 without the card's id; refusing the sign-in")
            raise DirectoryUnavailable("RemoteAuth answered 200 without the patron's id")
        raise self._unexpected(status)

    # -- PatronAPI form ------------------------------------------------------------------------

    async def _patronapi(self, card: str, pin: str) -> Membership | None:
        o = self._options
        auth = self._client_auth()
        status, body = await self._get(o.path, (card, pin, "pintest"), auth)
        if status != 200:
            raise self._unexpected(status)
        retcod, errnum = pintest_result(body.decode("utf-8", "replace"))
        if errnum == "4":
            return None
        if errnum == "1":
            # Evergreen answers 1 only after the PIN was right (a wrong PIN or an unknown card is 4);
            # Sierra answers 1 for a card it does not know.
            if o.flavour == "evergreen":
                raise CardRefused("blocked")
            return None
        if errnum is not None or retcod != "0":
            log.error("the PatronAPI answered an unexpected pintest result (ERRNUM %s)", errnum or "absent")
            raise DirectoryUnavailable("the PatronAPI gave an unexpected answer")
        fields: dict[str, str] = {}
        if o.dump_codes():
            status, body = await self._get(o.path, (card, "dump"), auth)
            if status != 200:
                raise self._unexpected(status)
            text = body.decode("utf-8", "replace")
            if pintest_result(text)[1] is not None:
                log.error("the PatronAPI refused the dump of a signed-in patron (is the dump allowed, "
                          "OILSRemoteAuthPatronAPIAllowDump, for this client?)")
                raise DirectoryUnavailable("the PatronAPI refused the dump")
            fields = dump_fields(text, o.dump_codes())
        if o.expiry_field and o.expiry_field in fields:
            try:
                moment = parse_expiry(fields[o.expiry_field])
            except ValueError:
                log.warning("a PatronAPI dump has an unreadable %s value; refusing the card", o.expiry_field)
                raise CardRefused("blocked") from None
            if moment is not None and datetime.now(UTC) >= moment:
                raise CardRefused("expired")
        home = library_of(fields.get(o.home_field), o.libraries) if o.home_field else None
        return self._membership(card, home)

    # -- Shared ----------------------------------------------------------------------------------

    def _client_auth(self) -> str | None:
        """The Authorization value of the proxy's own credentials (PatronAPI form), if any."""
        o = self._options
        return aiohttp.encode_basic_auth(o.client_user, o.client_password or "") if o.client_user else None

    def _membership(self, card: str, home: str | None) -> Membership:
        groups = set(self._options.groups)
        if home is not None:
            groups.add(home)
        return Membership(groups=frozenset(groups), home_library=home,
                          key=pseudonym(self._secret, "patron", "remoteauth", card), source="remoteauth")

    def _unexpected(self, status: int) -> DirectoryUnavailable:
        if status == 401:
            log.error("RemoteAuth answered 401: it did not accept the proxy as a client (the profile, "
                      "client account or client credentials)")
        else:
            log.error("RemoteAuth answered HTTP %d", status)
        return DirectoryUnavailable(f"RemoteAuth answered HTTP {status}")

    async def _get(self, path: str, segments: tuple[str, ...], auth: str | None) -> tuple[int, bytes]:
        """(status, body) from the first server that answers; 5xx, transport failures and
        oversize answers fail over. Raises DirectoryUnavailable when no server answers."""
        suffix = "".join("/" + path_segment(part) for part in segments)
        for index in self._failover.preference():
            url = URL(self._failover.names[index] + path + suffix, encoded=True)
            try:
                status, body = await self._fetch(url, auth)
            except _ServerTrouble as exc:
                self._failover.mark_down(index, str(exc))
                continue
            self._failover.mark_up(index)
            return status, body
        raise DirectoryUnavailable("no RemoteAuth server answered")

    async def _fetch(self, url: URL, auth: str | None) -> tuple[int, bytes]:
        limit = self._options.max_response
        try:
            # SECURITY: redirects are not followed: one would carry card and PIN to another URL.
            headers = {"Authorization": auth} if auth else None
            async with self._client().get(url, headers=headers, allow_redirects=False) as response:
                if response.status >= 500:
                    raise _ServerTrouble(f"HTTP {response.status}")
                if response.content_length is not None and response.content_length > limit:
                    raise _ServerTrouble("answer too large")
                body = bytearray()
                async for chunk in response.content.iter_chunked(16 * 1024):
                    body += chunk
                    # SECURITY: a bounded read; a broken or hostile server cannot fill memory.
                    if len(body) > limit:
                        raise _ServerTrouble("answer too large")
                return response.status, bytes(body)
        except (aiohttp.ClientError, OSError) as exc:
            raise _ServerTrouble(_describe(exc)) from None
        except TimeoutError:
            raise _ServerTrouble("no answer in time") from None

    async def probe(self) -> list[str]:
        """For ``check-config --probe``: each server asked about a card that cannot exist, with a
        PIN that cannot be right. The right answer is "not this card" (403, or ERRNUM=4 / 1);
        anything else names what is wrong. Empty when all is well."""
        o = self._options
        problems: list[str] = []
        paths = list(o.profiles.values()) or [o.path]
        for index, server in enumerate(o.servers):
            for path in paths:
                problem = await self._probe_one(index, server, path)
                if problem:
                    problems.append(f"{server}{path}: {problem}")
        return problems

    async def _probe_one(self, index: int, server: str, path: str) -> str | None:
        o = self._options
        card, pin = "0000000000000-libproxy-probe", "not-a-pin"
        if o.form == "basic":
            auth: str | None = aiohttp.encode_basic_auth(card, pin)
            url = URL(server + path, encoded=True)
        else:
            auth = self._client_auth()
            url = URL(server + path + f"/{path_segment(card)}/{path_segment(pin)}/pintest", encoded=True)
        try:
            status, body = await self._fetch(url, auth)
        except _ServerTrouble as exc:
            return f"cannot use the server: {exc}"
        if o.form == "basic":
            return None if status == 403 else f"answered HTTP {status} (expected 403 for an unknown card)"
        if status != 200:
            return f"answered HTTP {status}"
        _, errnum = pintest_result(body.decode("utf-8", "replace"))
        if errnum == "4" or (errnum == "1" and o.flavour == "sierra"):
            return None
        if errnum == "1":
            return ("answered ERRNUM=1 for a card that cannot exist: RemoteAuth does not accept the proxy "
                    "(profile, client account), so every patron would be refused")
        return f"gave no PatronAPI answer (ERRNUM {errnum or 'absent'})"


def _describe(exc: BaseException) -> str:
    """A failure for an administrator's eyes. aiohttp's messages can quote the URL (card and PIN
    in the PatronAPI form), so only the type and a TLS reason are given."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = exc.certificate_error
        detail = reason.verify_message if isinstance(reason, ssl.SSLCertVerificationError) else type(reason).__name__
        return f"certificate not trusted: {detail}"
    return type(exc).__name__
