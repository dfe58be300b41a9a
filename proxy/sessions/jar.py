"""The vendor cookie jar kept on the server, one per patron session and vendor.

Vendor cookies never reach the browser: ``Set-Cookie`` from a vendor is parsed into a ``Cookie``
here, kept in the session's ``Jar`` for that vendor, and sent back on later requests to the
matching vendor hosts following the rules browsers use (RFC 6265 section 5: domain-match,
path-match, Secure, expiry).

A jar is changed only through the session store (``SessionStore.set_cookies``), one cookie at a
time, so a store shared by several proxy instances (Redis) can persist each change as its own
field: two responses of one vendor arriving at once for one patron never lose a cookie.

Bounded: at most ``MAX_COOKIES`` per jar and ``MAX_COOKIE_BYTES`` per cookie, so a vendor cannot
grow a session without limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from typing import Any

MAX_COOKIES = 150
MAX_COOKIE_BYTES = 4096

CookieKey = tuple[str, str, str]  # (name, domain, path): what makes two cookies the same one


@dataclass(frozen=True, slots=True)
class Cookie:
    name: str
    value: str
    domain: str
    host_only: bool
    path: str
    secure: bool
    expires: float | None  # seconds since the epoch; None for a cookie of the session

    @property
    def key(self) -> CookieKey:
        return (self.name, self.domain, self.path)

    def expired(self, now: float) -> bool:
        return self.expires is not None and self.expires <= now

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Cookie | None:
        """The cookie stored as ``text``, or None when it is not one (a damaged record)."""
        try:
            data: dict[str, Any] = json.loads(text)
            expires = data["expires"]
            return cls(
                name=str(data["name"]), value=str(data["value"]), domain=str(data["domain"]),
                host_only=bool(data["host_only"]), path=str(data["path"]), secure=bool(data["secure"]),
                expires=None if expires is None else float(expires),
            )
        except (ValueError, KeyError, TypeError):
            return None


class Jar:
    """One vendor's cookies for one session, oldest first."""

    __slots__ = ("_cookies",)

    def __init__(self, cookies: Iterable[Cookie] = ()) -> None:
        self._cookies: dict[CookieKey, Cookie] = {}
        for cookie in cookies:
            self._cookies[cookie.key] = cookie
        self._trim()

    def __len__(self) -> int:
        return len(self._cookies)

    def __iter__(self) -> Iterator[Cookie]:
        return iter(self._cookies.values())

    def _trim(self) -> list[CookieKey]:
        dropped: list[CookieKey] = []
        while len(self._cookies) > MAX_COOKIES:
            oldest = next(iter(self._cookies))
            del self._cookies[oldest]
            dropped.append(oldest)
        return dropped

    def apply(self, cookie: Cookie, now: float) -> list[CookieKey]:
        """Add, replace or (when expired) remove one cookie; returns the keys that left the jar
        to make room, which a store must forget too."""
        self._cookies.pop(cookie.key, None)
        if cookie.expired(now):
            return []
        self._cookies[cookie.key] = cookie
        return self._trim()

    def header_for(self, host: str, path: str, secure: bool, now: float) -> str | None:
        """The Cookie header value for a request to ``host``/``path``, or None if none applies."""
        chosen = []
        for c in self._cookies.values():
            if c.expires is not None and c.expires <= now:
                continue
            if c.host_only:
                if host != c.domain:
                    continue
            elif not domain_matches(host, c.domain):
                continue
            if c.secure and not secure:
                continue
            if not path_matches(path, c.path):
                continue
            chosen.append(c)
        if not chosen:
            return None
        chosen.sort(key=lambda c: -len(c.path))
        return "; ".join(f"{c.name}={c.value}" for c in chosen)


def _default_path(request_path: str) -> str:
    # RFC 6265 5.1.4: the "directory" of the request path.
    if not request_path.startswith("/") or request_path.count("/") == 1:
        return "/"
    return request_path[: request_path.rfind("/")]


def domain_matches(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


def path_matches(request_path: str, cookie_path: str) -> bool:
    if request_path == cookie_path:
        return True
    if request_path.startswith(cookie_path):
        return cookie_path.endswith("/") or request_path[len(cookie_path)] == "/"
    return False


def parse_set_cookie(header: str, host: str, request_path: str, now: float) -> Cookie | None:
    """One Set-Cookie header as a ``Cookie``, or None when it is malformed or not allowed for
    ``host`` (a cookie for another domain, or for a bare top-level domain)."""
    if len(header) > MAX_COOKIE_BYTES:
        return None
    parts = header.split(";")
    name, sep, value = parts[0].partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or any(c in name for c in " \t\"(),/:;<=>?@[\\]{}"):
        return None
    domain, host_only = host, True
    path = _default_path(request_path.split("?", 1)[0])
    secure = False
    expires: float | None = None
    max_age: float | None = None
    for attr in parts[1:]:
        key, _, val = attr.partition("=")
        key, val = key.strip().lower(), val.strip()
        if key == "domain" and val:
            wanted = val.lstrip(".").lower().rstrip(".")
            # SECURITY: a vendor may only set cookies for its own host or a parent domain of it,
            # and never for a single-label domain (a whole TLD).
            if "." not in wanted or not domain_matches(host, wanted):
                return None
            domain, host_only = wanted, False
        elif key == "path" and val.startswith("/"):
            path = val
        elif key == "secure":
            secure = True
        elif key == "max-age":
            try:
                # Clamped: a vendor's absurd Max-Age ("9" * 400) must not overflow a float.
                max_age = float(max(-1, min(int(val), 400 * 86400)))
            except ValueError:
                continue
        elif key == "expires" and max_age is None:
            try:
                expires = parsedate_to_datetime(val).timestamp()
            except (TypeError, ValueError, IndexError, OverflowError):
                continue
    if max_age is not None:
        expires = now + max_age
    return Cookie(name=name, value=value, domain=domain, host_only=host_only, path=path, secure=secure,
                  expires=expires)
