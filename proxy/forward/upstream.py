"""The upstream client for the commonest exchange: a GET or HEAD without a body.

Most of what a patron's browser asks a vendor for is a GET without a body (pages, scripts,
styles, images, API reads). aiohttp's full client spends more CPU on each of those than the rest
of the proxy's own work (``bench/bench_servers.py``: its pass-through at 159 µs per 1 KiB
answer, the same server with a client of a few lines at 68 µs), in layers the proxy does not
use: a cookie jar, redirects, tracing, proxies from the environment, body encoders, middlewares.
This client keeps only the parts that matter and reuses aiohttp's own pieces for them:

* the connection protocol (``aiohttp.client_proto.ResponseHandler``) with its response parser
  (llhttp, the C parser; its line, field and header-count limits), read timeout, flow control
  and payload stream, so answers are read exactly as the full client reads them;
* connections kept alive per (scheme, host, port), at most ``connections_per_host`` idle, closed
  after 15 s unused; a kept-alive connection the vendor closed meanwhile is replaced once,
  transparently (GET and HEAD are safe to send again);
* names resolved through the proxy's egress resolver (no private or loopback answers, see
  client.py) and cached for 60 s; TLS with the system's trust store and certificate checks;
* the same errors as the full client (``aiohttp.ClientError``, ``OSError``, ``TimeoutError``),
  so the forwarder handles both alike.

Everything else (a body to send, other methods, WebSockets, ``check-vendor``) goes through the
full client: uploads need a writer beside the reader, and are rare.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Protocol

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_proto import ResponseHandler
from aiohttp.http import HttpProcessingError
from multidict import CIMultiDictProxy

from proxy.vendors import Origin

KEEPALIVE = 15.0  # seconds an idle connection is kept (aiohttp's default too)
DNS_TTL = 60.0
READ_BUFSIZE = 2**16
LEAN_METHODS = frozenset({"GET", "HEAD"})

# SECURITY: a header name or value with a line break or NUL would end the header early and
# let the rest be read as another header or request (request splitting): such are refused.
_UNSAFE = re.compile(r"[\r\n\x00]")
# The request target as the listener accepted it (origin-form), without spaces or controls.
_TARGET = re.compile(r"/[\x21-\x7e]*")


class Answer(Protocol):
    """What the forwarder reads of an upstream answer: both clients' answers have it."""

    status: int
    reason: str | None
    content: aiohttp.StreamReader

    @property
    def headers(self) -> CIMultiDictProxy[str]: ...

    @property
    def content_length(self) -> int | None: ...

    async def read(self) -> bytes: ...


class UnsafeRequest(aiohttp.ClientError):
    """A header or target that cannot be written safely on the wire."""


class AllConnectionsBusy(aiohttp.ClientConnectionError):
    """Every one of ``[upstream] connections`` stayed in use for the whole wait: the proxy is
    busy, not the vendor down."""


class LeanAnswer:
    """An answer read by ``LeanClient``; leaving ``async with`` gives its connection back (kept
    alive when the answer was read to its end and the vendor allows it, closed otherwise)."""

    __slots__ = ("_client", "_key", "_protocol", "content", "headers", "reason", "status")

    def __init__(self, status: int, reason: str | None, headers: CIMultiDictProxy[str],
                 content: aiohttp.StreamReader, client: LeanClient, key: tuple[str, str, int],
                 protocol: ResponseHandler) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content = content
        self._client = client
        self._key = key
        self._protocol: ResponseHandler | None = protocol

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        if value is None or not value.isdigit():
            return None
        return int(value)

    async def read(self) -> bytes:
        return await self.content.read()

    def release(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is None:
            return
        # A 101 (no upgrade was asked: the vendor thinks the protocol changed) never goes back.
        if self.content.is_eof() and not protocol.should_close and self.status != 101:
            self._client._keep(self._key, protocol)
        else:
            protocol.close()
        self._client._slots.release()

    async def __aenter__(self) -> LeanAnswer:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.release()


class LeanClient:
    """GET and HEAD to vendors over kept-alive HTTP/1.1 connections (see the module's text)."""

    def __init__(self, resolver: AbstractResolver, *, connect_timeout: float, read_timeout: float,
                 idle_per_host: int, limit: int = 200, wait: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._resolver = resolver
        # [upstream] connections: exchanges in flight to all vendors at once; one more waits
        # up to ``wait`` seconds for one to end (each vendor host has its own, smaller share).
        self._slots = asyncio.Semaphore(max(1, limit))
        self._wait = wait
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._idle_per_host = max(1, idle_per_host)
        # The system's trust store with hostname checks. Loading it reads files: the app makes
        # it in a thread and passes it in (see app.py); made here only when none is given.
        self._ssl = ssl_context if ssl_context is not None else ssl.create_default_context()
        self._idle: dict[tuple[str, str, int], list[tuple[ResponseHandler, float]]] = {}
        self._names: dict[tuple[str, int], tuple[float, list[ResolveResult]]] = {}
        self._lookups: dict[tuple[str, int], asyncio.Future[list[ResolveResult]]] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(self, method: str, origin: Origin, target: str, headers: Mapping[str, str]) -> LeanAnswer:
        """Send ``method target`` with exactly ``headers`` (Host among them) and read the answer's
        head; the body is then read from ``content``. Raises as aiohttp's client does."""
        if not _TARGET.fullmatch(target):
            raise UnsafeRequest("request target")
        head = _head(method, target, headers)
        key = (origin.scheme, origin.host, origin.port)
        slots = self._slots
        if slots.locked():
            try:
                async with asyncio.timeout(self._wait):
                    await slots.acquire()
            except TimeoutError:
                raise AllConnectionsBusy("every upstream connection is in use") from None
        else:
            await slots.acquire()  # free: no suspension
        try:
            protocol = self._take(key)
            if protocol is not None:
                try:
                    return await self._exchange(protocol, method, head, key)
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                    # The vendor closed the kept-alive connection while it was idle (its own
                    # keep-alive ran out): GET and HEAD are safe to send again, once, afresh.
                    pass
            protocol = await self._connect(origin)
            return await self._exchange(protocol, method, head, key)
        except BaseException:
            slots.release()  # no answer holds it
            raise

    async def _exchange(self, protocol: ResponseHandler, method: str, head: bytes,
                        key: tuple[str, str, int]) -> LeanAnswer:
        try:
            protocol.set_response_params(skip_payload=method == "HEAD", read_until_eof=True, auto_decompress=False,
                                         read_timeout=self._read_timeout, read_bufsize=READ_BUFSIZE)
            transport = protocol.transport
            if transport is None:
                raise aiohttp.ServerDisconnectedError()
            transport.write(head)
            protocol.start_timeout()
            # SECURITY: the read timeout restarts with every byte; a head trickled a byte at a
            # time would hold the patron's request (and a connection slot) for ever. The whole
            # head must arrive within it.
            async with asyncio.timeout(self._read_timeout):
                while True:
                    try:
                        message, payload = await protocol.read()
                    except HttpProcessingError as exc:
                        # A malformed answer (bad framing, oversized header): the vendor is broken.
                        raise aiohttp.ClientPayloadError(f"malformed answer: {exc.message}") from None
                    # Informational answers (100, 103 Early Hints) precede the real one.
                    if not 100 <= message.code <= 199 or message.code == 101:
                        break
        except BaseException:
            protocol.close()
            raise
        return LeanAnswer(message.code, message.reason, message.headers, payload, self, key, protocol)

    # -- connections ----------------------------------------------------------------------------

    def _take(self, key: tuple[str, str, int]) -> ResponseHandler | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            protocol, since = idle.pop()
            if _usable(protocol, since, now):
                return protocol
            protocol.close()
        return None

    def _keep(self, key: tuple[str, str, int], protocol: ResponseHandler) -> None:
        idle = self._idle.setdefault(key, [])
        if self._closed or len(idle) >= self._idle_per_host or not protocol.is_connected():
            protocol.close()
            return
        idle.append((protocol, time.monotonic()))
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(KEEPALIVE, self._sweep_idle)

    def _sweep_idle(self) -> None:
        """Close connections idle for KEEPALIVE seconds; again later while any are kept."""
        self._sweep = None
        now = time.monotonic()
        for key, idle in list(self._idle.items()):
            fresh = []
            for protocol, since in idle:
                if _usable(protocol, since, now):
                    fresh.append((protocol, since))
                else:
                    protocol.close()
            if fresh:
                self._idle[key] = fresh
            else:
                del self._idle[key]
        if self._idle and not self._closed:
            self._sweep = asyncio.get_running_loop().call_later(KEEPALIVE, self._sweep_idle)

    async def _connect(self, origin: Origin) -> ResponseHandler:
        loop = asyncio.get_running_loop()
        https = origin.scheme == "https"
        context = None
        if https:
            context = self._ssl
        last: BaseException | None = None
        try:
            # The name's lookup and every address tried share one connect timeout (as in
            # aiohttp's client): a slow DNS must not hold a slot longer than a slow vendor.
            async with asyncio.timeout(self._connect_timeout):
                for address in await self._resolve(origin.host, origin.port):
                    try:
                        _, protocol = await loop.create_connection(
                            lambda: ResponseHandler(loop), address["host"], address["port"],
                            family=address["family"], ssl=context, server_hostname=origin.host if https else None)
                        return protocol
                    except OSError as exc:
                        last = exc
        except TimeoutError:
            raise aiohttp.ConnectionTimeoutError(f"connecting to {origin.netloc} timed out") from None
        if last is None:
            raise aiohttp.ClientOSError(f"no address for {origin.host}")
        raise last

    async def _resolve(self, host: str, port: int) -> list[ResolveResult]:
        now = time.monotonic()
        cached = self._names.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            # Requests for one name at once share its lookup (a burst after the cache expired
            # would otherwise send as many lookups to the resolver's threads).
            pending = self._lookups.get((host, port))
            if pending is None:
                pending = asyncio.ensure_future(self._resolver.resolve(host, port, socket.AF_UNSPEC))
                self._lookups[(host, port)] = pending
                pending.add_done_callback(lambda _: self._lookups.pop((host, port), None))
            found = await asyncio.shield(pending)
        else:
            # An address the administrator wrote as the vendor's host is trusted as written
            # (as the full client does); only names are checked by the egress resolver.
            family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
            found = [ResolveResult(hostname=host, host=str(literal), port=port, family=family, proto=0,
                                   flags=socket.AI_NUMERICHOST)]
        if len(self._names) > 1000:
            self._names.clear()
        self._names[(host, port)] = (now + DNS_TTL, found)
        return found

    async def close(self) -> None:
        self._closed = True
        for lookup in list(self._lookups.values()):
            lookup.cancel()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for idle in self._idle.values():
            for protocol, _ in idle:
                with contextlib.suppress(Exception):
                    protocol.close()
        self._idle.clear()


def _usable(protocol: ResponseHandler, since: float, now: float) -> bool:
    """An idle kept connection that may carry the next request: still open, kept less than
    KEEPALIVE seconds, and silent since (should_close: the vendor sent something meanwhile, an
    answer nobody asked for that would be read as the next request's)."""
    return protocol.is_connected() and not protocol.should_close and now - since < KEEPALIVE


def _head(method: str, target: str, headers: Mapping[str, str]) -> bytes:
    fields = [f"{name}: {value}" for name, value in headers.items()]
    # One search over every field at once (each is a name and a value, and ": " is safe).
    if _UNSAFE.search("".join(fields)):
        raise UnsafeRequest("a header name or value with a line break or NUL")
    fields.append("\r\n")
    parts = [f"{method} {target} HTTP/1.1\r\n", "\r\n".join(fields)]
    # The listener decoded the browser's header bytes as UTF-8 (surrogates for anything else):
    # encoded back the same way, they leave exactly as they came.
    try:
        return "".join(parts).encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no decoding of bytes could have made
        raise UnsafeRequest("a header value that is not text") from None
