"""bad-inputs.md section 8 (privacy) and issue 11's "less for vendors to fingerprint" ([privacy]).

With one shared membership token and the proxy's own address, User-Agent and Accept-Language
are what is left to tell patrons apart at a vendor: reduced by default to browser family, major
version and platform class, and to the first language; ``user_agent = "pass"`` per vendor keeps
them. Also: no version in any ``Server`` header, a shared assertion, and the logs of a real
``libproxy serve`` holding no PIN, card, query or address.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jwt
import pytest

from proxy.patrons.hashing import hash_pin
from proxy.patrons.local import add_patron
from tests.security.conftest import World, default_vendor, open_world, serve
from tests.support import PROXY_HOST, Browser, EchoVendor, run_echo_vendor, write_patrons

# (the class a reduced User-Agent may tell: family, major version, platform class; the string)
BROWSERS = [
    ("chrome131-windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                          "Chrome/131.0.6778.86 Safari/537.36"),
    ("chrome131-windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                          "Chrome/131.0.6778.205 Safari/537.36"),
    ("chrome131-mac", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
                      "Chrome/131.0.6778.140 Safari/537.36"),
    ("chrome131-linux", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                        "Chrome/131.0.6778.108 Safari/537.36"),
    ("chrome131-android", "Mozilla/5.0 (Linux; Android 14; Pixel 8 Pro) AppleWebKit/537.36 (KHTML, like Gecko) "
                          "Chrome/131.0.6778.104 Mobile Safari/537.36"),
    ("chrome131-android", "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
                          "Chrome/131.0.6778.81 Mobile Safari/537.36"),
    ("edge131-windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                        "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.70"),
    ("edge131-windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                        "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.86"),
    ("firefox133-windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"),
    ("firefox133-mac", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.7; rv:133.0) Gecko/20100101 Firefox/133.0"),
    ("firefox133-linux", "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"),
    ("safari18-mac", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                     "Version/18.1.1 Safari/605.1.15"),
    ("safari18-mac", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                     "Version/18.2 Safari/605.1.15"),
    ("safari18-iphone", "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1_1 like Mac OS X) AppleWebKit/605.1.15 "
                        "(KHTML, like Gecko) Version/18.1.1 Mobile/15E148 Safari/604.1"),
    ("safari18-iphone", "Mozilla/5.0 (iPhone; CPU iPhone OS 18_2 like Mac OS X) AppleWebKit/605.1.15 "
                        "(KHTML, like Gecko) Version/18.2 Mobile/15E148 Safari/604.1"),
    # Every iOS browser is Safari underneath, and says no more than Safari does.
    ("safari18-iphone", "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
                        "(KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1"),
]
# Details that identify more than the class: minor versions, device models, OS versions.
DETAILS = ("6778", "2903", "18.1.1", "18_1_1", "Pixel", "SM-S918B", "Android 14", "Android 13", "Ubuntu", "14.7",
           "CriOS")
LANGUAGES = [("es-MX,es;q=0.9,en-US;q=0.8,en;q=0.7", "es-MX"), ("fr-CA, fr;q=0.9", "fr-CA"),
             ("en-GB", "en-GB"), ("de-DE;q=1.0,de", "de-DE"), ("x" * 300, None), ("*", None)]


@pytest.fixture
async def two_vendors(tmp_path: Path) -> AsyncIterator[tuple[World, EchoVendor]]:
    """The default vendor (reduced) and a second one with ``user_agent``/``accept_language = "pass"``."""
    async with run_echo_vendor() as echo, run_echo_vendor() as passing:
        vendors = [default_vendor(echo),
                   {"id": "passing", "title": "Passing", "start": f"{passing.origin}/echo", "hosts": [passing.origin],
                    "groups": ["wolcott"], "user_agent": "pass", "accept_language": "pass"}]
        async with open_world(tmp_path, echo=echo, vendors=vendors) as world:
            reply = await world.attacker.sign_in("1000", "1111", f"{passing.origin}/echo/start")
            assert reply.status == 200
            yield world, passing


async def test_privacy_8_user_agents_reduced_to_family_major_platform_issue11(
        two_vendors: tuple[World, EchoVendor]) -> None:
    world, passing = two_vendors
    mark = world.mark()
    for n, (_, agent) in enumerate(BROWSERS):
        status, _, _ = await world.fetch(f"/echo/attack/ua-{n}", headers=(f"User-Agent: {agent}",))
        assert status == 200
    seen = [r.header("User-Agent") for r in world.since(mark)]
    assert len(seen) == len(BROWSERS)
    classes = {label for label, _ in BROWSERS}
    # One value per class, far fewer than the browsers sent: 16 strings, 10 classes.
    assert len(set(seen)) == len(classes) < len(BROWSERS)
    by_class: dict[str, set[str | None]] = {}
    for (label, _), value in zip(BROWSERS, seen, strict=True):
        by_class.setdefault(label, set()).add(value)
        assert value is not None and value.startswith("Mozilla/5.0 ("), value
        for detail in DETAILS:
            assert detail not in value, (label, value)
    assert all(len(values) == 1 for values in by_class.values()), by_class
    # Families and platforms stay recognisable (vendors still learn what renders their pages).
    assert "Edg/131" in str(next(iter(by_class["edge131-windows"])))
    assert "Firefox/133.0" in str(next(iter(by_class["firefox133-linux"])))
    await world.bystander.served()
    # The vendor configured with user_agent = "pass" gets every string as sent.
    passing_host = world.proxy.proxied_host(passing.origin)
    start = len(passing.received)
    for n, (_, agent) in enumerate(BROWSERS):
        status, _, _ = await world.fetch(f"/echo/ua-{n}", host=passing_host, headers=(f"User-Agent: {agent}",))
        assert status == 200
    assert [r.header("User-Agent") for r in passing.received[start:]] == [agent for _, agent in BROWSERS]


async def test_privacy_8_accept_language_first_language_only_issue11(two_vendors: tuple[World, EchoVendor]) -> None:
    world, passing = two_vendors
    passing_host = world.proxy.proxied_host(passing.origin)
    for value, expected in LANGUAGES:
        mark = world.mark()
        await world.fetch("/echo/attack/lang", headers=(f"Accept-Language: {value}",))
        [got] = world.since(mark)
        assert got.header("Accept-Language") == expected, value
        start = len(passing.received)
        await world.fetch("/echo/lang", host=passing_host, headers=(f"Accept-Language: {value}",))
        assert passing.received[start].header("Accept-Language") == value


async def test_privacy_8d_no_version_in_any_server_header_issue11(world: World) -> None:
    """Before the fix every response said "Server: Python/3.11 aiohttp/3.14.x"."""
    answers: list[tuple[str, dict[str, str]]] = []
    for label, target, host, cookie in (
        ("proxy page", "/login", PROXY_HOST, None), ("redirect", "/", PROXY_HOST, None),
        ("not found", "/nowhere", PROXY_HOST, None), ("static file", "/static/style.css", PROXY_HOST, None),
        ("jwks", "/.well-known/jwks.json", PROXY_HOST, None), ("vendor page", "/echo/attack/server", None, "attacker"),
        ("sign-in redirect", "/echo/attack/server", None, None), ("not configured", "/", f"x.{PROXY_HOST}", None),
        ("refused framing", "/", PROXY_HOST, None),
    ):
        extra = ("Transfer-Encoding: gzip, chunked",) if label == "refused framing" else ()
        body = b"0\r\n\r\n" if extra else b""
        if extra:
            reply = await world.raw(world.request_head("POST", target, *extra, "Connection: close", host=host,
                                                       cookie=False) + b"\r\n" + body)
            [(_, headers, _)] = reply.responses()
        else:
            _, headers, _ = await world.fetch(target, host=host, cookie=cookie)
        answers.append((label, headers))
    for label, headers in answers:
        server = headers.get("server", "")
        assert not any(ch.isdigit() for ch in server), (label, server)
        assert "python" not in server.lower() and "aiohttp" not in server.lower(), (label, server)


async def test_privacy_8d_no_version_in_parser_error_server_header_issue11(world: World) -> None:
    for payload in (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                    b"GET /\x01 HTTP/1.1\r\n\r\n"):
        reply = await world.raw(payload)
        [(status, headers, _)] = reply.responses()
        assert status == 400
        server = headers.get("server", "")
        assert not any(ch.isdigit() for ch in server), server


async def test_privacy_8b_assertion_shared_and_anonymous_eduperson(world: World) -> None:
    mark = world.mark()
    await world.fetch("/echo/attack/token")
    await world.bystander.served()
    attacker = next(r for r in world.since(mark) if r.path == "/echo/attack/token")
    bystanders = [r for r in world.echo.received[mark:] if r.path.startswith("/echo/bystander")]
    token = attacker.header("X-Library-Membership")
    # Shared: another patron's requests of the same moment carry the very same token, so it tells
    # nobody apart (any of them: on a slow machine one may straddle a re-mint near expiry).
    assert token and token in {r.header("X-Library-Membership") for r in bystanders}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims) == {"iss", "aud", "iat", "exp", "jti", "eduPersonScopedAffiliation", "eduPersonEntitlement"}
    assert claims["aud"] == "echo" and claims["exp"] - claims["iat"] <= 300
    assert "1000" not in json.dumps(claims) and "2000" not in json.dumps(claims)


async def test_privacy_8d_logs_of_serve_hold_no_pin_card_query_or_address_ct_11_25(tmp_path: Path,
                                                                                 echo: EchoVendor) -> None:
    """bad-inputs 8d test 1, against a real ``libproxy serve`` at DEBUG level: sign in with a
    marker card and PIN, search for a marker term, fail a sign-in, send a malformed request;
    then search everything the process wrote."""
    card, pin, term, address = "29999000123456", "4831", "ZEBRAFISH-MARKER", "127.0.0.77"
    patrons = write_patrons(tmp_path / "patrons.toml")
    add_patron(patrons, card, hash_pin(pin, n_log2=10), ["wolcott"], "wolcott", "active")
    async with serve(tmp_path, echo, log_level="DEBUG", patrons=patrons) as (port, log):
        running: Any = SimpleNamespace(port=port, config=SimpleNamespace(proxy=SimpleNamespace(host=PROXY_HOST)))
        patron = Browser(running, local_addr=address)
        try:
            reply = await patron.sign_in(card, pin, f"{echo.origin}/echo/search?q={term}")
            assert reply.status == 200 and reply.json()["path"] == f"/echo/search?q={term}"
            host = reply.url.split("/")[2]
            for n in range(10):
                page = await patron.get(f"http://{host}/echo/search?q={term}-{n}",
                                        headers={"Referer": f"http://{host}/echo/search?q={term}"}, follow=False)
                assert page.status == 200
            wrong = Browser(running, local_addr=address)
            assert (await wrong.sign_in(card, "9999", f"{echo.origin}/echo/search?q={term}")).status == 401
            await wrong.close()
            await patron.get(f"http://{host}/echo/%00?q={term}", follow=False)
        finally:
            await patron.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
        writer.write(f"GET /?q={term} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".encode())
        await reader.read()
        writer.close()
    text = log.read_text(errors="replace")
    assert "proxy ready" in text  # the log was written at all
    for marker in (pin, card, term, address, "/echo/search"):
        assert marker not in text, (marker, [line for line in text.splitlines() if marker in line][:3])
