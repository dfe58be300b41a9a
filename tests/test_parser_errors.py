"""Requests the listener cannot parse: a generic answer that echoes nothing of the request, and
one short, rate-limited log line that holds none of its bytes.

A real ``python -m proxy serve`` process on loopback, sent raw bytes with sockets (the answers
aiohttp's parser gives never pass through the application, so only the running listener shows
them), and the scrubber on the messages aiohttp's own parser produces.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpRequestParser

from proxy.records.scrub import scrub, scrub_traceback
from tests.scale_support import port_open, wait_for
from tests.support import PROXY_HOST, free_port, write_patrons

ROOT = Path(__file__).resolve().parent.parent


def _marker() -> str:
    # Letters only: nothing the scrubber removes for other reasons (no digits, no "=", no "/").
    return "zq" + "".join(random.choices(string.ascii_lowercase, k=18))


@dataclass
class Served:
    port: int
    log: Path
    proc: subprocess.Popen[bytes]
    staff: int  # the staff listener's port

    def mark(self) -> int:
        return self.log.stat().st_size

    def log_since(self, offset: int, settle: float = 0.3) -> str:
        time.sleep(settle)  # the proxy writes its line after the answer
        with self.log.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("parser-errors")
    write_patrons(tmp / "patrons.toml")
    port, staff = free_port(), free_port()
    config = tmp / "proxy.toml"
    config.write_text(f"""
[proxy]
listen = "127.0.0.1:{port}"
host = "{PROXY_HOST}"
state_dir = "{tmp / 'state'}"
shutdown_deadline = "5s"

[library]
id = "wolcott.lib.ct.us"
name = "Wolcott Public Library"

[patrons]
source = "local"
file = "{tmp / 'patrons.toml'}"

[sessions]
store = "memory"

[admin]
listen = "127.0.0.1:{staff}"

[[vendor]]
id = "echo"
title = "Echo"
start = "https://vendor.example/"
hosts = ["https://vendor.example"]
groups = ["wolcott"]
""", encoding="utf-8")
    log = tmp / "proxy.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(config)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    try:
        wait_for(lambda: (port_open(port) and port_open(staff)) or proc.poll() is not None, 60,
                 "the proxy to listen")
        assert proc.poll() is None, log.read_text()
        yield Served(port, log, proc, staff)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _raw(port: int, payload: bytes) -> tuple[int, bytes, bytes]:
    """Send ``payload`` as it is; returns (status, body, the whole answer) once the proxy closes."""
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionError:
                break
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    assert len(status_line) >= 2, data[:200]
    return int(status_line[1]), body, data


def _assert_clean(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, (secret, text[-2000:])


def test_overlong_cookie_answers_generically_and_logs_no_session_id(served: Served) -> None:
    sid = _marker()
    mark = served.mark()
    status, body, answer = _raw(served.port, (
        f"GET /x HTTP/1.1\r\nHost: {PROXY_HOST}\r\nCookie: libproxy={sid}; pad={'x' * 9000}\r\n\r\n"
    ).encode())
    assert status == 431
    assert body == b"431 Request Header Fields Too Large\n"
    _assert_clean(answer.decode("latin-1"), sid, "libproxy=", "pad=", "xxxxxxxx")
    assert b"Got more than" not in body
    log = served.log_since(mark)
    _assert_clean(log, sid, "libproxy=", "pad=", "xxxxxxxx", "Traceback")
    # The same for the secure cookie name.
    mark = served.mark()
    status, body, answer = _raw(served.port, (
        f"GET /x HTTP/1.1\r\nHost: {PROXY_HOST}\r\nCookie: __Host-libproxy={sid}{'y' * 9000}\r\n\r\n"
    ).encode())
    assert status == 431
    _assert_clean(answer.decode("latin-1"), sid, "__Host-libproxy", "yyyyyyyy")
    _assert_clean(served.log_since(mark), sid, "__Host-libproxy", "yyyyyyyy", "Traceback")


def test_the_staff_listener_answers_generically_too(served: Served) -> None:
    """Browsers send a proxy cookie to the staff port as well (cookies ignore ports)."""
    sid = _marker()
    mark = served.mark()
    status, body, answer = _raw(served.staff, (
        f"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: libproxy={sid}; pad={'x' * 9000}\r\n\r\n"
    ).encode())
    assert status == 431 and body == b"431 Request Header Fields Too Large\n"
    _assert_clean(answer.decode("latin-1"), sid, "libproxy=", "pad=")
    _assert_clean(served.log_since(mark), sid, "libproxy=", "pad=", "Traceback")


@pytest.mark.parametrize(("request_head", "expected"), [
    ("GET /a'{m}-diagnosis HTTP/1.2\r\nHost: {h}\r\n\r\n", 400),  # a bad version, a quote in the path
    ("GET /{m}?card=1 HTTP/1.1\r\nHost: {h}\r\nX-A : {m}\r\n\r\n", 400),  # a space before the colon
    ("GET /x HTTP/1.1\r\nHost: {h}\r\nX-Card: 7391 {m}\x00\r\n\r\n", 400),  # a NUL in a header value
    ("GET /x HTTP/1.1\r\nHost: {h}\r\nX-{m}\x01: v\r\n\r\n", 400),  # a control byte in a header name
    ("G{m} /x HTTP/1.1\r\nHost: {h}\r\n\r\n", 400),  # a bad method
    ("GET /{m}" + "u" * 9000 + " HTTP/1.1\r\nHost: {h}\r\n\r\n", 414),  # an over-long target
    ("POST /x HTTP/1.1\r\nHost: {h}\r\nContent-Length: 1\r\nContent-Length: 2\r\nX-{m}: v\r\n\r\nab", 400),
], ids=["version", "space-colon", "nul", "control-name", "method", "long-target", "two-lengths"])
def test_malformed_request_answers_generically_and_logs_no_bytes(served: Served, request_head: str,
                                                                 expected: int) -> None:
    marker = _marker()
    mark = served.mark()
    status, body, answer = _raw(served.port, request_head.format(m=marker, h=PROXY_HOST).encode("latin-1"))
    assert status == expected
    assert body == f"{expected} {HTTPStatus(expected).phrase}\n".encode()
    _assert_clean(answer.decode("latin-1"), marker, "diagnosis", "7391", "uuuuuuuu")
    _assert_clean(served.log_since(mark), marker, "diagnosis", "7391", "uuuuuuuu", "Traceback", PROXY_HOST)


def test_fifty_bad_requests_make_at_most_a_few_log_lines(served: Served) -> None:
    mark = served.mark()
    for n in range(50):
        status, _, _ = _raw(served.port, f"GET /x HTTP/1.1\r\nHost: {PROXY_HOST}\r\nX-B{n} : v\r\n\r\n".encode())
        assert status == 400
    lines = [line for line in served.log_since(mark).splitlines() if line.strip()]
    assert len(lines) <= 3, lines
    assert served.proc.poll() is None


# -- the same, in process: the runner serve uses, and the records it writes -------------------------


@pytest.fixture
def fresh_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rate limit starts afresh: what another test logged does not hold this one's line back."""
    from proxy.ratelog import RateLimitedLog
    from proxy.web import bad_requests

    monkeypatch.setattr(bad_requests, "_limited", RateLimitedLog(bad_requests.log, bad_requests.INTERVAL))


async def _serve_in_process(runner: web.AppRunner, *payloads: bytes) -> list[tuple[int, bytes, bytes]]:
    import asyncio

    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        return [await asyncio.to_thread(_raw, port, payload) for payload in payloads]
    finally:
        await runner.cleanup()


def _app() -> web.Application:
    return web.Application(handler_args={"max_field_size": 8190, "max_line_size": 8190})


def _cookie_payload(sid: str) -> bytes:
    return f"GET /x HTTP/1.1\r\nHost: {PROXY_HOST}\r\nCookie: libproxy={sid}; pad={'x' * 9000}\r\n\r\n".encode()


async def test_in_process_runner_answers_generically_and_logs_one_short_line(
        caplog: pytest.LogCaptureFixture, fresh_limit: None) -> None:
    from proxy.web.bad_requests import BadRequestAppRunner

    sid = _marker()
    with caplog.at_level(logging.DEBUG):
        replies = await _serve_in_process(BadRequestAppRunner(_app(), access_log=None), _cookie_payload(sid),
                                          *[b"GET /a'cancer HTTP/1.2\r\n\r\n"] * 20)
    status, body, answer = replies[0]
    assert status == 431
    assert body == b"431 Request Header Fields Too Large\n"
    _assert_clean(answer.decode("latin-1"), sid, "libproxy=", "pad=")
    assert {r[0] for r in replies[1:]} == {400}
    records = [r for r in caplog.records if r.name.startswith(("aiohttp", "libproxy"))]
    assert len(records) == 1, [r.getMessage() for r in records]
    [record] = records
    assert record.name == "libproxy" and record.levelno == logging.WARNING
    assert not record.exc_info and not record.exc_text
    assert record.getMessage() == "refused a malformed request with 431 (LineTooLong)"


async def test_a_plain_runner_s_parser_errors_become_the_same_short_line(
        caplog: pytest.LogCaptureFixture, fresh_limit: None) -> None:
    """A listener left with aiohttp's own answer (the staff console's): its ERROR record with a
    traceback quoting the request is replaced by the rate-limited line."""
    from proxy.web.bad_requests import ParserErrorFilter, quiet_parser_errors

    server_log = logging.getLogger("aiohttp.server")
    quiet_parser_errors()
    quiet_parser_errors()  # once only
    try:
        assert sum(isinstance(f, ParserErrorFilter) for f in server_log.filters) == 1
        sid = _marker()
        with caplog.at_level(logging.DEBUG):
            await _serve_in_process(web.AppRunner(_app(), access_log=None), _cookie_payload(sid),
                                    *[b"GET /x HTTP/1.1\r\nX-A : cancer\r\n\r\n"] * 20)
    finally:
        for f in [f for f in server_log.filters if isinstance(f, ParserErrorFilter)]:
            server_log.removeFilter(f)
    records = [r for r in caplog.records if r.name.startswith(("aiohttp", "libproxy"))]
    assert [(r.name, r.levelno) for r in records] == [("libproxy", logging.WARNING)], [r.getMessage() for r in records]
    _assert_clean(caplog.text, sid, "libproxy=", "pad=", "cancer", "Traceback")


def test_the_filter_lets_other_records_through() -> None:
    from proxy.web.bad_requests import is_parser_error

    def record(msg: str, exc: BaseException | None = None, exc_text: str | None = None) -> logging.LogRecord:
        made = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, msg, (),
                                 (type(exc), exc, None) if exc is not None else None)
        made.exc_text = exc_text
        return made

    assert is_parser_error(record("Error handling request from %s", _parser_error(b"GET /x HTTP/1.2\r\n\r\n")))
    assert is_parser_error(record("Error handling request from [ip]", exc_text=(
        "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
        "aiohttp.http_exceptions.BadStatusLine: 400, message:\n  [bytes]")))
    assert not is_parser_error(record("Error handling request from %s", RuntimeError("a bug of ours")))
    assert not is_parser_error(record("Error handling request from [ip]", exc_text="Traceback ...\nKeyError: 'x'"))
    assert not is_parser_error(record("Unhandled exception", _parser_error(b"GET /x HTTP/1.2\r\n\r\n")))


# -- the scrubber: quoted request bytes go whole --------------------------------------------------------


class _Protocol:
    """Just enough of a protocol for aiohttp's request parser to raise its errors."""

    transport = None

    def __getattr__(self, name: str) -> object:
        return lambda *args, **kwargs: None


def _parser_error(data: bytes) -> HttpProcessingError:
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        parser = HttpRequestParser(_Protocol(), loop, 2**16, max_line_size=8190,  # type: ignore[arg-type]
                                   max_field_size=8190)
        try:
            parser.feed_data(data)
        except HttpProcessingError as exc:
            return exc
        raise AssertionError(f"the parser accepted {data!r}")
    finally:
        loop.close()


@pytest.mark.parametrize("data", [
    b"GET /a'cancerdiagnosis HTTP/1.2\r\n\r\n",
    b"GET /x HTTP/1.1\r\nX-A : cancerdiagnosis\r\n\r\n",
    b"GET /x HTTP/1.1\r\nX-Card: 7391 cancerdiagnosis\x00\r\n\r\n",
    b"GET /x HTTP/1.1\r\nCookie: libproxy=cancerdiagnosis; pad=" + b"x" * 9000 + b"\r\n\r\n",
    b"GET /x HTTP/1.1\r\nX-Note: \"cancerdiagnosis\" 'hiv' \x00\r\n\r\n",
])
def test_scrub_removes_the_request_bytes_aiohttp_quotes(data: bytes) -> None:
    exc = _parser_error(data)
    import traceback

    for text in (str(exc), repr(exc), exc.message, "".join(traceback.format_exception(exc))):
        for scrubbed in (scrub(text), scrub_traceback(text)):
            assert "cancerdiagnosis" not in scrubbed, scrubbed
            assert "7391" not in scrubbed and "hiv" not in scrubbed, scrubbed
        assert scrub(scrub(text)) == scrub(text)


@pytest.mark.parametrize(("text", "gone"), [
    ("Bad status line b'GET /a\\'cancer-diagnosis HTTP/1.2'", "cancer"),
    ('Invalid header: b"GET /a\'cancer-diagnosis HTTP/1.2"', "cancer"),
    ("GET /a'cancer-diagnosis HTTP/1.2", "cancer"),
    ("reading /a'cancer-diagnosis", "cancer"),
    ("see vendor.example/a'cancer-diagnosis", "cancer"),
    ("https://vendor.example/a'cancer-diagnosis", "cancer"),
    ("Invalid header token: b'X-A : cancer\\r\\n'", "cancer"),
    ("Invalid header value char: b'X-Card: 7391 hiv\\x00'", "hiv"),
    ("truncated b'libproxy=secretvalue; pad=xxxx", "secretvalue"),
    ("bytearray(b'cancer')", "cancer"),
    ("data=\"b'cancer'\"", "cancer"),
    ("b''b'cancer'", "cancer"),
    ("<BadHttpMessage: 400, message='Invalid:\\n  b\\'X-A : cancer\\'\\n ^'>", "cancer"),
])
def test_scrub_redacts_quoted_bytes_and_quotes_inside_paths(text: str, gone: str) -> None:
    out = scrub(text)
    assert gone not in out, out
    assert scrub(out) == out


@pytest.mark.parametrize("text", [
    "vendor 'ebsco' answered 502",
    "Bob's vendor 'web' and 'bb'",
    "reload: changes to [proxy] take effect at the next restart",
    "patron group 'b' unknown, sign-in refused for vendor jstor",  # a "b" after a quote, not closed
    'config [vendors.b] hosts: "b" is not a host',
])
def test_scrub_keeps_ordinary_quoted_words(text: str) -> None:
    assert scrub(text) == text


def test_the_filter_keeps_an_application_s_own_error_with_a_parser_exception() -> None:
    """A handler that met a malformed upload body raises a parser exception through its own
    frames: that 500's record and traceback pass; one raised by aiohttp alone is reduced."""
    from aiohttp.http_exceptions import TransferEncodingError

    import proxy
    from proxy.web.bad_requests import ParserErrorFilter

    # Raised from a frame of the proxy's own code (a handler reading the body).
    code = compile("raise TransferEncodingError('bad chunk')", str(Path(proxy.__file__).parent / "app.py"), "exec")
    try:
        exec(code, {"TransferEncodingError": TransferEncodingError})  # noqa: S102 (a fixed string of this test)
    except TransferEncodingError as exc:
        ours = exc
    record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request", (),
                               (type(ours), ours, ours.__traceback__))
    assert ParserErrorFilter().filter(record) is True
