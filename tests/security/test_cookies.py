"""bad-inputs.md section 6: cookies, sessions, isolation; issue 11 finding 5 (proxy cookies upstream).

Over http and over https (the proxy terminating TLS with a wildcard certificate made here), with
``cookie_passthrough = true`` (the vendor's own script cookies go upstream), every name a cookie
of the proxy's can have must stay behind, while a vendor's cookie is passed (the control).
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from pathlib import Path
from urllib.parse import quote

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.security.conftest import World, default_vendor, open_world
from tests.support import PROXY_HOST, Browser, EchoVendor, base_config, run_proxy

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
