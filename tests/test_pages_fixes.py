"""The rough edges of the patron pages found by walking through the demo (issue 16), each fixed
and kept fixed here, over real HTTP on loopback: the sign-in form after a wrong PIN, the way back
from "too many attempts", the proxy's own port under another name, the session and privacy pages'
wording, the favicon, the language link and its cookie, the library's own look, and the demo
vendor's truthful "What this site received"."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import jwt
import pytest
from aiohttp import web

from proxy import config as config_mod
from proxy.demo import DEMO_CARD, DEMO_PIN, demo_config, demo_vendor_app, shown_as_received, what_to_try
from proxy.errors import ConfigError
from tests.support import PROXY_HOST, Browser, EchoVendor, RunningProxy, base_config, free_port, run_proxy

FAVICON = Path(__file__).resolve().parents[1] / "proxy" / "web" / "static" / "favicon.ico"


def vendor_entry(echo: EchoVendor) -> dict[str, object]:
    return {"id": "echo", "title": "Echo Vendor", "start": f"{echo.origin}/", "hosts": [echo.origin],
            "groups": ["wolcott"]}


@pytest.fixture
async def proxy(tmp_path: Path, echo: EchoVendor) -> AsyncIterator[RunningProxy]:
    config = base_config(tmp_path, [vendor_entry(echo)], records={"security": {"max_failures": 2}},
                         groups={"wolcott": "Wolcott Public Library"})
    async with run_proxy(config) as running:
        yield running


@pytest.fixture
async def browser(proxy: RunningProxy) -> AsyncIterator[Browser]:
    b = Browser(proxy)
    yield b
    await b.close()


def _input(page: str, name: str) -> str:
    match = re.search(rf'<input id="{name}"[^>]*>', page)
    assert match, page
    return match.group(0)


async def test_wrong_pin_keeps_the_card_and_ties_the_error_to_the_fields(proxy: RunningProxy, echo: EchoVendor,
                                                                         browser: Browser) -> None:
    reply = await browser.sign_in("1000", "9999", f"{echo.origin}/echo")
    assert reply.status == 401
    card, pin = _input(reply.text, "card"), _input(reply.text, "pin")
    assert 'value="1000"' in card and "value=" not in pin and "9999" not in reply.text
    for field in (card, pin):
        assert 'aria-invalid="true"' in field and 'aria-describedby="login-error"' in field
    assert re.search(r'<p class="error" id="login-error" role="alert">[^<]*not recognised', reply.text)
    # The PIN field has the focus: only the PIN is typed again.
    assert "autofocus" in pin and "autofocus" not in card
    fresh = await browser.get(f"http://{PROXY_HOST}/login")
    assert "aria-invalid" not in fresh.text and 'value=""' in _input(fresh.text, "card")


async def test_too_many_attempts_page_has_a_way_back(proxy: RunningProxy, echo: EchoVendor,
                                                     browser: Browser) -> None:
    for _ in range(2):
        await browser.sign_in("2000", "0000", f"{echo.origin}/echo")
    locked = await browser.sign_in("2000", "0000", f"{echo.origin}/echo")
    assert locked.status == 429 and locked.header("X-Libproxy-Reason") == "locked"
    assert f'href="http://{PROXY_HOST}/databases"' in locked.text


@pytest.mark.parametrize("host", ["localhost:8080", "127.0.0.1:8080", "LocalHost:8080"])
async def test_the_proxy_port_under_a_loopback_name_leads_to_the_proxy(proxy: RunningProxy, browser: Browser,
                                                                       host: str) -> None:
    reply = await browser.get(f"http://{PROXY_HOST}/anything?x=1", headers={"Host": host}, follow=False)
    assert reply.status == 302 and reply.header("Location") == f"http://{PROXY_HOST}/databases"


@pytest.mark.parametrize("host", ["localhost:8081", "127.0.0.1", "example.org:8080", "localhost.evil.example:8080"])
async def test_other_unknown_hosts_are_still_not_configured(proxy: RunningProxy, browser: Browser,
                                                            host: str) -> None:
    reply = await browser.get(f"http://{PROXY_HOST}/", headers={"Host": host}, follow=False)
    assert reply.status == 404 and reply.header("X-Libproxy-Reason") == "not-configured"


async def test_session_page_in_plain_words(proxy: RunningProxy, echo: EchoVendor, browser: Browser) -> None:
    await browser.sign_in("1000", "1111", f"{echo.origin}/set-cookie?c=a%3D1&c=b%3D2")
    page = (await browser.get(f"http://{PROXY_HOST}/session")).text
    # The configured name of "wolcott", and "bibliomation" (no name given) made readable.
    assert "<dd>Bibliomation; Wolcott Public Library</dd>" in page
    assert "bibliomation" not in page
    # Times carry their zone: "November 30, 2026, 14:05 UTC".
    assert re.search(r"<dd>\w+ \d{1,2}, \d{4}, \d\d:\d\d [A-Z+\-0-9]{2,6}</dd>", page), page
    assert "Cookies databases asked" not in page
    text = html.unescape(page)
    assert "Echo Vendor asked to remember 2 settings (cookies)" in text and "not in your browser" in text


async def test_privacy_page_wording(proxy: RunningProxy, browser: Browser) -> None:
    page = html.unescape((await browser.get(f"http://{PROXY_HOST}/privacy")).text)
    assert "Wolcott Public Library's" not in page
    assert not re.search(r"[Ee]very 1 ", page) and "every hour" in page
    assert "1,100 days (about 3 years)" in page and "12 hours" in page


async def test_favicon(proxy: RunningProxy, browser: Browser) -> None:
    reply = await browser.get(f"http://{PROXY_HOST}/favicon.ico")
    assert reply.status == 200 and reply.header("Content-Type") == "image/x-icon"
    assert reply.body == FAVICON.read_bytes() and reply.body[:4] == b"\x00\x00\x01\x00"
    page = (await browser.get(f"http://{PROXY_HOST}/databases")).text
    assert f'<link rel="icon" href="http://{PROXY_HOST}/favicon.ico">' in page


async def test_language_link_and_cookie(proxy: RunningProxy, browser: Browser) -> None:
    english = await browser.get(f"http://{PROXY_HOST}/privacy")
    assert '<html lang="en">' in english.text and english.header("Content-Language") == "en"
    link = re.search(r'<a href="([^"]+)" lang="es" hreflang="es">Español</a>', english.text)
    assert link and link.group(1) == f"http://{PROXY_HOST}/language/es?next=/privacy"
    switched = await browser.get(link.group(1), follow=False)
    assert switched.status == 303 and switched.header("Location") == f"http://{PROXY_HOST}/privacy"
    cookie = switched.header("Set-Cookie") or ""
    assert cookie.startswith("libproxy_lang=es;")
    assert "Max-Age=31536000" in cookie and "SameSite=Lax" in cookie and f"Domain={PROXY_HOST}" in cookie
    spanish = await browser.get(f"http://{PROXY_HOST}/privacy")
    assert '<html lang="es">' in spanish.text and "Privacidad" in spanish.text and "cada hora" in spanish.text
    assert 'lang="en" hreflang="en">English</a>' in spanish.text
    # Pages on proxied hosts (here "not configured") speak it too: the cookie is domain-wide.
    other = await browser.get(f"http://www-unknown-example.{PROXY_HOST}/", follow=False)
    assert "no está disponible" in html.unescape(other.text)
    # Only the proxy's own paths come back: no open redirect.
    for bad in ("//evil.example/", "https://evil.example/", "/\\evil.example", "/\r\nSet-Cookie:x=1", "/\x7f"):
        reply = await browser.get(f"http://{PROXY_HOST}/language/es?next={quote(bad, safe='')}", follow=False)
        assert reply.header("Location") == f"http://{PROXY_HOST}/databases", bad
    # A language the library does not offer is not remembered.
    refused = await browser.get(f"http://{PROXY_HOST}/language/fr", follow=False)
    assert refused.header("Set-Cookie") is None


async def test_accept_language_and_the_offered_languages(tmp_path: Path, echo: EchoVendor) -> None:
    for languages, expected in ((["en", "es"], "es"), (["en"], "en")):
        config = base_config(tmp_path, [vendor_entry(echo)], library={"languages": languages})
        async with run_proxy(config) as running:
            b = Browser(running)
            page = await b.get(f"http://{PROXY_HOST}/databases", headers={"Accept-Language": "es-MX,es;q=0.9"})
            assert f'<html lang="{expected}">' in page.text
            assert ("hreflang=" in page.text) == (len(languages) > 1)  # no link to a language not offered
            await b.close()


async def test_spanish_library_name_and_contact(tmp_path: Path, echo: EchoVendor) -> None:
    config = base_config(tmp_path, [vendor_entry(echo)], library={
        "contact": "the front desk", "es": {"name": "Biblioteca Pública de Wolcott", "contact": "el mostrador"}})
    async with run_proxy(config) as running:
        b = Browser(running)
        spanish = await b.get(f"http://{PROXY_HOST}/privacy", headers={"Accept-Language": "es"})
        assert "Biblioteca Pública de Wolcott" in spanish.text and "el mostrador" in spanish.text
        english = await b.get(f"http://{PROXY_HOST}/privacy")
        assert "Wolcott Public Library" in english.text and "the front desk" in english.text
        await b.close()


def test_check_config_refuses_an_accent_without_contrast(tmp_path: Path) -> None:
    for colour, ratio in (("#ffcc00", "1.5"), ("#6fa8dc", "2.5"), ("#777777", "4.5")):
        with pytest.raises(ConfigError) as refused:
            base_config(tmp_path, [], library={"accent": colour})
        text = "\n".join(refused.value.problems)
        assert f'[library] accent: "{colour}" has a contrast of' in text and "4.5:1" in text, text
        assert f"{ratio}:1" in text or colour == "#777777"
    assert base_config(tmp_path, [], library={"accent": "#7A1F5C"}).library.accent == "#7a1f5c"
    assert config_mod.contrast_ratio("#000000", "#ffffff") == pytest.approx(21.0)
    assert config_mod.contrast_ratio("#767676", "#ffffff") == pytest.approx(4.54, abs=0.01)


def test_check_config_command_names_the_contrast(tmp_path: Path) -> None:
    from proxy.cli import main

    path = tmp_path / "libproxy.toml"
    path.write_text('[library]\nname = "Test"\naccent = "#ffcc00"\n')
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["check-config", str(path)])
    assert status == 1 and 'accent: "#ffcc00" has a contrast of 1.5:1' in out.getvalue()


async def test_logo_accent_and_template_overrides(tmp_path: Path, echo: EchoVendor) -> None:
    logo = tmp_path / "logo.svg"
    logo.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>')
    overrides = tmp_path / "templates"
    overrides.mkdir()
    (overrides / "login.html").write_text(
        '{% extends "builtin/login.html" %}{% block main %}<p class="welcome">{{ _("Sign in") }}: '
        "{{ vendor_title or library_name }}</p>{{ super() }}{% endblock %}")
    config = base_config(tmp_path, [vendor_entry(echo)], library={
        "name": "<Wolcott & Co>", "logo": str(logo), "accent": "#7a1f5c", "templates": str(overrides)})
    async with run_proxy(config) as running:
        b = Browser(running)
        page = await b.get(f"http://{PROXY_HOST}/login")
        # The override is used, escaped like every page, and sent with the same policy.
        assert '<p class="welcome">Sign in: &lt;Wolcott &amp; Co&gt;</p>' in page.text
        assert 'name="card"' in page.text
        assert "frame-ancestors 'none'" in (page.header("Content-Security-Policy") or "")
        assert f'<img class="logo" src="http://{PROXY_HOST}/library/logo" alt="">' in page.text
        assert f'href="http://{PROXY_HOST}/library/theme.css"' in page.text
        theme = await b.get(f"http://{PROXY_HOST}/library/theme.css")
        assert theme.header("Content-Type", ).startswith("text/css") and "--accent: #7a1f5c" in theme.text
        served = await b.get(f"http://{PROXY_HOST}/library/logo")
        assert served.status == 200 and served.header("Content-Type") == "image/svg+xml"
        assert "sandbox" in (served.header("Content-Security-Policy") or "")
        spanish = await b.get(f"http://{PROXY_HOST}/login", headers={"Accept-Language": "es"})
        assert '<p class="welcome">Iniciar sesión: ' in spanish.text
        await b.close()
    plain = base_config(tmp_path, [vendor_entry(echo)])
    async with run_proxy(plain) as running:
        b = Browser(running)
        assert (await b.get(f"http://{PROXY_HOST}/library/logo")).status == 404
        await b.close()


async def test_demo_vendor_shows_what_it_really_received(tmp_path: Path) -> None:
    proxy_port, vendor_port = free_port(), free_port()
    runner = web.AppRunner(demo_vendor_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", vendor_port).start()
    config = demo_config(tmp_path / "state", proxy_port, vendor_port, staff_port=free_port())
    try:
        async with run_proxy(config, port=proxy_port) as running:
            b = Browser(running)
            start = f"http://127.0.0.1:{vendor_port}/whoami"
            reply = await b.sign_in(DEMO_CARD, DEMO_PIN, start)
            assert reply.status == 200, reply.text
            page = reply.text
            # The vendor's own host name reached the browser as the vendor received it.
            rows = dict(re.findall(r"<tr><th>([^<]+)</th><td><code>([^<]*)</code></td></tr>", page))
            received = {html.unescape(k): html.unescape(v) for k, v in rows.items()}
            assert received["Host"] == f"127.0.0.1:{vendor_port}"
            assert shown_as_received(f"127.0.0.1:{vendor_port}") in page
            assert "proxy.localhost" not in received.get("Referer", "")
            # The assertion: wrapped in its three parts and decoded claim by claim.
            token = received["X-Library-Membership"]
            parts = re.findall(r"<pre>([^<]+)</pre>", page)
            assert "".join(html.unescape(p) for p in parts) == token and len(parts) == 3
            claims = jwt.decode(token, options={"verify_signature": False})
            for name in claims:
                assert f"<th>{shown_as_received(name)}</th>" in page
            assert "member@wolcott.lib.ct.us" in html.unescape(page)
            absent = html.unescape(page.split("<h2>What is not here</h2><p>", 1)[1].split("</p>", 1)[0])
            for sentence in ("No internet address of yours", "No card number", "No name",
                             "No cookie of yours"):
                assert sentence in absent, absent
            assert DEMO_CARD not in page
            await b.close()
    finally:
        await runner.cleanup()


def test_demo_prints_what_to_try_and_speaks_spanish(tmp_path: Path) -> None:
    config = demo_config(tmp_path, 8080, 8081, "es")
    assert config.library.languages == ("es", "en")
    text = what_to_try(config, "es")
    assert "http://proxy.localhost:8080/language/es?next=/databases" in text
    for item in ("Sign in", "What this site received", "127-0-0-1---h8081.proxy.localhost:8080/whoami",
                 "/session", "/privacy", "/logout"):
        assert item in text, item
    assert "/language/" not in what_to_try(demo_config(tmp_path, 8080, 8081), "en")


async def test_demo_in_spanish_opens_spanish_pages(tmp_path: Path) -> None:
    proxy_port, vendor_port = free_port(), free_port()
    config = demo_config(tmp_path / "state", proxy_port, vendor_port, "es", staff_port=free_port())
    async with run_proxy(config, port=proxy_port) as running:
        b = Browser(running)
        open_url = what_to_try(config, "es").split("Open:", 1)[1].split()[0]
        page = await b.get(open_url, headers={"Accept-Language": "en-US,en"})
        assert page.url == f"http://proxy.localhost:{proxy_port}/databases"
        assert '<html lang="es">' in page.text and "Bases de datos en línea" in page.text
        assert "Biblioteca Pública de Wolcott (demostración)" in page.text and "hace de proveedor" in page.text
        # Without the patron's choice, a browser asking for nothing the library offers gets Spanish first.
        fresh = Browser(running)
        assert '<html lang="es">' in (await fresh.get(f"http://proxy.localhost:{proxy_port}/databases",
                                                      headers={"Accept-Language": "de"})).text
        await b.close()
        await fresh.close()
