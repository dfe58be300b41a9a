"""The host rewrite table and the byte-level matcher that applies it.

Proxy by hostname means only *absolute* references to configured vendor hosts change; relative
links already resolve against the proxied host. So rewriting is a search for host names in bytes,
never a parse of HTML, CSS or JavaScript.

What counts as a mention of a host
----------------------------------
A mention is ``[scheme-prefix] host [port]`` where the host is a whole run of host characters
(``A-Z a-z 0-9 . - _``): ``evilvendor.com`` and ``vendor.com.evil.example`` are different runs, so
they never match ``vendor.com`` (the dot-boundary rule). The host is compared lower-cased, so
``WWW.Vendor.COM`` is found too. The forms recognised around the host are:

==========================  =====================================  ===============================
form                        example                                rewritten (dev proxy, http)
==========================  =====================================  ===============================
absolute                    ``https://www.vendor.com/a``           ``http://www-vendor-com.P/a``
WebSocket                   ``wss://api.vendor.com/ws``            ``ws://api-vendor-com.P/ws``
protocol-relative           ``//cdn.vendor.com/x.png``             ``//cdn-vendor-com.P/x.png``
JSON-escaped                ``https:\\/\\/www.vendor.com\\/a``        ``http:\\/\\/www-vendor-com.P\\/a``
JSON ``\\u002f`` escaped     ``https:\\u002f\\u002fwww.vendor.com``    ``http:\\u002f\\u002fwww-vendor-com.P``
percent-encoded             ``https%3A%2F%2Fwww.vendor.com%2Fa``   ``http%3A%2F%2Fwww-vendor-com.P%2Fa``
doubly percent-encoded      ``https%253A%252F%252Fwww.vendor.com`` ``http%253A%252F%252Fwww-vendor-com.P``
bare host (JS, JSON, text)  ``"api.vendor.com"``                   ``"api-vendor-com.P"``
==========================  =====================================  ===============================

(``P`` is the proxy host, e.g. ``proxy.localhost:8080``; the ``:`` of its port is written
``%3A``/``%253A`` inside percent-encoded forms.) A mention is *not* rewritten when the host
is preceded by ``@`` or ``%40`` (an e-mail address or userinfo), by a single ``/`` or ``%2F``
(a path segment such as ``/sites/www.vendor.com/``), when ``//`` follows a letter (``a//host`` is
a path), or when a scheme other than http, https, ws and wss precedes it (``ftp://``,
``android-app://``): the proxy only carries web traffic.

How schemes map
---------------
The proxied label encodes the vendor's scheme and port (``www-vendor-com`` is https:443,
``www-vendor-com---h`` is http:80, ``127-0-0-1---h8081`` is http:8081), so the rewritten URL's
scheme is always the *proxy's* scheme (``http`` in development, ``https`` in production), and
``ws``/``wss`` follow it. Which vendor origin a mention means:

* an explicit scheme means that scheme, with the explicit port or the scheme's default port;
  ``http://host`` for a host configured for https only is upgraded to the https origin (vendors
  redirect http to https anyway; this keeps the patron inside the proxy);
* no scheme (protocol-relative or bare) means the scheme of the page being rewritten (the
  response's own origin, ``context_scheme``), falling back to the other scheme when the host is
  configured for that one only;
* an origin the vendor table does not serve (a port that is not configured, a host that is not
  listed) is left untouched: the proxy's Content-Security-Policy stops the browser from loading
  it, and rewriting it to a proxied name would only produce a "not configured" page.

The reverse direction (proxy -> vendor, for request bodies) is the same matcher with the proxy's
host name as the only anchor and ``VendorMap.origin_for_host`` as the resolver.

Speed
-----
The matcher searches each buffer for a few literal *anchors* (the registrable name, e.g.
``vendor.com``; names that share a top-level domain are merged into one ``.com`` anchor, so a
table of many vendors costs a few passes, not one per vendor), in any case, and looks only at the
bytes around each hit. What a mention becomes depends on a few of them: before the host, the
scheme, the slashes and colon in their escaped or encoded forms and one byte of word boundary;
after it, a port and a dot. ``decide`` reports exactly which bytes it read, and the decision is
memoised under those bytes alone, so the same form of the same host is one memo entry wherever it
appears (``href="https://www.vendor.com/a`` and ``src='https://www.vendor.com/b`` share the key
``'https://www.vendor.com/``), and a known hit costs one hash-table lookup.

The hot loop (find the anchors, look each hit up in the memo, copy the bytes between edits) is
compiled: ``_hostscan.c``. It keeps no rule: a memo entry is filed with its *shape* (so many bytes
before the host run or the anchor, so many after it), and for each hit the loop tries the shapes
seen so far. Only hits the memo does not know come back to Python, to ``_miss`` and ``decide``
below, so every rule lives here, once. On the real-world corpus (tests/corpus) every mention
after the first of its form and host takes the compiled path. Built where a C compiler is at
hand (``pip install`` does it); otherwise, or with ``LIBPROXY_PURE_PYTHON=1``, the same loop
runs in Python (``_one_anchor``): with one or two
anchors each is found by a case-insensitive ``re`` split of the buffer itself, starting at the
anchor's first non-letter so ``re`` searches as fast as for a literal; with more, the buffer is
lower-cased once and split with ``bytes.split``. tests/test_rewrite_accel.py holds the two loops
to the same output. The pure-Python loop memoises by a fixed window of bytes around each hit
instead (one slice per hit is cheaper in Python than finding the exact bytes). On the real-page
corpus the compiled loop takes about 0.03 ms per 138 KB file (docs/rewriting.md). On the
generated worst case of ``bench/bench_rewrite.py`` (a 200 KB page with ~500 mentions, measured
before the shape-keyed memo): about 0.1 ms compiled, 0.8 ms in pure Python.

Everything is linear in the input: per hit the matcher reads a bounded window (at most
``MAX_MENTION`` bytes), memo tables are capped, and there is no backtracking regular expression.
"""

from __future__ import annotations

import hashlib
import importlib
import ipaddress
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from proxy.vendors import DEFAULT_PORTS, Origin, VendorMap, valid_host

if TYPE_CHECKING:
    from proxy.rewrite import _hostscan
else:
    # Loaded by name rather than imported from the package: this module must not import the
    # package __init__, which imports this module (the package only re-exports).
    try:
        _hostscan = importlib.import_module("proxy.rewrite._hostscan")
    except ImportError:  # not compiled (no C compiler at install): the pure-Python loop works
        _hostscan = None

# The compiled loop is used when it was built, unless LIBPROXY_PURE_PYTHON is set (the tests run
# the rewriters both ways and compare; an operator can rule out the extension with it).
ACCELERATED: Final = _hostscan is not None and not os.environ.get("LIBPROXY_PURE_PYTHON")


def rewriting_loop() -> str:
    """Which loop rewrites bodies, for the start-up log and ``check-config``."""
    if ACCELERATED:
        return "with the compiled loop"
    if _hostscan is None:
        return ("in pure Python (the compiled loop was not built; installed with a C compiler, "
                "rewriting is 5-8 times faster)")
    return "in pure Python (LIBPROXY_PURE_PYTHON is set)"

# Bytes that make up a host run (compared on the lower-cased buffer). "_" is not valid in a DNS
# host name, but browsers accept it and it is common in JS identifiers; counting it as part of
# the run means "x_www.vendor.com" is never split into "x_" + a vendor host.
_RUN_BYTES: Final = b"abcdefghijklmnopqrstuvwxyz0123456789.-_"
_RUN_SET: Final = frozenset(_RUN_BYTES)
# Characters of a URL scheme (RFC 3986), lower-cased.
_SCHEME_SET: Final = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789+.-")
_HEX_SET: Final = frozenset(b"0123456789abcdef")
# Letters that follow a backslash in a JS or JSON string escape for a control character.
_JS_ESCAPE_LETTERS: Final = frozenset(b"nrtbfv")
_MAX_BACKSLASHES: Final = 16
_DOT: Final = ord(".")
_DIGITS: Final = re.compile(rb"[0-9]{1,6}")

MAX_HOST: Final = 253  # RFC 1035: a host name never exceeds this, so a longer run is no host
MAX_PREFIX: Final = 24  # longest scheme prefix ("https%253a%252f%252f") plus an escape before it
MAX_RIGHT: Final = 12  # longest port part ("%253a65535") plus the character after it
# A mention (prefix + host + port + the byte after it) always fits in this many bytes; the
# streaming rewriter keeps this much unprocessed tail between chunks.
MAX_MENTION: Final = MAX_PREFIX + MAX_HOST + MAX_RIGHT + 8
# Bytes of context kept before a buffer, so look-behind checks see what was already emitted. A
# decision reads at most 29 bytes before the start of its edit ("\u003a\u002f\u002f" plus a
# scheme and an escape before it), and an edit that would start in this context is refused.
CONTEXT: Final = 64

# Second-level labels under which registries sell names (co.uk, com.au, ...): the anchor for
# www.example.co.uk must be example.co.uk, not the very common co.uk. Only speed depends on this.
_PUBLIC_SLDS: Final = frozenset({"ac", "co", "com", "edu", "gov", "net", "org", "or", "ne", "go", "nhs"})
# With more anchors than this, searching each one separately costs more than filtering the hits
# of a coarser anchor (the top-level label), so anchors are merged per top-level domain.
MAX_ANCHORS: Final = 8
# SECURITY: memo tables are keyed by page bytes; their size is capped so a hostile page with
# endless distinct contexts cannot grow them without bound (they are simply emptied).
MEMO_LIMIT: Final = 4096

_WEB_SCHEMES: Final = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


@dataclass(frozen=True, slots=True)
class Target:
    """What a mention becomes: the scheme written for http(s) mentions and the new host[:port]."""

    scheme: str  # "http" or "https"
    netloc: str


# A resolver maps (lower-case host, explicit scheme normalised to http/https or None, port or
# None) to a Target, or None when the mention must stay as it is.
Resolver = Callable[[str, str | None, int | None], Target | None]


# ---------------------------------------------------------------------------------------------
# Anchors


def _anchor_for(host: str) -> str:
    """The literal searched for to find ``host`` and its siblings (``www.vendor.com`` -> ``vendor.com``)."""
    try:
        ipaddress.IPv4Address(host)
        return host  # an IP literal has no shared suffix worth searching for
    except ValueError:
        pass
    labels = host.split(".")
    if len(labels) >= 3 and labels[-2] in _PUBLIC_SLDS and len(labels[-1]) == 2:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def choose_anchors(hosts: Iterable[str]) -> tuple[bytes, ...]:
    """A small set of lower-case literals such that every mention of every host contains one.

    Correctness never depends on the choice (every hit is checked against the whole host run);
    speed does: each anchor costs one pass over the buffer, each hit a look at its context. So
    registrable names that share a top-level domain are merged into that domain (``.com``): one
    pass, plus a few more hits on other hosts of that domain, costs less than a pass per name.
    """
    anchors = {_anchor_for(h) for h in hosts}
    # An anchor containing another one is found by the other one already (and two anchors
    # could otherwise both report the same mention).
    anchors = {a for a in anchors if not any(a != b and b in a for b in anchors)}
    by_tld: dict[str, set[str]] = {}
    for a in anchors:
        try:
            ipaddress.IPv4Address(a)
            by_tld.setdefault(a, set()).add(a)  # an IP literal stays as it is
        except ValueError:
            by_tld.setdefault("." + a.rsplit(".", 1)[-1] if "." in a else a, set()).add(a)
    merged = {tld if len(group) > 1 or len(by_tld) > MAX_ANCHORS else next(iter(group))
              for tld, group in by_tld.items()}
    # Longest first: a more specific anchor is met first.
    return tuple(sorted((a.encode("ascii") for a in merged), key=lambda a: (-len(a), a)))


# ---------------------------------------------------------------------------------------------
# The matcher


class _Skip:
    """Decision for "this hit is not a mention to rewrite"."""


SKIP: Final = _Skip()

# An edit: (start, end, replacement); replacement None means "leave as is" (memoised SKIP).
Edit = tuple[int, int, bytes | None]
_NO_EDIT: Final[Edit] = (0, 0, None)
# A decision: (edit or SKIP, lo, hi) where [lo, hi) bounds the bytes it read.
_Decision = tuple[tuple[int, int, bytes] | _Skip, int, int]


_KL: Final = 32  # memo key: bytes before a registrable-name anchor ("vendor.com")
_KL_TLD: Final = 48  # the same for a top-level anchor (".com"): more of the host is before it
_KR_PORT: Final = MAX_RIGHT  # memo key for hits followed by ":" or "%": bytes after the anchor
# The longest host run whose start is looked for (as _hostscan.c's MAX_RUN): a longer run is no
# host name, and decide() says so after reading this far.
_RUN_LIMIT: Final = MAX_HOST + 6
# A decision reads about 30 bytes before a host and 12 after it; a key shaped larger than this
# would be a bug in decide's accounting, and is not memoised.
_MAX_SHAPE: Final = 64

# Separators between scheme and host, lower-cased, longest first: (bytes, kind).
_SEPARATORS: Final = (
    # Escaped twice (JSON in a JS string, or in JSON): decoded twice before a browser sees it.
    (b"\\\\u002f\\\\u002f", "json2-u"),
    (b"\\\\x2f\\\\x2f", "js2-x"),
    (b"\\u002f\\u002f", "json-u"),
    (b"\\x2f\\x2f", "js-x"),
    (b"%252f%252f", "pct2"),
    (b"%2f%2f", "pct"),
    # JSON in a JS string (or in JSON): "https:\\/\\/www.vendor.com" is decoded twice.
    (b"\\\\/\\\\/", "json2"),
    (b"\\/\\/", "json"),
    (b"//", "plain"),
)
_COLONS: Final = {
    "plain": (b":",),
    "json": (b":",),
    "json2": (b":",),
    "json2-u": (b":", b"\\\\u003a"),
    "js2-x": (b":", b"\\\\x3a"),
    "json-u": (b":", b"\\u003a"),
    "js-x": (b":", b"\\x3a"),
    "pct": (b"%3a",),
    "pct2": (b"%253a",),
}
_SCHEMES_BY_LENGTH: Final = (b"https", b"http", b"wss", b"ws")


def _ends_with(low: bytes, pos: int, text: bytes) -> tuple[bool, int]:
    """Whether ``low[:pos]`` ends with ``text``, and the lowest position the answer read.

    Compared from the last byte back, so a "no" reads only up to the first byte that differs:
    a memoised decision then covers every hit that agrees on those few bytes (see ``decide``).
    The position is -1 when the comparison ran into the start of the buffer.
    """
    k = len(text)
    if pos >= k and low[pos - k : pos] == text:
        return True, pos - k
    p = pos - 1
    for c in reversed(text):
        if p < 0:
            return False, -1
        if low[p] != c:
            return False, p
        p -= 1
    return True, p + 1  # not reached: a whole match was found above


def _continues_word(low: bytes, pos: int, chars: frozenset[int]) -> tuple[bool, int]:
    r"""Whether the byte before ``pos`` is one of ``chars`` that continues a word (so ``pos`` is
    not where a scheme or a host starts), and the lowest position read (-1: the buffer start).

    The last character of an escape is no word: ``%3Dhttps%3A`` is "=https:", ``%253Dhttp`` is
    a doubly encoded "=http", ``\x3dhttps``/``\u003dhttps`` in scripts, and ``\nhttps://`` in
    JSON or JS is a new line then a URL (an odd number of backslashes: ``\\nhttps`` is a
    backslash then the word "nhttps")."""
    if pos <= 0:
        return False, -1
    c = low[pos - 1]
    if c not in chars:
        return False, pos - 1
    lo = pos - 1
    if c in _JS_ESCAPE_LETTERS:
        p = pos - 2
        while p >= 0 and low[p] == 0x5C and pos - 2 - p < _MAX_BACKSLASHES:
            p -= 1
        count = pos - 2 - p
        if count:
            # SECURITY: a run of backslashes is read only so far; a longer one is a word.
            return count % 2 == 0 or count >= _MAX_BACKSLASHES, max(p, -1)
    if c not in _HEX_SET:
        return True, lo
    if pos < 2:
        return True, -1
    if low[pos - 2] not in _HEX_SET:
        return True, pos - 2
    if pos < 3:
        return True, -1
    c3 = low[pos - 3]
    if c3 == 0x25:  # %XX
        return False, pos - 3
    if c3 == 0x78:  # \xXX
        if pos < 4:
            return True, -1
        return low[pos - 4] != 0x5C, pos - 4
    if c3 not in _HEX_SET:
        return True, pos - 3
    if pos < 5:
        return True, -1
    if low[pos - 4] not in _HEX_SET:
        return True, pos - 4
    if c3 == 0x35 and low[pos - 4] == 0x32 and low[pos - 5] == 0x25:
        return False, pos - 5  # %25XX: a doubly encoded byte ("%253Dhttp%253A...")
    if low[pos - 5] != 0x75:  # \uXXXX
        return True, pos - 5
    if pos < 6:
        return True, -1
    return low[pos - 6] != 0x5C, pos - 6


def _hex_at(low: bytes, pos: int, count: int) -> int | None:
    """The value of ``count`` hex digits at ``pos``, or None."""
    digits = low[pos : pos + count]
    if len(digits) != count or not all(b in _HEX_SET for b in digits):
        return None
    return int(digits, 16)


def _escape(low: bytes, rs: int, before: int) -> tuple[int, int]:
    """(length, decoded byte) of the escape body that starts the host run at ``rs``, where
    ``before`` is the byte before the run ("%" or "\\"); (0, 0) when there is none."""
    if before == 0x25:  # %XX, or %25XX (a doubly encoded byte)
        code = _hex_at(low, rs, 2)
        if code is None:
            return 0, 0
        if code == 0x25:
            inner = _hex_at(low, rs + 2, 2)
            if inner is not None:
                return 4, inner
        return 2, code
    marker = low[rs : rs + 1]
    if marker and marker in b"nrtbfv":
        return 1, 0x0A  # "\nwww.vendor.com" in a JS or JSON string: a control character
    if marker == b"x":
        code = _hex_at(low, rs + 1, 2)
        return (3, code) if code is not None else (0, 0)
    if marker == b"u":
        code = _hex_at(low, rs + 1, 4)
        return (5, code) if code is not None else (0, 0)
    return 0, 0


# With at most this many anchors, each is searched case-insensitively in the buffer itself (one
# regular-expression split per anchor) instead of lower-casing the buffer and splitting the copy;
# with more, the one lower-cased copy shared by all anchors is cheaper.
MAX_REGEX_ANCHORS: Final = 2


def _searcher(anchor: bytes) -> tuple[re.Pattern[bytes], int] | None:
    """A case-insensitive search for ``anchor`` that is as fast as a literal one, and ``k``: how
    many bytes into each hit the pattern's matches start. None if there is no such search.

    Python's ``re`` searches fast only for a literal *uncased* first byte, so the pattern starts
    at the first byte of the anchor that is not a letter (``.example`` for ``othervendor.example``)
    and a look-behind checks the letters before it: each match is then a whole hit of the anchor.
    For an anchor that has a border (a proper prefix equal to a suffix, e.g. ``1.1.1.1``) hits can
    overlap, and ``re`` and ``bytes.split`` could disagree about which ones count: None.
    """
    if any(anchor[:j] == anchor[-j:] for j in range(1, len(anchor))):
        return None
    k = next((j for j, c in enumerate(anchor) if not 0x61 <= c <= 0x7A), -1)
    if k < 0:
        return None  # "localhost": only letters
    pattern = re.escape(anchor[k:])
    if k:
        pattern += b"(?<=" + re.escape(anchor) + b")"
    return re.compile(pattern, re.IGNORECASE), k


class Matcher:
    """Finds mentions of hosts in a buffer and produces the edits that rewrite them.

    ``anchors`` are lower-case literals contained in every host the resolver knows;
    ``resolve`` says what a (host, scheme, port) mention becomes. The matcher itself knows nothing
    about vendors: the same code serves both directions. A matcher memoises decisions; it is
    meant to be shared by every response of one table (single-threaded, like the event loop).
    """

    def __init__(self, anchors: tuple[bytes, ...], resolve: Resolver, accelerated: bool | None = None) -> None:
        self.anchors = anchors
        self._resolve = resolve
        # The compiled loop (_hostscan.c) finds the hits and applies what the memos know; every
        # other hit still comes to _miss here, so both loops make the same decisions.
        self.accelerated = ACCELERATED if accelerated is None else accelerated
        if self.accelerated and (_hostscan is None or len(anchors) > _hostscan.MAX_ANCHORS):
            self.accelerated = False
        # The compiled loop's memo, per anchor: each decision filed under exactly the bytes it
        # read (see _remember), so one entry serves every hit of that form of that host.
        self._shaped: dict[bytes, _hostscan.Memo] = (
            {a: _hostscan.Memo() for a in anchors} if self.accelerated else {})
        self._specs = tuple((a, self._shaped[a]) for a in anchors) if self.accelerated else ()
        # The pure-Python loop's memos, per anchor (so keys of one length only ever meet keys of
        # the same anchor): decisions by the KL bytes before a hit, the anchor and one byte
        # after it; and, for hits followed by a port, by _KR_PORT bytes after the anchor. A
        # fixed window costs Python one slice per hit, where finding the exact bytes would cost
        # more than it saves.
        self._memos: dict[bytes, dict[bytes, Edit]] = {a: {} for a in anchors}
        self._memos_right: dict[bytes, dict[bytes, Edit]] = {a: {} for a in anchors}
        self._kl = {a: _KL_TLD if a.startswith(b".") else _KL for a in anchors}
        self._seen = dict.fromkeys(anchors, 0)  # hits per anchor so far: the busiest runs inline
        self._replacements: dict[tuple[str, str | None, str, bytes], bytes] = {}
        # With few anchors, each is searched case-insensitively in the buffer itself (see
        # _searcher), which saves lower-casing every buffer; None: lower-case and split. (Only
        # the pure-Python loop searches; the compiled one finds the anchors itself.)
        few = len(anchors) <= MAX_REGEX_ANCHORS and not self.accelerated
        searchers = [_searcher(a) for a in anchors] if few else []
        self._searchers: tuple[tuple[bytes, re.Pattern[bytes], int], ...] | None = (
            tuple((a, s[0], s[1]) for a, s in zip(anchors, searchers, strict=True) if s is not None)
            if searchers and all(s is not None for s in searchers) else None
        )
        # The lower-cased copy of the buffer being rewritten, made only when a decision needs it
        # (a memo miss); reset by every rewrite() call.
        self._low: bytes | None = None

    # -- the whole-buffer step used by the streaming rewriter -------------------------------

    def rewrite(self, buf: bytes, base: int, at_start: bool, final: bool) -> tuple[list[bytes], int]:
        """Rewrite ``buf[base:cut]``; return (output pieces, cut).

        ``buf[:base]`` is context already emitted (read, never changed); ``at_start`` says that
        ``buf[0]`` is the first byte of the stream. Unless ``final``, mentions that could still
        continue past the end are left for later: ``cut`` is ``len(buf) - MAX_MENTION``, moved
        forward past an edit that straddles it, and the caller calls again with ``buf[cut:]``
        followed by more bytes. With ``final`` the whole buffer is rewritten (cut == len(buf)).
        """
        n = len(buf)
        limit = n if final else n - MAX_MENTION
        if limit <= base:
            return [], base
        if self.accelerated:
            anchors = self.anchors

            def miss(i: int, index: int) -> Edit | None:
                return self._miss(buf, i, anchors[index], base, at_start, final)

            self._low = None
            try:
                data, cut = _hostscan.rewrite(buf, base, limit, self._specs, miss)
            finally:
                self._low = None
            return [data], cut
        # Per anchor present at or after base: (anchor, buffer split at its hits, k) where the
        # split points are k bytes into each hit (see _searcher).
        present: list[tuple[bytes, list[bytes], int]] = []
        searchers = self._searchers
        if searchers is None:
            # Host names are matched without regard to case, on a lower-cased copy (positions
            # are the same: bytes.lower() only maps A-Z). islower() stops at the first capital,
            # so the copy is saved only for the rare buffer without any capital letter.
            low = buf if buf.islower() else buf.lower()
            self._low = low
            present.extend((a, low.split(a), 0) for a in self.anchors if low.find(a, base) >= 0)
        else:
            # The anchors are found in the buffer itself by case-insensitive searches; the
            # lower-cased copy is made only if a hit needs deciding (_miss).
            self._low = None
            for anchor, pattern, k in searchers:
                pieces = pattern.split(buf)
                # Border-free anchors never overlap, so the last hit says whether one starts at
                # or after base (what low.find(anchor, base) says).
                if len(pieces) > 1 and n - len(pieces[-1]) - len(anchor) >= base:
                    present.append((anchor, pieces, k))
        out: list[bytes] = []
        last = base
        try:
            if present:
                # The anchor with the most hits so far runs through the inline loop; the
                # (usually few) edits found through other anchors are merged into it as it goes.
                seen = self._seen
                main = max(present, key=lambda p: seen[p[0]])
                others: list[tuple[int, int, bytes]] = []
                for found in present:
                    if found is not main:
                        self._collect(buf, found[1], found[0], found[2], base, at_start, final, others)
                if len(present) > 2:
                    others.sort()
                last = self._one_anchor(buf, main[1], main[0], main[2], base, at_start, final, limit, out, others)
        finally:
            self._low = None
        cut = max(limit, last)
        out.append(buf[last:cut])
        return out, cut

    def _one_anchor(
        self, buf: bytes, pieces: list[bytes], anchor: bytes, k: int, base: int, at_start: bool, final: bool,
        limit: int, out: list[bytes], others: list[tuple[int, int, bytes]],
    ) -> int:
        """Write ``buf[base:]`` with the edits of ``anchor`` (found in order, written as found)
        and the sorted ``others`` merged in; return the end of the last edit (or ``base``).

        ``pieces`` is the buffer split at the hits of ``anchor``, each split point ``k`` bytes
        into its hit."""
        m = len(anchor)
        m1 = m + 1
        mr = m + _KR_PORT
        n = len(buf)
        kl = self._kl[anchor]
        get = self._memos[anchor].get
        get_right = self._memos_right[anchor].get
        miss = self._miss
        add = out.append
        last = base
        step = m - k
        pos = -k
        j = 0
        after = n + 1
        next_other = others[0][0] if others else after
        pieces.pop()
        self._seen[anchor] += len(pieces)
        # The hot loop: per hit one slice and one dict lookup of the bytes around it; the memo
        # knows what they mean. Hits followed by a port (or a "%") are looked up with more bytes
        # after them; hits neither memo knows (or too near the start) take _miss.
        # A key may reach back into the emitted context (buf[:base]): those bytes are the
        # stream's own, and a memoised decision only ever read bytes inside its key, so it is
        # the decision _miss would make; an edit it gives that starts before base is dropped by
        # the "start < last" check below, as _miss would refuse it (last >= base).
        for piece in pieces:
            i = pos + len(piece)
            pos = i + step
            if i >= kl:
                hit = get(buf[i - kl : i + m1])
                if hit is None:
                    if i + mr <= n:
                        hit = get_right(buf[i - kl : i + mr])
                    if hit is None:
                        hit = miss(buf, i, anchor, base, at_start, final)
                        if hit is None:
                            continue
            else:
                hit = miss(buf, i, anchor, base, at_start, final)
                if hit is None:
                    continue
            rel_start, rel_end, repl = hit
            if repl is None:
                continue
            start = i + rel_start
            while next_other < start:
                o_start, o_end, o_repl = others[j]
                j += 1
                next_other = others[j][0] if j < len(others) else after
                if o_start >= last and o_start < limit:
                    add(buf[last:o_start])
                    add(o_repl)
                    last = o_end
            if start < last:
                continue  # SECURITY: never two edits over the same bytes (one mention, two anchors)
            if start >= limit:
                break
            add(buf[last:start])
            add(repl)
            last = i + rel_end
        for o_start, o_end, o_repl in others[j:]:
            if o_start >= last and o_start < limit:
                add(buf[last:o_start])
                add(o_repl)
                last = o_end
        return last

    def _collect(
        self, buf: bytes, pieces: list[bytes], anchor: bytes, k: int, base: int, at_start: bool, final: bool,
        edits: list[tuple[int, int, bytes]],
    ) -> None:
        """Append the edits found through ``anchor`` (in order) to ``edits``; ``pieces`` and
        ``k`` as for _one_anchor."""
        m = len(anchor)
        m1 = m + 1
        mr = m + _KR_PORT
        n = len(buf)
        kl = self._kl[anchor]
        get = self._memos[anchor].get
        get_right = self._memos_right[anchor].get
        append = edits.append
        step = m - k
        pos = -k
        pieces.pop()
        self._seen[anchor] += len(pieces)
        for piece in pieces:
            i = pos + len(piece)
            pos = i + step
            # Keys may reach back into buf[:base], as in _one_anchor.
            hit = get(buf[i - kl : i + m1]) if i >= kl else None
            if hit is None:
                if i >= kl and i + mr <= n:
                    hit = get_right(buf[i - kl : i + mr])
                if hit is None:
                    hit = self._miss(buf, i, anchor, base, at_start, final)
                    if hit is None:
                        continue
            rel_start, rel_end, repl = hit
            if repl is not None and i + rel_start >= base:  # SECURITY: never edit emitted bytes
                append((i + rel_start, i + rel_end, repl))

    def _miss(self, buf: bytes, i: int, anchor: bytes, base: int, at_start: bool, final: bool) -> Edit | None:
        """A hit no memo knew: decide it from scratch and memoise the decision where it can be
        (see _remember and, for the pure-Python loop, _remember_window). None when the decision
        needs bytes not received yet (the caller holds them back)."""
        m = len(anchor)
        if not self.accelerated:
            kl = self._kl[anchor]
            k0 = i - kl
            if k0 >= base and i + m + _KR_PORT <= len(buf):
                known = self._memos_right[anchor].get(buf[k0 : i + m + _KR_PORT])
                if known is not None:
                    return known
        low = self._low
        if low is None:
            low = self._low = buf.lower()
        decided = self.decide(buf, low, i, m, at_start, final)
        if decided is None:
            return None
        action, lo, hi = decided
        if type(action) is tuple:
            if action[0] < base:
                return _NO_EDIT  # SECURITY: never edit bytes already sent (cannot happen; a guard)
            rel: Edit = (action[0] - i, action[1] - i, action[2])
        else:
            rel = _NO_EDIT
        if self.accelerated:
            self._remember(buf, low, i, anchor, lo, hi, rel)
        else:
            self._remember_window(buf, i, anchor, base, lo, hi, rel)
        return rel

    def _remember(self, buf: bytes, low: bytes, i: int, anchor: bytes, lo: int, hi: int, rel: Edit) -> None:
        """File a decision in the compiled loop's memo under the bytes it read, ``buf[lo:hi]``.

        Their shape says where such a key lies around any hit: from so many bytes before the
        start of the host run (where the scheme, slashes and escapes are), or before the anchor
        for a decision that never looked left of it, to so many bytes after the anchor. Any hit
        with the same bytes in the same place gets the same decision, since the decision read
        nothing else; the bytes around them (an attribute, the rest of a URL) are not in the key.
        """
        n = len(buf)
        if lo < 0 or hi > n:
            return  # it depended on where the buffer starts or ends: not a property of the bytes
        e = i + len(anchor)
        if lo >= i:
            at_anchor, start = True, i
        else:
            # The run start as _hostscan.c's run_start finds it; a run reaching the buffer start
            # or longer than any host is never looked up there.
            w0 = max(0, i - _RUN_LIMIT)
            rs = w0 + len(low[w0:i].rstrip(_RUN_BYTES))
            if rs == 0 or i - rs >= _RUN_LIMIT:
                return
            at_anchor, start = False, rs
        left = max(0, start - lo)
        right = hi - e
        if left > _MAX_SHAPE or right > _MAX_SHAPE:
            return
        memo = self._shaped[anchor]
        if len(memo) >= MEMO_LIMIT:
            memo.clear()
        memo.store(buf[start - left : hi], left, right, at_anchor, rel)

    def _remember_window(self, buf: bytes, i: int, anchor: bytes, base: int, lo: int, hi: int, rel: Edit) -> None:
        """File a decision in the pure-Python loop's memos, if the bytes it read lie inside one
        of their fixed windows around the hit."""
        m = len(anchor)
        kl = self._kl[anchor]
        k0 = i - kl
        n = len(buf)
        if lo < k0 or k0 < base:
            return
        if hi <= i + m + 1 <= n:
            memo = self._memos[anchor]
            if len(memo) >= MEMO_LIMIT:
                memo.clear()
            memo[buf[k0 : i + m + 1]] = rel
        elif hi <= i + m + _KR_PORT <= n:
            right = self._memos_right[anchor]
            if len(right) >= MEMO_LIMIT:
                right.clear()
            right[buf[k0 : i + m + _KR_PORT]] = rel

    # -- one hit --------------------------------------------------------------------------

    def decide(
        self, buf: bytes, low: bytes, i: int, m: int, at_start: bool, final: bool
    ) -> _Decision | None:
        """The decision for the anchor hit at ``low[i:i+m]``, or None if later bytes are needed.

        Returns (edit or SKIP, lo, hi): every byte the decision read lies in ``[lo, hi)``
        (``lo`` may be negative when the decision depended on the buffer starting there), so
        any other hit with the same bytes around it gets the same decision.
        """
        n = len(buf)
        e = i + m
        # 1. The host run must end with the anchor (a trailing FQDN dot may follow).
        hi = e + 1
        if e < n:
            c = low[e]
            if c in _RUN_SET:
                if c != _DOT:
                    return SKIP, i, e + 1  # "vendor.community", "vendor.com-x"
                hi = e + 2
                if e + 1 >= n:
                    if not final:
                        return None
                elif low[e + 1] in _RUN_SET:
                    return SKIP, i, e + 2  # "vendor.com.evil.example" is another host
        elif not final:
            return None
        # 2. The run starts after the last non-host byte before the anchor.
        w0 = max(0, i - _RUN_LIMIT)
        rs = w0 + len(low[w0:i].rstrip(_RUN_BYTES))
        if rs == w0 and (w0 > 0 or not at_start):
            # SECURITY: a run longer than any host name (and only such a run can reach back into
            # bytes already emitted) is no host; following it further would be unbounded work.
            return SKIP, w0 - 1, hi
        lo = rs - 1
        hs = rs
        before = low[rs - 1] if rs > 0 else -1
        # 3. An escape right before the run: its hex digits belong to it ("%2Fwww..." starts
        #    the run at "2Fwww"), so the host starts after them.
        if before == 0x25 or before == 0x5C:  # "%" or "\"
            esc, code = _escape(low, rs, before)
            if esc:
                if code in _RUN_SET or 0x41 <= code <= 0x5A:
                    # An escaped letter or digit is part of the name ("%77ww.vendor.com");
                    # left alone, it is stopped by the proxy's CSP like any unknown host.
                    return SKIP, lo, hi
                hs = rs + esc
                before = code
        while hs < i and low[hs] == _DOT:
            hs += 1  # ".vendor.com" (cookie-domain style): the name starts after the dots
        if hs > i:
            return SKIP, lo, hi
        if before == 0x40:
            return SKIP, lo, hi  # "@": an e-mail address or userinfo, not a link to the host
        # 4. The scheme prefix ending where the host starts. Every comparison reads back only
        #    as far as it must, and ``lo`` records how far that was: the memo then holds one
        #    decision for every hit that agrees on those bytes, whatever else the page holds.
        scheme: str | None = None
        kind = "bare"
        start = hs
        sep_start = hs
        for sep, sep_kind in _SEPARATORS:
            found, at = _ends_with(low, hs, sep)
            lo = min(lo, at)
            if found:
                kind = sep_kind
                sep_start = at
                break
        if kind == "bare":
            if before == 0x2F:
                return SKIP, lo, hi  # "/www.vendor.com/" or "%2Fwww.vendor.com": a path segment
        else:
            colon_start = -1
            for colon in _COLONS[kind]:
                found, at = _ends_with(low, sep_start, colon)
                lo = min(lo, at)
                if found:
                    colon_start = at
                    break
            if colon_start >= 0:
                for name in _SCHEMES_BY_LENGTH:
                    found, ks = _ends_with(low, colon_start, name)
                    lo = min(lo, ks)
                    if found:
                        word, at = _continues_word(low, ks, _SCHEME_SET)
                        lo = min(lo, at)
                        if word:
                            return SKIP, lo, hi  # "xhttps://": some other scheme
                        scheme = name.decode("ascii")
                        start = ks
                        break
                else:
                    lo = min(lo, colon_start - 1)
                    if colon_start > 0 and low[colon_start - 1] in _SCHEME_SET:
                        return SKIP, lo, hi  # ftp://, android-app://: not web traffic
            else:
                word, at = _continues_word(low, sep_start, _RUN_SET)
                lo = min(lo, at)
                if word:
                    return SKIP, lo, hi  # "path//www.vendor.com": an empty path segment, no host
        # 5. An optional port after the host.
        port: int | None = None
        end = e
        port_kind: str | None = None
        if e < n:
            c = low[e]
            ds = -1
            if c == 0x3A:  # ":"
                ds = e + 1
            elif c == 0x25:  # "%"
                if low[e : e + 3] == b"%3a":
                    ds, port_kind = e + 3, "pct"
                elif low[e : e + 5] == b"%253a":
                    ds, port_kind = e + 5, "pct2"
                elif e + 5 > n and not final:
                    return None
                hi = max(hi, e + 5)  # past n: the decision depended on where the buffer ends
            if ds >= 0:
                digits = _DIGITS.match(low, ds)
                if digits is None:
                    if ds >= n and not final:
                        return None
                    hi = max(hi, ds + 1)  # ":" and no digit: a JSON key, "host: text", ...
                    port_kind = None
                else:
                    de = digits.end()
                    if de >= n and not final:
                        return None
                    hi = max(hi, de + 1)
                    after = low[de] if de < n else -1
                    if after == _DOT:  # "...:8080." ends a sentence; "...:8080.5" is no port
                        if de + 1 >= n and not final:
                            return None
                        hi = max(hi, de + 2)
                        if de + 1 < n and low[de + 1] in _RUN_SET:
                            return SKIP, lo, hi
                    elif len(digits.group()) > 5 or after in _RUN_SET:
                        return SKIP, lo, hi  # not a port: leave the whole mention alone
                    port = int(digits.group())
                    if not 0 < port < 65536:
                        return SKIP, lo, hi
                    end = de
        # 6. Resolve, and build the replacement.
        host = low[hs:e].decode("ascii")
        target = self._resolve(host, _WEB_SCHEMES[scheme] if scheme is not None else None, port)
        if target is None:
            return SKIP, lo, hi
        sep_text = buf[start + len(scheme) : hs] if scheme is not None else b""
        return (start, end, self._replacement(target, scheme, port_kind or kind, sep_text)), lo, hi

    def _replacement(self, target: Target, scheme: str | None, kind: str, sep_text: bytes) -> bytes:
        """The bytes written for a mention: scheme (if one was written) + separator + netloc."""
        out_scheme: str | None = None
        if scheme in ("ws", "wss"):
            out_scheme = "wss" if target.scheme == "https" else "ws"
        elif scheme is not None:
            out_scheme = target.scheme
        key = (target.netloc, out_scheme, kind, sep_text)
        found = self._replacements.get(key)
        if found is not None:
            return found
        netloc = target.netloc
        if kind in ("pct", "pct2"):
            # Inside a percent-encoded URL the port's ":" must be encoded too, in the same case.
            # (The only letters of an encoded separator are hex digits: "%3a%2f%2f" and
            # "%253a%252f%252f" are lower-case, whichever the level of encoding.)
            colon = "%3a" if sep_text != sep_text.upper() else "%3A"
            netloc = netloc.replace(":", colon if kind == "pct" else "%25" + colon[1:])
        text = netloc.encode("ascii")
        if out_scheme is not None:
            text = out_scheme.encode("ascii") + sep_text + text
        if len(self._replacements) >= MEMO_LIMIT:
            self._replacements.clear()
        self._replacements[key] = text
        return text

    def rewrite_all(self, data: bytes) -> bytes:
        """Rewrite one complete buffer (a header value, a test input, a small body)."""
        out, _ = self.rewrite(data, 0, True, True)
        return b"".join(out)


# ---------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True, slots=True)
class Pattern:
    """One literal form of one configured origin, in both directions (for tests and docs)."""

    origin: Origin
    form: str
    vendor: bytes
    proxy: bytes


class RewriteTable:
    """Everything host rewriting needs, built once per VendorMap (at start or on reload).

    ``to_proxy(context_scheme)`` and ``to_vendor()`` give matchers for the two directions;
    matchers memoise decisions, so keep and reuse them (they are not shared across threads).
    """

    def __init__(self, vendors: VendorMap) -> None:
        self.vendors = vendors
        self.proxy_scheme = vendors.proxy_scheme
        self.proxy_host = vendors.proxy_host  # host[:port], lower-case
        name, _, port_text = self.proxy_host.partition(":")
        self.proxy_name = name
        self.proxy_port = int(port_text) if port_text else None
        hosts: set[str] = set()
        for vendor in vendors.vendors:
            hosts.update(o.host for o in vendor.origins)
            hosts.update(vendor.domains)
        self.hosts = frozenset(hosts)
        self.forward_anchors = choose_anchors(hosts)
        self.reverse_anchors = (name.encode("ascii"),)
        self._forward: dict[str, Matcher] = {}
        self._reverse: Matcher | None = None
        self._targets: dict[tuple[str, str | None, int | None, str], Target | None] = {}
        config = repr((
            self.proxy_scheme,
            self.proxy_host,
            sorted(
                (v.id, sorted((str(o), vendors.label_for(o) or "") for o in v.origins), v.domains)
                for v in vendors.vendors
            ),
        ))
        # Identifies the mapping: a rewritten body changes when it changes (see headers.etag_*).
        self.fingerprint = hashlib.sha256(config.encode()).hexdigest()[:12]

    # -- resolution -----------------------------------------------------------------------

    def forward_target(self, host: str, scheme: str | None, port: int | None, context: str) -> Target | None:
        """What a vendor mention becomes (see the module docstring for the scheme rules)."""
        key = (host, scheme, port, context)
        try:
            return self._targets[key]
        except KeyError:
            pass
        found = self._forward_uncached(host, scheme, port, context)
        if len(self._targets) >= MEMO_LIMIT:
            self._targets.clear()
        self._targets[key] = found
        return found

    def _forward_uncached(self, host: str, scheme: str | None, port: int | None, context: str) -> Target | None:
        if not valid_host(host):
            return None
        name = self.proxy_name
        if host == name or host.endswith("." + name):
            # SECURITY: the proxy's own names are never vendor hosts, even under a vendor
            # domain that (mis)covers them: rewriting them would send the patron in circles.
            return None
        if scheme is not None:
            tries = [(scheme, port if port is not None else DEFAULT_PORTS[scheme])]
            if scheme == "http" and port in (None, 80):
                tries.append(("https", 443))  # upgrade: see the module docstring
        else:
            other = "http" if context == "https" else "https"
            tries = [(context, port if port is not None else DEFAULT_PORTS[context]),
                     (other, port if port is not None else DEFAULT_PORTS[other])]
        for s, p in tries:
            origin = Origin(s, host, p)
            if self.vendors.match(origin) is None:
                continue
            netloc = self.vendors.proxied_netloc(origin)
            if netloc is not None:
                return Target(self.proxy_scheme, netloc)
        return None

    def reverse_target(self, host: str, scheme: str | None, port: int | None) -> Target | None:
        """What a proxied mention (``label.<proxy host>``) becomes: the vendor origin it encodes.

        A mention without the proxy's port (``location.hostname``-style) maps to the bare vendor
        host name; a mention with any other port is not the proxy and is left alone.
        """
        name = self.proxy_name
        if not host.endswith("." + name) or "." in host[: -len(name) - 1]:
            return None
        hostname_only = False
        if self.proxy_port is not None:
            if port is None:
                hostname_only = True
            elif port != self.proxy_port:
                return None
        elif port is not None and port != DEFAULT_PORTS[self.proxy_scheme]:
            return None
        origin = self.vendors.origin_for_host(host + (f":{self.proxy_port}" if self.proxy_port else ""))
        if origin is None:
            return None
        return Target(origin.scheme, origin.host if hostname_only else origin.netloc)

    # -- matchers -------------------------------------------------------------------------

    def to_proxy(self, context_scheme: str = "https") -> Matcher:
        """The vendor -> proxy matcher for pages fetched over ``context_scheme``."""
        if context_scheme not in DEFAULT_PORTS:
            raise ValueError(f"context scheme must be http or https, not {context_scheme!r}")
        matcher = self._forward.get(context_scheme)
        if matcher is None:
            def resolve(host: str, scheme: str | None, port: int | None) -> Target | None:
                return self.forward_target(host, scheme, port, context_scheme)

            matcher = Matcher(self.forward_anchors, resolve)
            self._forward[context_scheme] = matcher
        return matcher

    def to_vendor(self) -> Matcher:
        """The proxy -> vendor matcher (request bodies, header values)."""
        if self._reverse is None:
            self._reverse = Matcher(self.reverse_anchors, self.reverse_target)
        return self._reverse

    # -- the literal forms, for tests and documentation ----------------------------------

    def patterns(self) -> list[Pattern]:
        """Every literal form of every configured origin (and domain apex), both ways.

        Hosts under a ``domains`` entry cannot be listed (any subdomain matches); they are
        handled by the matcher the same way as the apex listed here.
        """
        origins: set[Origin] = set()
        for vendor in self.vendors.vendors:
            origins.update(vendor.origins)
            for domain in vendor.domains:
                origins.update((Origin("https", domain, 443), Origin("http", domain, 80)))
        found: list[Pattern] = []
        for origin in sorted(origins, key=str):
            if self.vendors.match(origin) is None:
                continue
            netloc = self.vendors.proxied_netloc(origin)
            if netloc is None:
                continue
            ps = self.proxy_scheme
            v, p = origin.netloc, netloc
            ws_v = "wss" if origin.scheme == "https" else "ws"
            ws_p = "wss" if ps == "https" else "ws"
            forms = {
                "absolute": (f"{origin.scheme}://{v}/", f"{ps}://{p}/"),
                "websocket": (f"{ws_v}://{v}/", f"{ws_p}://{p}/"),
                "json": (f"{origin.scheme}:\\/\\/{v}\\/", f"{ps}:\\/\\/{p}\\/"),
                "percent": (f"{origin.scheme}%3A%2F%2F{v.replace(':', '%3A')}%2F",
                            f"{ps}%3A%2F%2F{p.replace(':', '%3A')}%2F"),
                "upper": (f"{origin.scheme.upper()}://{v.upper()}/", f"{ps}://{p}/"),
            }
            for form, (a, b) in forms.items():
                found.append(Pattern(origin, form, a.encode(), b.encode()))
        return found
