"""Pieces the network patron sources (LDAP, SIP2, RemoteAuth) share.

* option checks: group names, the table mapping a library system's home-library values to
  library ids, and the loopback test behind "no PINs in plain text off this machine";
* ``day_expiry``: when a card with an expiry *date* stops being valid;
* for the sources over asyncio (SIP2, RemoteAuth) only: ``Failover``, configured servers in
  order of preference, a failed one skipped for a while; ``client_tls``, the TLS context of a
  client that checks certificates unless told not to. The LDAP source has its own of both
  (its failover is shared between worker threads, its TLS is ldap3's).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from proxy.errors import ConfigError
from proxy.settings import Reader

log = logging.getLogger(__name__)

GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(host: str) -> bool:
    """True for a loopback address or name: the only place PINs may travel unencrypted by default."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() in _LOOPBACK_NAMES


def normalize(value: str) -> str:
    """The comparison form of a library system value: trimmed and case-folded."""
    return value.strip().casefold()


def check_groups(r: Reader, key: str, groups: Iterable[str]) -> None:
    for group in groups:
        if not GROUP.match(group):
            r.bad(key, f"group {group!r} must be letters, digits, '.', '_' or '-'")


def parse_libraries(r: Reader, home_key: str, home_value: str,
                    normal_form: Callable[[str], str] = normalize) -> dict[str, str]:
    """``[...libraries]``: library system value -> library id (also a group), keys in
    ``normal_form`` (the form the source compares values in).

    ``home_key`` names the option that says where the home library is read from; the table and
    that option must come together.
    """
    mapping: dict[str, str] = {}
    for value, library_id in r.str_map("libraries").items():
        if not GROUP.match(library_id):
            r.bad("libraries", f"{value}: library id {library_id!r} must be letters, digits, '.', '_' or '-'")
            continue
        mapping[normal_form(value)] = library_id
    if home_value and not mapping:
        r.bad("libraries", f"must map the {home_key} values to library ids, e.g. "
                           f'[{r.where}.libraries] WOLCOTT = "wolcott"')
    if mapping and not home_value:
        r.bad(home_key, f"is required when [{r.where}.libraries] is given")
    return mapping


def library_of(value: str | None, libraries: Mapping[str, str]) -> str | None:
    """The configured library id for a home-library value; None when unknown or absent.
    Only configured ids come out: a library system value never becomes a group by itself."""
    if value is None:
        return None
    return libraries.get(normalize(value))


def day_expiry(day: date) -> datetime:
    """The first instant (aware, UTC) after a card valid through ``day``: the proxy's local
    midnight after it, since an expiry date means the whole day where the library is."""
    return datetime.combine(day + timedelta(days=1), datetime.min.time()).astimezone().astimezone(UTC)


class Failover:
    """Servers in configured order; one that failed is tried last for ``retry`` seconds.

    Used from the event loop only (no lock needed). Servers marked down come last rather than
    never: when all have failed, one may be back.
    """

    def __init__(self, names: tuple[str, ...], retry: float, kind: str) -> None:
        self.names = names
        self._retry = retry
        self._kind = kind
        self._down_until = [0.0] * len(names)

    def preference(self) -> list[int]:
        now = time.monotonic()
        healthy = [i for i, until in enumerate(self._down_until) if until <= now]
        return healthy + [i for i in range(len(self.names)) if i not in healthy]

    def is_down(self, index: int) -> bool:
        return self._down_until[index] > time.monotonic()

    def mark_down(self, index: int, what: str) -> None:
        """``what`` is for an administrator: an exception type or a fixed phrase, never data."""
        self._down_until[index] = time.monotonic() + self._retry
        log.warning("%s server %s failed (%s); trying the others first for %.0fs",
                    self._kind, self.names[index], what, self._retry)

    def mark_up(self, index: int) -> None:
        self._down_until[index] = 0.0


def client_tls(where: str, ca_file: Path | None, verify: bool,
               cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """A client TLS context: the system's CAs or ``ca_file``, chain and host name checked unless
    ``verify`` is false, and a client certificate (``cert``: certificate, key) when given.
    Raises ConfigError naming ``where`` when a file cannot be used."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if cert is not None:
            context.load_cert_chain(*cert)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError([f"[{where}] ca_file/client_cert: cannot be used ({type(exc).__name__})"]) from None
    if not verify:
        log.warning("certificate checking is off for [%s]: anyone on the path can read PINs", where)
        # SECURITY: only on an explicit `verify = false`; checks are on by default.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
