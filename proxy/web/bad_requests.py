"""The listener's answer to a request it cannot parse: generic, and one short line in the log.

aiohttp answers a request its parser refuses (a bad request line, a malformed header, a line over
``max_line_size``/``max_field_size``) outside the application: no middleware, no route, no
response hook sees it. By default (``RequestHandler.handle_error``, aiohttp 3.14) that answer is
``text/plain`` holding the parser's message, which quotes up to 100 bytes of the request, and the
same message goes to the ``aiohttp.server`` logger at ERROR with a traceback, once per request.

SECURITY: the quoted bytes can be the patron's session cookie. A vendor page's script can set
some 8 KB of cookies on the proxy's parent domain, make the browser send an over-long ``Cookie``
line, and read the ``HttpOnly`` session id back from the error body; and the log would keep it
(and paths, queries, header values) too.

``BadRequestHandler`` answers such a request with a fixed body (``400 Bad Request``, or ``431``
for a header line over the limit) and writes one line without a byte of the request (the error's
class name only), at most one a minute with the count of those held back
(``proxy.ratelog.RateLimitedLog``). The proxy's own errors (a handler raising: 500, a handler
timing out: 504) keep aiohttp's handling: a generic body and a scrubbed traceback.

aiohttp offers no option for this answer: ``BadRequestAppRunner`` (an ``AppRunner``) makes the
server build ``BadRequestHandler`` for every connection, with the same arguments
(``handler_args``, keep-alive, access log) it would have given aiohttp's own.
"""

from __future__ import annotations

import logging
import traceback
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from proxy.ratelog import RateLimitedLog

log = logging.getLogger("libproxy")

# One line a minute at most, whatever the rate of malformed requests (scanners, broken clients,
# or someone trying to fill the log).
INTERVAL = 60.0
_limited = RateLimitedLog(log, INTERVAL)

# The C parser's callbacks for a header line; a LineTooLong raised elsewhere is the request line.
_HEADER_CALLBACKS = frozenset({"cb_on_header_field", "cb_on_header_value", "parse_headers"})


def refusal_status(exc: HttpProcessingError) -> int:
    """431 for a header (a cookie, most often) over the limit, 414 for an over-long request
    target, 400 for everything else the parser refuses."""
    if not isinstance(exc, LineTooLong):
        return 400
    try:
        # Cython names its frames "aiohttp._http_parser.cb_on_url"; Python "parse_headers".
        names = {frame.name.rpartition(".")[2] for frame in traceback.extract_tb(exc.__traceback__)}
    except Exception:  # never let the answer to a bad request fail on its own account
        return 400
    if names & _HEADER_CALLBACKS:
        return 431
    return 414 if "cb_on_url" in names else 400


def refusal(status: int) -> web.Response:
    """The whole answer: the status and its phrase, nothing of the request; the connection closes."""
    phrase = HTTPStatus(status).phrase
    response = web.Response(status=status, text=f"{status} {phrase}\n", content_type="text/plain")
    response.force_close()
    return response


class BadRequestHandler(RequestHandler):
    """aiohttp's connection handler, with a generic answer to requests its parser refuses."""

    __slots__ = ()

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # The parser's refusals reach here with 400 and the parser's exception (web_protocol's
        # _ErrInfo); the application's own errors come with 500/504.
        if status != 400 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        answer = refusal_status(exc)
        # SECURITY: the exception's message quotes the request; its class name does not.
        _limited.warning("refused a malformed request with %d (%s)", answer, type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent on this connection")
        return refusal(answer)


class ParserErrorFilter(logging.Filter):
    """On the ``aiohttp.server`` logger: a parser refusal logged by a listener not built by
    ``BadRequestAppRunner`` (aiohttp's own ``handle_error``: ERROR, a traceback quoting the
    request) becomes the same rate-limited line; every other record passes unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not is_parser_error(record):
            return True
        _limited.warning("refused a malformed request with %d (%s)", 400, "aiohttp's own answer")
        return False


def is_parser_error(record: logging.LogRecord) -> bool:
    """Whether ``record`` is aiohttp reporting a request its parser refused."""
    if not str(record.msg).startswith("Error handling request"):
        return False
    if record.exc_info is not None and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        return isinstance(exc, HttpProcessingError) and _raised_by_aiohttp_alone(exc)
    # The record factory (records/logsetup.py) leaves only the scrubbed traceback's text, whose
    # exception line starts at the left margin with the exception's module and class.
    return any(line.startswith("aiohttp.http_exceptions.") for line in (record.exc_text or "").splitlines())


_PACKAGE = str(Path(__file__).resolve().parents[1])  # the proxy package's own files


def _raised_by_aiohttp_alone(exc: BaseException) -> bool:
    """True when no frame of the traceback is the proxy's: a refusal of the parser as it read
    the request. A handler of the proxy reading a malformed upload body gets the same kind of
    exception through its own frames: that is its 500, whose traceback must stay in the log."""
    try:
        frames = traceback.extract_tb(exc.__traceback__)
    except Exception:
        return True
    return not any(frame.filename.startswith(_PACKAGE) for frame in frames)


def quiet_parser_errors(logger: logging.Logger | None = None) -> None:
    """Install ``ParserErrorFilter`` on ``aiohttp.server`` (once)."""
    target = logger or logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ParserErrorFilter) for f in target.filters):
        target.addFilter(ParserErrorFilter())


class BadRequestServer(web.Server):
    """A ``web.Server`` whose connections are handled by ``BadRequestHandler``."""

    def __call__(self) -> RequestHandler:
        return BadRequestHandler(self, loop=self._loop, **self._kwargs)


class BadRequestAppRunner(web.AppRunner):
    """``web.AppRunner`` serving the application through ``BadRequestServer``."""

    __slots__ = ()

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        # The application's server, rebuilt with the same request handler, request factory
        # (the application's) and per-connection arguments.
        server_kwargs: dict[str, Any] = dict(made._kwargs)
        return BadRequestServer(made.request_handler, request_factory=made.request_factory,
                                handler_cancellation=made.handler_cancellation, loop=made._loop,
                                **server_kwargs)
