"""bad-inputs.md section 6: cookies, sessions, isolation; issue 11 finding 5 (proxy cookies upstream).

Over http and over https (the proxy terminating TLS with a wildcard certificate made here), with
``cookie_passthrough = true`` (the vendor's own script cookies go upstream), every name a cookie
of the proxy's can have must stay behind, while a vendor's cookie is passed (the control).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.security.conftest import World, default_vendor, open_world
from tests.support import PROXY_HOST, Browser, EchoVendor, Reply, base_config, run_proxy

# Every cookie name the proxy sets (context.Site: http and https forms), and spellings a browser
# or a vendor script could send them under (prefixes match case-insensitively in browsers).
PROXY_COOKIE_NAMES = [
    "libproxy", "__Host-libproxy", "libproxy_bind", "__Secure-libproxy_bind", "libproxy_csrf",
    "__Host-libproxy_csrf",
    "LIBPROXY", "LibProxy_Bind", "__host-libproxy", "__HOST-LIBPROXY", "__secure-libproxy_bind",
    "__SECURE-LIBPROXY_BIND", "__Secure-libproxy", "__Host-libproxy_bind", "__secure-LibProxy_Csrf",
]


def cookie_header(extra: str = "") -> str:
    """Every spelling with a marker value, the vendor's own cookie, and ``extra`` (real cookies,
    whose names are then not repeated: a second copy of the session cookie is refused)."""
    real = {pair.split("=", 1)[0].strip() for pair in extra.split(";") if pair.strip()}
    pairs = [f"{name}=LEAK{n:02d}" for n, name in enumerate(PROXY_COOKIE_NAMES) if name not in real]
    pairs.insert(3, "vsess=vendor-own")
    return "; ".join(pairs) + (f"; {extra}" if extra else "")


def assert_only_vendor_cookies(received_cookie: str | None) -> None:
    assert received_cookie is not None, "the vendor's own cookie (the control) was not passed"
    assert "LEAK" not in received_cookie, received_cookie
    assert "libproxy" not in received_cookie.lower(), received_cookie
    assert "vsess=vendor-own" in received_cookie


def certificate(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, PROXY_HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(PROXY_HOST), x509.DNSName(f"*.{PROXY_HOST}")]),
                       False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_cookies_6_proxy_cookies_never_upstream_over_http_issue11_finding5(tmp_path: Path,
                                                                               echo: EchoVendor) -> None:
    """Before the fix, the filter removed names starting "libproxy" or "__host-libproxy" only, so
    "__Secure-libproxy_bind" (and "__secure-..." spellings) went to every passthrough vendor."""
    async with open_world(tmp_path, echo=echo, vendors=[default_vendor(echo, cookie_passthrough=True)]) as world:
        mark = world.mark()
        # Signed in: the real session and binding cookies plus every other spelling.
        status, _, _ = await world.fetch("/echo/attack/passthrough", cookie=cookie_header(world.attacker_cookie()))
        assert status == 200
        # Anonymous path: no session at all, the same names.
        status, _, _ = await world.fetch("/open/attack-passthrough", cookie=cookie_header())
        assert status == 200
        got = world.since(mark)
        assert [r.path for r in got] == ["/echo/attack/passthrough", "/open/attack-passthrough"]
        for r in got:
            assert_only_vendor_cookies(r.header("Cookie"))
            assert world.attacker_cookie().split("=", 1)[1].split(";")[0] not in (r.header("Cookie") or "")


async def test_cookies_6_proxy_cookies_never_upstream_over_https_issue11_finding5(tmp_path: Path,
                                                                                echo: EchoVendor) -> None:
    """The case that leaked: TLS, so the binding cookie is "__Secure-libproxy_bind"."""
    cert, key = certificate(tmp_path)
    vendor = default_vendor(echo, cookie_passthrough=True)
    config = base_config(tmp_path, [vendor], proxy={"host": PROXY_HOST, "tls_cert": str(cert), "tls_key": str(key)})
    assert config.proxy.scheme == "https"
    trust = ssl.create_default_context(cafile=str(cert))
    async with run_proxy(config) as running, aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        host = running.proxied_host(echo.origin)
        served: list[int] = []

        async def get(path: str, cookie: str, target: str = host) -> tuple[int, aiohttp.ClientResponse]:
            async with http.get(f"https://127.0.0.1:{running.port}{path}", headers={"Host": target, "Cookie": cookie},
                                ssl=trust, server_hostname=target, allow_redirects=False) as resp:
                await resp.read()
                return resp.status, resp

        # A real binding cookie, as the proxy sets it over https (from the sign-in page).
        status, page = await get("/login", "", PROXY_HOST)
        assert status == 200
        assert "__Host-libproxy_csrf" in page.cookies

        async def bystander() -> None:
            for n in range(20):
                code, _ = await get(f"/open/bystander-{n}", "vsess=bystander")
                served.append(code)

        task = asyncio.create_task(bystander())
        status, _ = await get("/open/attack-tls", cookie_header())
        await asyncio.wait_for(task, 60)
        assert status == 200
        assert served and set(served) == {200}
        [attack] = [r for r in echo.received if r.path == "/open/attack-tls"]
        assert_only_vendor_cookies(attack.header("Cookie"))
        for r in echo.received:
            assert "libproxy" not in (r.header("Cookie") or "").lower()


async def test_cookies_6_vendor_cookie_of_one_patron_never_reaches_another_clicky(world: World) -> None:
    """bad-inputs 6.1: a shared client jar once sent patron A's vendor cookie on patron B's
    requests. A's cookie comes back to the vendor for A only; B (the bystander) never gets it."""
    await world.attacker.get(world.url("/set-cookie?c=vsess%3DPATRON_A_SECRET%3B%20Path%3D%2F"), follow=False)
    mark = world.mark()
    replies = await asyncio.gather(*(world.attacker.get(world.url(f"/echo/attack/a{n}"), follow=False)
                                     for n in range(8)))
    assert {r.status for r in replies} == {200}
    for r in world.since(mark):
        assert "vsess=PATRON_A_SECRET" in (r.header("Cookie") or ""), r.path
    await world.bystander.served()
    for r in world.echo.received:
        if r.path.startswith("/echo/bystander"):
            assert "PATRON_A_SECRET" not in (r.header("Cookie") or "")
    assert "PATRON_A_SECRET" not in str(world.attacker.set_cookie_headers)


async def test_cookies_6_vendor_set_cookie_never_reaches_the_browser_ezproxy_cookie_store(world: World) -> None:
    batches = [["x=1; Domain=.proxy.localhost", "x=2; Domain=localhost", "libproxy=attacker; Path=/",
                "libproxy_bind=attacker; Domain=proxy.localhost", "__Host-sess=x; Secure; Path=/",
                "__Secure-x=1; Secure", "y=1; Path=/login", "LibProxy=attacker; Domain=proxy.localhost"],
               ["big=" + "B" * 6000]]
    batches += [[f"many{n}=1" for n in range(k, k + 50)] for k in range(0, 200, 50)]
    before = list(world.attacker.set_cookie_headers)
    mark = world.mark()
    for batch in batches:
        query = "&".join(f"c={quote(c, safe='')}" for c in batch)
        reply = await world.attacker.get(world.url(f"/set-cookie?{query}"), follow=False)
        assert reply.status == 200
        assert reply.headers_all("Set-Cookie") == []
    assert len(world.since(mark)) == len(batches)
    assert world.attacker.set_cookie_headers == before
    # The session cookie was not shadowed: the patron still reads, as themself.
    mark = world.mark()
    ok = await world.attacker.get(world.url("/echo/attack/after-cookies"), follow=False)
    assert ok.status == 200
    [got] = world.since(mark)
    assert got.header("X-Library-Membership")
    cookie = got.header("Cookie") or ""
    assert "attacker" not in cookie and "libproxy" not in cookie.lower()


async def test_cookies_6_session_fixation_and_tossing_github_yummy_cookies(world: World) -> None:
    planted = "A" * 43
    fresh = Browser(world.proxy, local_addr="127.0.0.7")
    try:
        fresh.cookies[PROXY_HOST] = {"libproxy": planted}
        fresh.cookies[world.host] = {"libproxy": planted}
        reply = await fresh.sign_in("2000", "2222", f"{world.echo.origin}/echo/attack/fixation")
        assert reply.status == 200
        assert fresh.cookies[world.host]["libproxy"] != planted
        assert fresh.cookies[PROXY_HOST].get("libproxy") != planted
        # Tossing: a second copy of the session cookie (planted for the parent domain by a
        # vendor script) makes the request anonymous, never someone else's.
        mark = world.mark()
        real = fresh.cookies[world.host]["libproxy"]
        for cookie in (f"libproxy={planted}; libproxy={real}", f"libproxy={real}; libproxy={planted}"):
            status, headers, _ = await world.fetch("/echo/attack/tossed", cookie=cookie)
            assert status == 302 and "/login" in headers["location"], cookie
        assert world.since(mark) == []
    finally:
        await fresh.close()


async def test_cookies_6_sign_out_revokes_server_side_upenn_ezproxy(world: World) -> None:
    patron = Browser(world.proxy, local_addr="127.0.0.8")
    try:
        assert (await patron.sign_in("2000", "2222", f"{world.echo.origin}/echo/attack/revoke")).status == 200
        old = patron.cookie_header(world.host)
        out = await patron.sign_out()
        assert out.status == 200 and out.header("X-Libproxy-Reason") == "signed-out"
        mark = world.mark()
        status, headers, _ = await world.fetch("/echo/attack/replayed", cookie=old)
        assert status == 302 and "/login" in headers["location"]
        assert world.since(mark) == []
    finally:
        await patron.close()


async def test_cookies_6_every_proxy_cookie_httponly_samesite_github_yummy_cookies(world: World) -> None:
    # (deletions, Max-Age=0 with an empty value, carry nothing)
    issued = [raw for _, raw in world.attacker.set_cookie_headers if "max-age=0" not in raw.lower()]
    assert issued
    for raw in issued:
        low = raw.lower()
        assert "httponly" in low, raw
        assert "samesite=lax" in low or "samesite=strict" in low, raw
    # Host-only everywhere but the binding cookie (which carries nothing but a random value).
    for raw in issued:
        if "domain=" in raw.lower():
            assert raw.lower().startswith("libproxy_bind="), raw


async def test_cookies_6_plain_http_for_a_public_name_warned_at_start_issue11(tmp_path: Path, echo: EchoVendor,
                                                                              caplog: pytest.LogCaptureFixture
                                                                              ) -> None:
    """Issue 11 (unclear, decided): over plain http the session cookie cannot be __Host-, so a
    vendor script could toss a domain-wide copy; the proxy says at start that production needs
    https, for any name but a loopback one."""
    vendor = default_vendor(echo)
    caplog.set_level(logging.WARNING, logger="libproxy")
    async with run_proxy(base_config(tmp_path, [vendor], proxy={"host": "proxy.library.example"})):
        pass
    public = [r.getMessage() for r in caplog.records if "https" in r.getMessage() and r.levelno >= logging.WARNING]
    assert public and "proxy.library.example" in public[0] and "__Host-" in public[0]
    caplog.clear()
    (tmp_path / "local").mkdir()
    async with run_proxy(base_config(tmp_path / "local", [vendor], proxy={"host": PROXY_HOST})):
        pass
    assert not [r for r in caplog.records if "__Host-" in r.getMessage()]


async def _hostile_vendor(request: web.Request) -> web.StreamResponse:
    origin = f"http://{request.host}"
    response = web.Response(text="<html>hostile</html>", content_type="text/html")
    for name, value in (
        ("Strict-Transport-Security", "max-age=63072000; includeSubDomains; preload"),
        ("Clear-Site-Data", '"cookies", "storage"'), ("Alt-Svc", 'h3=":443"; ma=86400'),
        ("Public-Key-Pins", 'pin-sha256="x"; max-age=1'), ("Report-To", '{"url":"https://evil.example/r"}'),
        ("NEL", '{"report_to":"default","max_age":1}'), ("Reporting-Endpoints", 'default="https://evil.example/r"'),
        ("Set-Cookie", "libproxy=attacker; Domain=proxy.localhost; Path=/"), ("Set-Cookie", "vsess=1; Path=/"),
        ("Access-Control-Allow-Origin", "https://evil.example"), ("Access-Control-Allow-Credentials", "true"),
        ("Content-Security-Policy", f"default-src 'self' {origin} https://evil.example; report-uri https://evil.example/c"),
        ("Refresh", "0; url=http://10.0.0.5/"), ("Link", "<https://evil.example/x.js>; rel=preload; as=script"),
        ("Service-Worker-Allowed", "/"), ("Set-Login", "logged-in"),
    ):
        response.headers.add(name, value)
    return response


@contextlib.asynccontextmanager
async def hostile_world(tmp_path: Path, echo: EchoVendor) -> AsyncIterator[tuple[World, Reply, int]]:
    """A world with a second vendor that answers every page with hostile headers; yields the
    world, the attacker's first page from it, and its port."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", _hostile_vendor)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        hostile = {"id": "hostile", "title": "Hostile", "start": f"http://127.0.0.1:{port}/",
                   "hosts": [f"http://127.0.0.1:{port}"], "groups": ["wolcott"]}
        async with open_world(tmp_path, echo=echo, vendors=[default_vendor(echo), hostile]) as world:
            reply = await world.attacker.sign_in("1000", "1111", f"http://127.0.0.1:{port}/page")
            assert reply.status == 200 and reply.text == "<html>hostile</html>"
            yield world, reply, port
    finally:
        await runner.cleanup()


async def test_cookies_6_vendor_response_headers_dropped_or_mapped_ezproxy_5_7_42(tmp_path: Path,
                                                                                echo: EchoVendor) -> None:
    async with hostile_world(tmp_path, echo) as (world, reply, port):
        names = {k.lower() for k in reply.headers}
        for dropped in ("strict-transport-security", "clear-site-data", "alt-svc", "public-key-pins", "report-to",
                        "nel", "reporting-endpoints"):
            assert dropped not in names, dropped
        assert reply.headers_all("Set-Cookie") == [] or all(
            "attacker" not in c and "vsess" not in c for c in reply.headers_all("Set-Cookie"))
        assert "evil.example" not in (reply.header("Access-Control-Allow-Origin") or "")
        for value in reply.headers_all("Content-Security-Policy"):
            assert "evil.example" not in value and f"127.0.0.1:{port}" not in value, value
        assert "10.0.0.5" not in (reply.header("Refresh") or "")
        assert "evil.example" not in " ".join(reply.headers_all("Link"))
        assert "attacker" not in str(world.attacker.domain_cookies) and "vsess" not in str(world.attacker.cookies)


async def test_cookies_6_service_worker_allowed_and_set_login_dropped_bad_inputs_6_8(tmp_path: Path,
                                                                                   echo: EchoVendor) -> None:
    async with hostile_world(tmp_path, echo) as (_, reply, _):
        names = {k.lower() for k in reply.headers}
        assert "service-worker-allowed" not in names
        assert "set-login" not in names
