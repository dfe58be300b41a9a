"""Streaming body rewriting: vendor host names to proxied host names, chunk by chunk.

Use one ``BodyRewriter`` per response body::

    rewriter = BodyRewriter(table.to_proxy(origin.scheme), rules=vendor_rules)
    async for chunk in upstream.content.iter_any():
        out = rewriter.feed(chunk)
        if out:
            await response.write(out)
    await response.write(rewriter.flush())

Contract:

* the concatenation of every ``feed`` result and the final ``flush`` result is exactly what
  rewriting the whole body at once gives, whatever the chunk boundaries (a mention split across
  two chunks is found);
* memory is bounded by the largest chunk plus a few KiB, never by the body size: the rewriter
  holds back at most ``BATCH + MAX_MENTION`` bytes, so ``feed`` may return ``b""`` for small
  chunks and output lags input by up to that much;
* time is linear in the body size, for any input (no backtracking, per-hit work bounded);
* the body's length changes, so ``Content-Length`` must be dropped (send chunked) and a
  validator changed (see ``headers.etag_for_rewritten``); a ``Range`` request cannot be served
  from a rewritten body, so the caller must not forward ``Range``/``If-Range`` for types that it
  rewrites (or must pass such responses through untouched).

Bodies are bytes in whatever ASCII-compatible charset the vendor uses (UTF-8, Latin-1,
Windows-1252, ...); host names are ASCII, so no decoding is needed. UTF-16 and UTF-32 bodies are
not rewritten (``is_rewritable`` says so): the CSP the proxy adds is then the only guard.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from proxy.rewrite.hosts import CONTEXT, Matcher

# SECURITY: input is gathered into batches of at least this size before it is searched: with
# tiny chunks (a vendor dribbling bytes) the held-back tail would be re-searched for every byte.
BATCH: Final = 16 * 1024
MAX_RULE: Final = 4096  # longest "find" text of a vendor rule


@dataclass(frozen=True, slots=True)
class FindReplace:
    """A per-vendor literal rule, like EZproxy's Find/Replace: every ``find`` becomes ``replace``.

    Rules run in order on the vendor's bytes *before* host rewriting, so they are written in the
    vendor's terms (``Find location.hostname`` / ``Replace location.host``), and a host name in a
    replacement is itself rewritten afterwards. Matching is exact (case-sensitive, no patterns).
    """

    find: bytes
    replace: bytes

    def __post_init__(self) -> None:
        if not self.find:
            raise ValueError("a find/replace rule needs a non-empty find text")
        if len(self.find) > MAX_RULE:
            raise ValueError(f"a find text is limited to {MAX_RULE} bytes")


class _LiteralStage:
    """Streaming ``bytes.replace`` of one literal, holding back a possible partial match."""

    __slots__ = ("_find", "_keep", "_replace", "_tail")

    def __init__(self, rule: FindReplace) -> None:
        self._find = rule.find
        self._replace = rule.replace
        self._keep = len(rule.find) - 1
        self._tail = b""

    def feed(self, data: bytes) -> bytes:
        buf = self._tail + data if self._tail else data
        # split() finds the same leftmost, non-overlapping matches as replace(); only the bytes
        # after the last match can start a match that the next chunk completes.
        parts = buf.split(self._find)
        last = parts[-1]
        keep = min(len(last), self._keep)
        self._tail = last[len(last) - keep :]
        parts[-1] = last[: len(last) - keep]
        return self._replace.join(parts)

    def flush(self) -> bytes:
        tail, self._tail = self._tail, b""
        return tail  # shorter than the find text: cannot contain it


class _HostStage:
    """Runs a Matcher over a stream, keeping the undecided tail and a little emitted context."""

    __slots__ = ("_context", "_emitted", "_matcher", "_pending")

    def __init__(self, matcher: Matcher) -> None:
        self._matcher = matcher
        self._pending = b""
        self._context = b""
        self._emitted = False

    def run(self, data: bytes, final: bool) -> bytes:
        context = self._context
        buf = b"".join((context, self._pending, data)) if context or self._pending else data
        base = len(context)
        out, cut = self._matcher.rewrite(buf, base, not self._emitted, final)
        if cut > base:
            self._emitted = True
            self._context = buf[max(0, cut - CONTEXT) : cut]
        self._pending = buf[cut:]
        return out[0] if len(out) == 1 else b"".join(out)


class BodyRewriter:
    """Rewrites one body stream; see the module docstring for the contract.

    ``matcher`` is ``table.to_proxy(scheme)`` for vendor responses (``scheme`` being the scheme
    the vendor page was fetched over) or ``table.to_vendor()`` for request bodies; ``rules`` are
    the vendor's find/replace rules (vendor responses only). A rewriter is single-use.
    """

    __slots__ = ("_batch", "_batched", "_done", "_hosts", "_stages")

    def __init__(self, matcher: Matcher, rules: Sequence[FindReplace] = ()) -> None:
        self._stages = [_LiteralStage(rule) for rule in rules]
        self._hosts = _HostStage(matcher)
        self._batch: list[bytes] = []
        self._batched = 0
        self._done = False

    def feed(self, chunk: bytes) -> bytes:
        """Rewrite the next chunk; returns the bytes that are ready (possibly ``b""``)."""
        if self._done:
            raise RuntimeError("feed() after flush()")
        if not chunk:
            return b""
        if self._batched + len(chunk) < BATCH:
            self._batch.append(chunk)
            self._batched += len(chunk)
            return b""
        if self._batch:
            self._batch.append(chunk)
            chunk = b"".join(self._batch)
            self._batch.clear()
            self._batched = 0
        return self._run(chunk, final=False)

    def flush(self) -> bytes:
        """Rewrite and return everything still held back; the stream is over."""
        if self._done:
            return b""
        self._done = True
        data = b"".join(self._batch)
        self._batch.clear()
        return self._run(data, final=True)

    def finish(self, chunk: bytes) -> bytes:
        """``feed(chunk) + flush()`` in one step (and one copy fewer): the last chunk."""
        if self._done:
            raise RuntimeError("finish() after flush()")
        self._done = True
        if self._batch:
            self._batch.append(chunk)
            chunk = b"".join(self._batch)
            self._batch.clear()
        return self._run(chunk, final=True)

    def _run(self, data: bytes, final: bool) -> bytes:
        for stage in self._stages:
            data = stage.feed(data)
            if final:
                data += stage.flush()
        return self._hosts.run(data, final)


def rewrite_body(matcher: Matcher, data: bytes, rules: Sequence[FindReplace] = ()) -> bytes:
    """Rewrite a complete body at once (same result as streaming it)."""
    if rules or not data:
        return BodyRewriter(matcher, rules).finish(data)
    out, _ = matcher.rewrite(data, 0, True, True)  # what the stages do for one final buffer
    return out[0] if len(out) == 1 else b"".join(out)


# ---------------------------------------------------------------------------------------------
# Which bodies are rewritten

_REWRITTEN_TYPES: Final = frozenset({
    "application/xhtml+xml",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/json",
    "application/xml",
    "application/x-www-form-urlencoded",  # OAuth-style replies carrying redirect URLs
})
# An event stream must reach the browser as it is produced; holding back a tail for rewriting
# would delay every event, so it is passed through (the proxy's CSP still applies).
_NEVER_REWRITTEN: Final = frozenset({"text/event-stream"})
# Charsets in which ASCII host names are not stored as ASCII bytes.
_WIDE_CHARSETS: Final = ("utf-16", "utf-32", "ucs-2", "ucs-4", "utf16", "utf32")


# Both are pure functions of a header value; a vendor sends a handful of distinct ones. The cache
# is bounded, so odd values cannot grow it.
@functools.lru_cache(maxsize=256)
def media_type(content_type: str | None) -> tuple[str, str | None]:
    """(lower-case type/subtype, lower-case charset or None) of a Content-Type value."""
    if not content_type:
        return "", None
    parts = content_type.split(";")
    mtype = parts[0].strip().lower()
    charset: str | None = None
    for param in parts[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower() or None
    return mtype, charset


@functools.lru_cache(maxsize=256)
def is_rewritable(content_type: str | None) -> bool:
    """True for bodies whose host names are rewritten; False means pass the bytes through.

    Rewritten: ``text/*`` (HTML, CSS, JavaScript, plain text, XML, CSV, ...) except
    ``text/event-stream``; ``application/`` JavaScript, JSON, XML, XHTML and
    ``x-www-form-urlencoded``; any ``+json`` or ``+xml`` type (``ld+json``, ``rss+xml``,
    ``image/svg+xml``, which carries links and scripts). Not rewritten: everything else (PDF,
    images, audio, video, fonts, archives, ``application/octet-stream``), a missing
    Content-Type (it may be binary; the proxy's CSP still applies), and UTF-16/UTF-32 text.
    """
    mtype, charset = media_type(content_type)
    if not mtype or mtype in _NEVER_REWRITTEN:
        return False
    if charset is not None and charset.startswith(_WIDE_CHARSETS):
        return False
    if mtype.startswith("text/") or mtype in _REWRITTEN_TYPES:
        return True
    return mtype.endswith(("+json", "+xml"))
