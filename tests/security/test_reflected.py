"""bad-inputs.md section 1d: reflected input on the proxy's own pages (login, errors, "leaving").

Every page the proxy writes is HTML-escaped, typed ``text/html; charset=utf-8`` with ``nosniff``,
and forbids framing; markup sent in a URL, a header or a form never comes back as markup.
"""

from __future__ import annotations

from urllib.parse import quote

from tests.security.conftest import World
from tests.support import PROXY_HOST, Browser

XSS = '"><svg/onload=alert(1)>'
SCRIPT = "<script>alert(1)</script>"


def assert_safe_page(status: int, headers: dict[str, str], body: bytes, *needles: str) -> None:
    text = body.decode("utf-8", "replace")
    for needle in needles:
        assert needle not in text, (needle, status)
    assert "<svg" not in text.lower() and "<script" not in text.lower() and "onerror=" not in text.lower()
    if headers.get("content-type", "").startswith("text/html"):
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert headers.get("x-content-type-options") == "nosniff"
        assert "frame-ancestors 'none'" in headers.get("content-security-policy", "")
        assert headers.get("x-frame-options") == "DENY"


async def test_reflected_1d_login_url_parameter_artica_cve_2022_37153(world: World) -> None:
    mark = world.mark()
    for url in (XSS, "javascript:alert(1)", f"http://127.0.0.1:{world.echo.port}/{XSS}",
                f"http://127.0.0.1:{world.echo.port}/echo?q={SCRIPT}", SCRIPT):
        for cookie in ("attacker", None):
            status, headers, body = await world.fetch(f"/login?url={quote(url, safe='')}", host=PROXY_HOST,
                                                      cookie=cookie)
            assert status in (200, 303, 400, 404), (url, status)
            assert_safe_page(status, headers, body, XSS, SCRIPT)
            assert "javascript:" not in headers.get("location", "").lower()
            assert "<" not in headers.get("location", "")
    assert world.decoy.connections == 0
    # Signed in, a configured vendor URL sends the patron on with a ticket (303), nothing is
    # fetched by the proxy itself.
    assert world.since(mark) == []


async def test_reflected_1d_referer_and_user_agent_not_echoed_zzcms_cve_2020_20285(world: World) -> None:
    mark = world.mark()
    for path in ("/login", "/logout", "/databases", "/session", "/nowhere", "/privacy"):
        status, headers, body = await world.fetch(
            path, host=PROXY_HOST, headers=(f'Referer: x"/>{SCRIPT}', f"User-Agent: {SCRIPT}",
                                            f"Accept-Language: {XSS}"))
        assert_safe_page(status, headers, body, SCRIPT, XSS)
    assert world.since(mark) == []


async def test_reflected_1d_failed_sign_in_card_is_escaped_artica_cve_2022_37153(world: World) -> None:
    browser = Browser(world.proxy, local_addr="127.0.0.12")
    try:
        form = await browser.get(f"http://{PROXY_HOST}/login")
        csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        card = f"<img src=x onerror=alert(1)>{XSS}"
        mark = world.mark()
        reply = await browser.post(f"http://{PROXY_HOST}/login",
                                   data={"csrf": csrf, "url": XSS, "card": card, "pin": SCRIPT})
        assert reply.status in (401, 404)
        assert_safe_page(reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.body, card, SCRIPT)
        assert world.since(mark) == []
    finally:
        await browser.close()


async def test_reflected_1d_markup_in_the_request_path_aiohttp_threat_model(world: World) -> None:
    mark = world.mark()
    # On the proxy's host: a 404 page. On the vendor's host without a session: the sign-in
    # redirect carries the path percent-encoded, never as markup.
    status, headers, body = await world.fetch(f"/{SCRIPT}", host=PROXY_HOST)
    assert status == 404
    assert_safe_page(status, headers, body, SCRIPT)
    status, headers, body = await world.fetch(f"/open/{SCRIPT}", cookie=None)
    assert status == 200 and body.startswith(b"<html><body>vendor page")  # the vendor's own page
    status, headers, body = await world.fetch(f"/private/{SCRIPT}", cookie=None)
    assert status == 302 and "<" not in headers["location"] and '"' not in headers["location"]
    sign_in = headers["location"].split(PROXY_HOST, 1)[1]
    status, headers, body = await world.fetch(sign_in, host=PROXY_HOST, cookie=None)
    assert status == 200
    assert_safe_page(status, headers, body, SCRIPT)
    # Only the anonymous path reached the vendor, as the path it was.
    assert all(r.path.startswith("/open/") for r in world.since(mark))


async def test_reflected_1d_leaving_page_escapes_the_vendor_location_payloadsallthethings(world: World) -> None:
    for target in ('https://evil.example/"><script>alert(1)</script>', f"https://evil.example/?{XSS}",
                   "javascript:alert(document.cookie)"):
        mark = world.mark()
        reply = await world.attacker.get(world.url(f"/redirect?to={quote(target, safe='')}"), follow=False)
        assert [r.path.split("?")[0] for r in world.since(mark)] == ["/redirect"]
        assert reply.header("Location") is None
        assert_safe_page(reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.body, SCRIPT, XSS)
        assert 'href="javascript' not in reply.text.lower()


async def test_reflected_1d_parser_error_bodies_are_plain_text_aiohttp_threat_model_1_11(world: World) -> None:
    """aiohttp answers malformed requests itself: the body must be text/plain (never HTML),
    whatever of the request it quotes; and nothing goes upstream."""
    mark = world.mark()
    for payload in (f"GET /{SCRIPT} HTTP/1.1\r\nHost: {PROXY_HOST}\r\nX-A: \x01{SCRIPT}\r\n\r\n",
                    f"G<script>T / HTTP/1.1\r\nHost: {PROXY_HOST}\r\n\r\n",
                    f"GET / HTTP/1.1\r\nHost: {PROXY_HOST}\r\n{SCRIPT}: 1\r\n\r\n"):
        reply = await world.raw(payload.encode("latin-1"))
        [(status, headers, _)] = reply.responses()
        assert status == 400
        assert headers["content-type"].startswith("text/plain"), headers
    assert world.since(mark) == []
