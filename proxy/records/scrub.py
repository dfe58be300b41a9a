"""Pure text scrubbing: removes from a string what a log must never hold, even by accident.

``scrub(text)`` replaces, in this order:

=====================================  =======================================================
what                                   becomes
=====================================  =======================================================
quoted bytes (``b'...'``, ``b"..."``)   ``[bytes]`` (whole: a parser quoting a request line,
                                       a header, a cookie; closed or not)
request text aiohttp's parser quotes   ``... status line [bytes]``
JSON Web Tokens (``eyJ...``)           ``[jwt]``
``Bearer``/``Basic``/``Digest`` creds  ``Bearer [redacted]``
``Cookie:``/``Set-Cookie:`` values     ``Cookie: [redacted]`` (the rest of the line)
URLs with a scheme                     ``scheme://host[:port]`` (user info, path, query dropped)
percent-encoded URLs (``http%3A%2F``)  ``[url]``
e-mail addresses                       ``[email]``
secret-looking ``name=value`` pairs    ``name=[redacted]`` (card, pin, password, token,
                                       session, ticket, q/query/search/term, ...)
``pin 1234``, ``password was x``       ``pin [redacted]``
``host/path`` without a scheme         ``host`` (the path is dropped)
IPv6 and IPv4 addresses                ``[ip]``
request lines (``GET /x HTTP/1.1``)    ``GET [path] HTTP/1.1``
bare absolute paths (``/a/b?c``)       ``[path]`` (a quote inside a path, ``/a'b``, goes too)
query strings (``?a=b``)               ``?[query]``
form bodies (``a=b&c=d``)              ``[form]``
runs of 8+ digits, maybe grouped       ``[number]`` (library cards, payment cards)
=====================================  =======================================================

Contract: the output never contains any of the above; the operation is idempotent
(``scrub(scrub(x)) == scrub(x)``), never raises, and its output is at most ``MAX_LENGTH``
characters plus a " [truncated]" mark. It is deliberately greedy: losing a file path or a byte count from an operational
message is cheap, a card number in a log shipped to a third party is not.

What it cannot recognise (a bare 4-digit PIN, a search term that is just a word) must never be
passed to a logger in the first place: the request path logs vendor ids, statuses and exception
type names only. ``header_names`` exists so code that wants to say *which* headers it saw never
has to touch their values.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable

# Library barcodes are usually 14 digits (Codabar), payment cards 13-19. Shorter cards are only
# caught through a name (``card=...``); 8 keeps ports, statuses and years readable.
CARD_MIN_DIGITS = 8
# Scrubbing is linear, but a runaway message (a whole HTML page logged by mistake) should not
# cost a lot, nor flood the log.
MAX_INPUT = 65_536
MAX_LENGTH = 16_384

_SENSITIVE_KEYS = (
    r"card(?:_?(?:number|no|num|id))?|barcode|patron(?:_?id)?|pin|password|passwd|passphrase|pwd"
    r"|secret|(?:access_|refresh_|id_|csrf_?|api_?)?token|api_?key|session(?:_?id)?|sid|csrf"
    r"|ticket|auth|authorization|e-?mail|user(?:name)?|login|q|query|search|term|keywords?"
)

_Replacement = str | Callable[[re.Match[str]], str]

# What is left of a URL or path after its first character: up to a space, a quote or an angle
# bracket, then on through any quote that is followed by more of it ("/a'cancer-diagnosis" is one
# path, not "/a" and a word); a quote that ends the text or is followed by a space is kept.
_TAIL = r"[^\s\"'<>]*(?:[\"'][^\s\"'<>]+)*"
# A Python bytes literal as repr() writes it: aiohttp's parser errors quote the request so
# (``b'GET /a HTTP/1.2'``, ``b'X-A : v\\r\\n'``, ``b'libproxy=<session id>; ...'``). Everything in it
# is the client's, so it goes whole, escapes included; a literal cut short runs to the line's end,
# and so does one quoted inside another repr (``message='... b\\'GET ...\\'...'``).
# It starts a word (after a space, a bracket, "=", ":" or ","), or, right after a quote, only
# when it is closed too: "data=\"b'x'\"" goes, "group 'b' unknown" stays.
_BYTES = (r"(?:(?<![^\s(=:\[,{])b(?:\\+['\"][^\n]*|'(?:[^'\\\n]|\\.)*'?|\"(?:[^\"\\\n]|\\.)*\"?)"
          r"|(?<=['\"])b(?:'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"))+")
_QUOTED_STR = r"(?:'(?:[^'\\\n]|\\.)*'?|\"(?:[^\"\\\n]|\\.)*\"?)"


def _url(match: re.Match[str]) -> str:
    scheme, authority = match.group(1), match.group(2)
    # Credentials in the authority ("user:pass@host") go with the path.
    host = authority.rpartition("@")[2]
    return f"{scheme}://{host}"


# Addresses of the operator's own configuration (the proxy's listen address, its directory and
# session servers): configuration, not patron data, and what an administrator needs to read in
# "listening on ..." or "ldap://... unreachable". Set once at start by ``allow_addresses``.
_CONFIGURED: frozenset[str] = frozenset()


def allow_addresses(addresses: Iterable[str]) -> None:
    """Keep these IP literals (the configuration's own) in log lines; every other is removed."""
    global _CONFIGURED
    kept = set()
    for text in addresses:
        try:
            kept.add(str(ipaddress.ip_address(text.strip("[]"))))
        except ValueError:
            continue
    _CONFIGURED = frozenset(kept)


def _ipv6(match: re.Match[str]) -> str:
    candidate = match.group(0)
    try:
        address = ipaddress.IPv6Address(candidate.split("%", 1)[0])
    except ValueError:
        return candidate  # a clock time ("09:44:17") or similar: not an address
    return candidate if str(address) in _CONFIGURED else "[ip]"


def _ipv4(match: re.Match[str]) -> str:
    return match.group(0) if match.group(0) in _CONFIGURED else "[ip]"


def _digits(match: re.Match[str]) -> str:
    text = match.group(0)
    count = sum(ch.isdigit() for ch in text)
    return "[number]" if count >= CARD_MIN_DIGITS else text


_RULES: tuple[tuple[re.Pattern[str], _Replacement], ...] = (
    # Quoted request bytes first, whole: the rules below would each take only a part of them.
    (re.compile(_BYTES), "[bytes]"),
    # The pure-Python parser quotes a request line or header as a str: after its own words.
    (re.compile(rf"(?i)\b(status line|http header:|when reading:)(\s*){_QUOTED_STR}"), r"\1\2[bytes]"),
    # Tokens first: a JWT holds dots and digits the later rules would only half remove.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){1,4}"), "[jwt]"),
    (re.compile(r"(?i)\b(bearer|basic|digest)\s+[A-Za-z0-9._~+/=-]{4,}"), r"\1 [redacted]"),
    (re.compile(r"(?i)\b(set-cookie|cookie)(\s*[:=]\s*)[^\r\n]*"), r"\1\2[redacted]"),
    # URLs before addresses and e-mails: the host stays (a vendor name is useful in a log),
    # everything after it goes, including "user:password@".
    (re.compile(rf"(?i)\b([a-z][a-z0-9+.-]{{0,15}})://([^\s/?#\"'<>\\]*){_TAIL}"), _url),
    (re.compile(rf"(?i)\b[a-z][a-z0-9+.-]{{0,15}}%3a%2f%2f{_TAIL}"), "[url]"),
    (re.compile(r"(?i)[\w.+-]+(?:@|%40)[\w-]+(?:\.[\w-]+)+"), "[email]"),
    (
        re.compile(rf"(?i)([\"']?)\b({_SENSITIVE_KEYS})\1(\s*[:=]\s*)"
                   rf"(?!\[redacted\])(b?\"[^\"]*\"|b?'[^']*'|[^\s,;&)}}\]]+)"),
        r"\1\2\1\3[redacted]",
    ),
    # Prose rather than name=value: "with pin 7395", "password was hunter2".
    (re.compile(r"(?i)\b(pins?|passcode|password|passwd)(\s+(?:is\s+|was\s+|of\s+)?)(?!\[redacted\])[^\s,;)]+"),
     r"\1\2[redacted]"),
    # A host name or IPv4 literal followed by a path, without a scheme: keep the host.
    (
        re.compile(rf"(?<![\w./-])((?:[A-Za-z0-9-]+\.)+[A-Za-z0-9-]+|\[[0-9A-Fa-f:.]+\])(:\d{{1,5}})?/{_TAIL}"),
        r"\1\2",
    ),
    (re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{0,4})"
                r"(?:%[\w.-]+)?(?![\w:]|\.\d)"), _ipv6),
    (re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)"), _ipv4),
    (re.compile(r"\b(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH|TRACE|CONNECT)\s+[^\s\"']+(?:[\"'][^\s\"']+)*"),
     r"\1 [path]"),
    (re.compile(rf"(?<![\w/.\]:)-])/(?=[^\s/]){_TAIL}"), "[path]"),
    (re.compile(rf"\?(?=[^\s?\"'<>]*=){_TAIL}"), "?[query]"),
    (re.compile(r"(?<![\w%.-])[\w.%-]+=[^\s&\"']*(?:&[\w.%-]+=[^\s&\"']*)+"), "[form]"),
    # Groups of 3+ digits, optionally ending in a short one ("2123 4001 2345 67"); a date
    # ("2026-11-28") never reaches 8 digits in one match.
    (re.compile(r"(?<!\d)\d{3,}(?:[ -]\d{3,})*(?:[ -]\d{1,2})?(?!\d)"), _digits),
)

# A traceback's own "File ..., line N, in f" lines name code, never patrons: keep them readable.
_TRACEBACK_LOCATION = re.compile(r'^\s*File "[^"\n]*", line \d+(?:, in [\w<>.]+)?\s*$')


def scrub(text: str) -> str:
    """``text`` with every kind of identifying value listed in the module docstring replaced."""
    out = text[:MAX_INPUT]
    for pattern, replacement in _RULES:
        out = pattern.sub(replacement, out)
    if len(out) > MAX_LENGTH:
        out = out[:MAX_LENGTH] + " [truncated]"
    return out


def scrub_traceback(text: str) -> str:
    """A formatted traceback or stack, scrubbed line by line except for code locations.

    Exception messages and the source lines a traceback quotes can hold anything (a URL, a card
    number in a literal); the ``File "...", line N`` lines only name the proxy's own code.
    """
    lines = text[:MAX_INPUT].splitlines()
    kept = [line if _TRACEBACK_LOCATION.match(line) else scrub(line) for line in lines]
    out = "\n".join(kept)
    if len(out) > MAX_LENGTH:
        out = out[:MAX_LENGTH] + " [truncated]"
    return out


def header_names(headers: Iterable[tuple[str, str]]) -> str:
    """The names of ``headers``, sorted and de-duplicated, for a log line; never their values."""
    return ", ".join(sorted({name.lower() for name, _value in headers}))
