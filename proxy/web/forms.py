"""Reading the forms of the proxy's own pages and of the staff console.

Every form the proxy serves is a small ``application/x-www-form-urlencoded`` one. aiohttp's
``request.post()`` reads whatever arrives: a chunked body has no Content-Length to check
beforehand, so only the application's overall cap bounded it; and a multipart body without a
boundary, a charset Python does not know, a compressed body or bytes that are not UTF-8 each
raised out of it as an unexpected error (a 500 with a traceback in the log). Here the body is
read under a size cap and a deadline whatever its framing, and anything malformed is a plain
400 (``BadInput``), said once, never a traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.http import HttpProcessingError, HttpVersion11
from multidict import MultiDict, MultiDictProxy

from proxy.errors import BadInput
from proxy.rewrite import media_type

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 100


async def read_form(request: web.Request, *, max_bytes: int, deadline: float,
                    too_large: str = "form-too-large") -> MultiDictProxy[str]:
    """The form's fields (the empty form for a body of another type: its CSRF check then fails
    as for any stale form). Raises BadInput: ``too_large`` (413) past ``max_bytes``,
    "slow-form" (408) past ``deadline`` seconds, "http-error" (400) when malformed."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise BadInput(too_large, 413)
    media, charset = media_type(request.headers.get("Content-Type"))
    if media != FORM_TYPE:
        return MultiDictProxy(MultiDict())
    if charset not in (None, "utf-8", "utf8", "us-ascii", "ascii") or "Content-Encoding" in request.headers:
        raise BadInput("http-error", 400)
    body = await _read_capped(request, max_bytes, deadline, too_large)
    try:
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, encoding="utf-8", errors="strict",
                          max_num_fields=MAX_FIELDS)
    except ValueError:  # not ASCII on the wire, not UTF-8 once decoded, or too many fields
        raise BadInput("http-error", 400) from None
    return MultiDictProxy(MultiDict(pairs))


async def _read_capped(request: web.Request, max_bytes: int, deadline: float, too_large: str) -> bytes:
    chunks: list[bytes] = []
    total = 0
    try:
        async with asyncio.timeout(deadline):
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                total += len(chunk)
                # SECURITY: counted as it arrives: a chunked body announces no length.
                if total > max_bytes:
                    raise BadInput(too_large, 413)
                chunks.append(chunk)
    except TimeoutError:
        raise BadInput("slow-form", 408) from None
    except HttpProcessingError:
        # Broken chunked framing mid-body: nothing more on this connection can be trusted.
        raise BadInput("malformed-request", 400) from None
    return b"".join(chunks)


ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


def expect_within(limit: Callable[[web.Request], int], refusal: Callable[[web.Request], web.StreamResponse]
                  ) -> ExpectHandler:
    """An ``Expect: 100-continue`` handler that invites the body only when its announced length
    is within ``limit(request)``, and otherwise answers ``refusal(request)`` (connection closed).

    SECURITY: aiohttp's default answers "100 Continue" before any check, inviting a body that is
    then refused (too large): the client sends it anyway and holds the connection."""

    async def handler(request: web.Request) -> web.StreamResponse | None:
        if request.headers.get("Expect", "").lower() != "100-continue":
            return web.Response(status=417, headers={"Connection": "close"})
        length = request.content_length
        if length is not None and length > limit(request):
            refused = refusal(request)
            refused.force_close()
            return refused
        if request.writer is not None and request.version >= HttpVersion11:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None

    return handler
