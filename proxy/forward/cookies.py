"""The vendor cookie jar kept on the server, one per patron session and vendor.

Vendor cookies never reach the browser: ``Set-Cookie`` from a vendor is stored here and sent back
on later requests to the matching vendor hosts, following the matching rules browsers use
(RFC 6265 section 5: domain-match, path-match, Secure, expiry). Records are plain dicts so a
session can be stored anywhere (memory, Redis) as JSON.

Bounded: at most ``MAX_COOKIES`` per jar and ``MAX_COOKIE_BYTES`` per cookie, so a vendor cannot
grow a session without limit.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any

MAX_COOKIES = 150
MAX_COOKIE_BYTES = 4096

Record = dict[str, Any]


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


def parse_set_cookie(header: str, host: str, request_path: str, now: float) -> Record | None:
    """One Set-Cookie header as a jar record, or None when it is malformed or not allowed for
    ``host`` (a cookie for another domain, or for a bare top-level domain)."""
    if len(header) > MAX_COOKIE_BYTES:
        return None
    parts = header.split(";")
    name, sep, value = parts[0].partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or any(c in name for c in " \t\"(),/:;<=>?@[\\]{}"):
        return None
    record: Record = {
        "name": name, "value": value, "domain": host, "host_only": True,
        "path": _default_path(request_path.split("?", 1)[0]), "secure": False, "expires": None,
    }
    max_age: float | None = None
    for attr in parts[1:]:
        key, _, val = attr.partition("=")
        key, val = key.strip().lower(), val.strip()
        if key == "domain" and val:
            domain = val.lstrip(".").lower().rstrip(".")
            # SECURITY: a vendor may only set cookies for its own host or a parent domain of it,
            # and never for a single-label domain (a whole TLD).
            if "." not in domain or not domain_matches(host, domain):
                return None
            record["domain"] = domain
            record["host_only"] = False
        elif key == "path" and val.startswith("/"):
            record["path"] = val
        elif key == "secure":
            record["secure"] = True
        elif key == "max-age":
            try:
                max_age = float(int(val))
            except ValueError:
                continue
        elif key == "expires" and max_age is None:
            try:
                record["expires"] = parsedate_to_datetime(val).timestamp()
            except (TypeError, ValueError, IndexError, OverflowError):
                continue
    if max_age is not None:
        record["expires"] = now + max_age
    return record


def store(jar: list[Record], record: Record, now: float) -> None:
    """Add, replace or (when expired) remove one cookie in ``jar``, in place."""
    key = (record["name"], record["domain"], record["path"])
    jar[:] = [c for c in jar if (c["name"], c["domain"], c["path"]) != key]
    expires = record["expires"]
    if expires is not None and expires <= now:
        return
    jar.append(record)
    if len(jar) > MAX_COOKIES:
        del jar[0 : len(jar) - MAX_COOKIES]  # the oldest go first


def header_for(jar: list[Record], host: str, path: str, secure: bool, now: float) -> str | None:
    """The Cookie header value for a request to ``host``/``path``, or None if no cookie applies."""
    chosen = []
    for c in jar:
        if c["expires"] is not None and c["expires"] <= now:
            continue
        if c["host_only"]:
            if host != c["domain"]:
                continue
        elif not domain_matches(host, c["domain"]):
            continue
        if c["secure"] and not secure:
            continue
        if not path_matches(path, c["path"]):
            continue
        chosen.append(c)
    if not chosen:
        return None
    chosen.sort(key=lambda c: -len(c["path"]))
    return "; ".join(f"{c['name']}={c['value']}" for c in chosen)
