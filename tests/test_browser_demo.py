"""The demo in a real browser: sign in, read the demo vendor, and nothing leaves the proxy's hosts."""

from __future__ import annotations

import pytest
from aiohttp import web

from proxy.demo import DEMO_CARD, DEMO_PIN, demo_config, demo_vendor_app
from tests.browser import chromium, chromium_path
from tests.support import free_port, run_proxy

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed")


async def test_demo_in_chromium(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proxy_port, vendor_port = free_port(), free_port()
    runner = web.AppRunner(demo_vendor_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", vendor_port).start()
    config = demo_config(tmp_path / "state", proxy_port, vendor_port, staff_port=free_port())
    try:
        async with run_proxy(config, port=proxy_port), chromium() as page:
            await page.goto(f"http://proxy.localhost:{proxy_port}/databases")
            assert "Demo Encyclopedia" in await page.text()
            await page.submit_and_wait("document.querySelector('ul.databases a').click()")
            assert "Sign in with your library card" in await page.text()
            await page.submit_and_wait(
                f"document.getElementById('card').value = '{DEMO_CARD}';"
                f"document.getElementById('pin').value = '{DEMO_PIN}';"
                "document.querySelector('form').submit()"
            )
            vendor_host = f"127-0-0-1---h{vendor_port}.proxy.localhost:{proxy_port}"
            assert await page.url() == f"http://{vendor_host}/"
            assert "Only library members can read this." in await page.text()
            # The absolute vendor link was rewritten to the proxied host; the relative one needs nothing.
            await page.submit_and_wait("document.querySelector('a[href$=\"/article/owls\"]').click()")
            assert await page.url() == f"http://{vendor_host}/article/owls"
            await page.submit_and_wait("location.href = '/'")
            await page.submit_and_wait("document.querySelector('a[href=\"/article/libraries\"]').click()")
            assert "An article about libraries." in await page.text()
            await page.submit_and_wait("location.href = '/whoami'")
            text = await page.text()
            assert "eduPersonScopedAffiliation" in text and "member@wolcott.lib.ct.us" in text
            assert DEMO_CARD not in text
            assert "demo_visitor" in text  # the vendor's cookie came back from the server-side jar
            cookies = await page.send("Network.getAllCookies")
            names = {c["name"] for c in cookies["cookies"]}
            assert "demo_visitor" not in names  # ...and never reached the browser
            await page.screenshot(str(tmp_path / "whoami.png"))
            proxy_hosts = (f"proxy.localhost:{proxy_port}", vendor_host)
            leaked = [u for u in page.requests if not u.startswith(tuple(f"http://{h}/" for h in proxy_hosts))]
            assert leaked == [], leaked
    finally:
        await runner.cleanup()
