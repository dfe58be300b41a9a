"""Point every absolute URL of a corpus file at the three-host test vendor, deterministically.

    python tests/corpus/vendorize.py OUT_DIR [--port PORT] [--scheme http]

The corpus (``pages/``, see README.md) holds real files as their publishers ship them. A vendor
page names its own hosts, so each host name found in an absolute URL of a file (in any of the
forms a page writes: ``https://``, protocol-relative ``//``, JSON-escaped ``https:\\/\\/``,
``\\u002f``-escaped, percent-encoded once or twice) becomes one of ``www``, ``cdn`` or ``api``
``.vendor.test``, chosen from a hash of the name, so the same name always maps the same way.
Every mention of such a name in the file changes with it (in URLs and as a bare name, which
scripts assemble into URLs), keeping its case. A URL's scheme becomes the vendor's and, unless
the vendor is on its scheme's default port, the port follows the name, written as the form
around it writes a ``:`` (``%3A``, ``%253A``). Nothing else in the file changes, so what the
rewriter sees around each mention is what the publisher wrote.

``vendor_files(port, scheme)`` gives ``{name: bytes}`` for tests and benchmarks.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

PAGES = Path(__file__).resolve().parent / "pages"
VENDOR_HOSTS = ("www.vendor.test", "cdn.vendor.test", "api.vendor.test")
DEFAULT_PORTS = {"http": 80, "https": 443}

# The scheme-and-separator forms a page writes before a host, and how each writes a ":".
_PREFIX = re.compile(
    rb"(?P<scheme>https?|wss?)(?P<colon>:|%3a|%253a|\\u003a|\\x3a)"
    rb"(?P<sep>//|%2f%2f|%252f%252f|\\/\\/|\\u002f\\u002f|\\x2f\\x2f)"
    rb"(?P<host>[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+)",
    re.IGNORECASE,
)
_PROTOCOL_RELATIVE = re.compile(
    rb"""(?<=["'(=\s])//(?P<host>[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+)""",
    re.IGNORECASE,
)
_PORT_COLON = {b":": b":", b"%3a": b"%3A", b"%253a": b"%253A", b"\\u003a": b":", b"\\x3a": b":"}


def _is_name(host: bytes) -> bool:
    """A DNS name with a top-level label of letters (not an IP address, not "a.b" in code)."""
    labels = host.split(b".")
    return len(labels) >= 2 and labels[-1].isalpha() and len(labels[-1]) >= 2 and host.lower() != b"localhost"


def hosts_in(data: bytes) -> list[bytes]:
    """The host names (lower-case, sorted) that absolute URLs in ``data`` point at."""
    found = {m.group("host").lower() for m in _PREFIX.finditer(data)}
    found |= {m.group("host").lower() for m in _PROTOCOL_RELATIVE.finditer(data)}
    return sorted(h for h in found if _is_name(h))


def vendor_host(host: bytes) -> bytes:
    """The vendor host a publisher's host becomes: the same one every time."""
    return VENDOR_HOSTS[hashlib.sha256(host).digest()[0] % len(VENDOR_HOSTS)].encode()


def vendorize(data: bytes, port: int | None, scheme: str = "http") -> bytes:
    """``data`` with every host of its absolute URLs replaced by a vendor host (see above)."""
    hosts = hosts_in(data)
    if not hosts:
        return data
    with_port = port is not None and port != DEFAULT_PORTS[scheme]
    names = b"|".join(re.escape(h) for h in sorted(hosts, key=len, reverse=True))
    # A whole host run: no host character before it, none (nor ".x") after it. An optional
    # scheme prefix before it, and an optional plain port after it, are replaced with it.
    mention = re.compile(
        rb"(?P<prefix>(?P<scheme>https?|wss?)(?P<colon>:|%3a|%253a|\\u003a|\\x3a)"
        rb"(?P<sep>//|%2f%2f|%252f%252f|\\/\\/|\\u002f\\u002f|\\x2f\\x2f))?"
        rb"(?<![a-z0-9_.-])(?P<host>" + names + rb")(?![a-z0-9_-]|\.[a-z0-9])(?P<port>:[0-9]{1,5}(?![0-9]))?",
        re.IGNORECASE,
    )

    def replace(m: re.Match[bytes]) -> bytes:
        host = m.group("host")
        new = vendor_host(host.lower())
        if host.isupper():
            new = new.upper()
        out = b""
        colon = b":"
        if m.group("prefix"):
            old_scheme = m.group("scheme")
            new_scheme = scheme.encode() if old_scheme.lower().startswith(b"http") else (
                b"wss" if scheme == "https" else b"ws")
            if old_scheme.isupper():
                new_scheme = new_scheme.upper()
            out = new_scheme + m.group("colon") + m.group("sep")
            colon = _PORT_COLON[m.group("colon").lower()]
            if m.group("colon").lower() in (b"%3a", b"%253a") and m.group("colon") == m.group("colon").lower():
                colon = colon.lower()  # the page's own case for its escapes
        out += new
        if with_port:
            out += colon + str(port).encode()
        elif m.group("port"):
            pass  # the publisher's explicit port is dropped: the vendor is on its default port
        return out

    return mention.sub(replace, data)


def corpus_names() -> list[str]:
    return sorted(p.name for p in PAGES.iterdir() if p.is_file())


def vendor_files(port: int | None, scheme: str = "http") -> dict[str, bytes]:
    """Every corpus file, pointed at the vendor on ``port`` (None or the default: no port)."""
    return {name: vendorize((PAGES / name).read_bytes(), port, scheme) for name in corpus_names()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--scheme", default="http", choices=sorted(DEFAULT_PORTS))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in vendor_files(args.port, args.scheme).items():
        (args.out / name).write_bytes(data)


if __name__ == "__main__":
    main()
