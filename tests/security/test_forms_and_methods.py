"""Hostile forms, methods and parameters on the proxy's own pages and the staff console: each is
a plain refusal (a 4xx page), never a 500, a traceback or a dropped connection."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
from pathlib import Path

import aiohttp
import pytest

from tests.security.conftest import World
from tests.staff_support import IT_NAME, IT_PASSWORD, StaffClient
from tests.support import PROXY_HOST, EchoVendor, free_port, run_proxy
from tests.test_staff_console import _config as staff_config

LOGIN_BODIES = [
    ("multipart without boundary", ["Content-Type: multipart/form-data"], b"card=1&pin=2"),
    ("multipart, broken", ["Content-Type: multipart/form-data; boundary=B"], b"--B\r\nbroken"),
    ("unknown charset", ["Content-Type: application/x-www-form-urlencoded; charset=x-nonexistent"], b"card=1"),
    ("utf-16 charset", ["Content-Type: application/x-www-form-urlencoded; charset=utf-16"], b"\xff\xfe\x00"),
    ("gzip body", ["Content-Type: application/x-www-form-urlencoded", "Content-Encoding: gzip"],
     gzip.compress(b"card=1&pin=2")),
    ("not UTF-8 once decoded", ["Content-Type: application/x-www-form-urlencoded"], b"card=%ff%fe&pin=1"),
    ("raw 8-bit bytes", ["Content-Type: application/x-www-form-urlencoded"], b"card=\xff&pin=1"),
    ("a thousand fields", ["Content-Type: application/x-www-form-urlencoded"], b"&".join([b"a=1"] * 1000)),
]


def _no_unexpected(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r.getMessage() for r in caplog.records
           if r.levelno >= logging.ERROR or "unexpected error" in r.getMessage() or r.exc_info]
    assert not bad, bad


@pytest.mark.parametrize(("case", "headers", "body"), LOGIN_BODIES, ids=[c[0] for c in LOGIN_BODIES])
async def test_malformed_sign_in_forms_are_refused_plainly(world: World, case: str, headers: list[str], body: bytes,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    status, _, text = await world.fetch("/login", host=PROXY_HOST, method="POST", headers=tuple(headers), body=body)
    assert 400 <= status < 500, (case, status, text[:300])
    # Signing out needs no form field: its page, or a refusal, never an error.
    status, _, text = await world.fetch("/logout", host=PROXY_HOST, method="POST", headers=tuple(headers), body=body)
    assert status < 500, (case, status, text[:300])
    _no_unexpected(caplog)


async def test_a_chunked_sign_in_form_is_capped_as_it_arrives(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """The 16 KiB cap holds without a Content-Length: a chunked form is counted as it arrives."""
    caplog.set_level(logging.INFO)
    piece = b"a=" + b"x" * 4094
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(64)) + b"0\r\n\r\n"  # 256 KiB
    head = world.request_head("POST", "/login", "Content-Type: application/x-www-form-urlencoded",
                              "Transfer-Encoding: chunked", host=PROXY_HOST, cookie=False)
    reply = await world.raw(head + b"\r\n" + chunks)
    assert reply.status == 413, reply.data[:300]
    _no_unexpected(caplog)


async def test_a_language_link_with_a_line_break_is_answered(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """``next=/x%0A``: "$" matched before the final newline, the Location header got a line
    break and aiohttp dropped the connection without an answer."""
    caplog.set_level(logging.INFO)
    for target in ("/language/es?next=/x%0A", "/language/es?next=/x%0D%0ASet-Cookie:%20a=b", "/language/es?next=/x%0D"):
        status, headers, _ = await world.fetch(target, host=PROXY_HOST, cookie=None)
        assert 300 <= status < 400, (target, status)
        assert "\n" not in headers.get("location", "") and "set-cookie: a" not in str(headers).lower()
        assert not headers.get("location", "/").startswith("/x"), headers  # refused: back to a default page
    _no_unexpected(caplog)


async def test_a_deeply_nested_csp_report_is_ignored(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    body = b"[" * 5000 + b"]" * 5000
    status, _, _ = await world.fetch("/csp-report", host=PROXY_HOST, method="POST", cookie=None,
                                     headers=("Content-Type: application/csp-report",), body=body)
    assert status < 500
    _no_unexpected(caplog)


@pytest.mark.parametrize("method", ["CONNECT", "TRACE"])
async def test_connect_and_trace_never_reach_a_vendor(world: World, method: str) -> None:
    mark = world.mark()
    for path in ("/echo/attack", "/help/attack"):  # signed in, and an anonymous path
        status, _, _ = await world.fetch(path, method=method)
        assert status == 405, (method, path, status)
    assert world.since(mark) == []


async def test_malformed_staff_forms_are_refused_plainly(tmp_path: Path, echo: EchoVendor,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    port = free_port()
    async with run_proxy(staff_config(tmp_path, echo, port)):
        it = StaffClient(port)
        await it.sign_in(IT_NAME, IT_PASSWORD)
        try:
            for headers, body in (({"Content-Type": "multipart/form-data"}, b"x"),
                                  ({"Content-Type": "application/x-www-form-urlencoded; charset=x-nonexistent"},
                                   b"name=a"),
                                  ({"Content-Type": "application/x-www-form-urlencoded"}, b"name=%ff")):
                for path in ("/login", "/it/lookup"):
                    async with it.http.post(it.base + path, data=body, headers=headers) as reply:
                        assert 400 <= reply.status < 500, (path, headers, reply.status)
            # A form larger than the console's cap, chunked, is refused as it arrives.
            async def endless() -> object:
                for _ in range(64):
                    yield b"candidate=" + b"x" * 65536
                    await asyncio.sleep(0)

            with contextlib.suppress(aiohttp.ClientError):
                async with it.http.post(it.base + "/login", data=endless(),
                                        headers={"Content-Type": "application/x-www-form-urlencoded"}) as reply:
                    assert reply.status == 413
        finally:
            await it.close()
    _no_unexpected(caplog)


async def test_a_sign_in_form_announced_too_large_is_not_invited(world: World) -> None:
    """``Expect: 100-continue`` with a length past the form's 16 KiB: refused at once, never
    "100 Continue" (the client would send the body anyway and hold the connection)."""
    head = world.request_head("POST", "/login", "Content-Type: application/x-www-form-urlencoded",
                              "Expect: 100-continue", "Content-Length: 99999999999", host=PROXY_HOST, cookie=False)
    reply = await world.raw(head + b"\r\n", wait=10)
    assert reply.status == 413 and b"100 Continue" not in reply.data, reply.data[:300]
    # Within the cap the body is invited as usual.
    head = world.request_head("POST", "/login", "Content-Type: application/x-www-form-urlencoded",
                              "Expect: 100-continue", "Content-Length: 10", "Connection: close",
                              host=PROXY_HOST, cookie=False)
    reply = await world.raw(head + b"\r\n", wait=2)
    assert reply.data.startswith(b"HTTP/1.1 100 Continue"), reply.data[:300]
