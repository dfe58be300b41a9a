"""The staff console in a real headless Chromium: each role signs in, works, and is refused the
other's pages; the pages load nothing but the staff listener's own stylesheet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.context import RECORDS
from tests.browser import Page, chromium, chromium_path
from tests.staff_support import DIRECTOR_NAME, DIRECTOR_PASSWORD, IT_NAME, IT_PASSWORD, write_staff
from tests.support import Browser, EchoVendor, base_config, free_port, run_proxy

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed")


async def _sign_in(page: Page, base: str, name: str, password: str) -> None:
    await page.goto(f"{base}/login")
    assert "Staff sign-in" in await page.text()
    await page.submit_and_wait(
        f"document.getElementById('name').value = {json.dumps(name)};"
        f"document.getElementById('password').value = {json.dumps(password)};"
        "document.querySelector('main form').submit()"
    )
    assert await page.url() == f"{base}/", await page.text()


async def _sign_out(page: Page) -> None:
    await page.submit_and_wait("document.querySelector('form.signout').submit()")
    assert "You have signed out" in await page.text()


async def test_staff_console_in_chromium(tmp_path: Path, echo: EchoVendor) -> None:
    admin_port = free_port()
    origin = f"http://vendor.test:{echo.port}"
    config = base_config(
        tmp_path, [{"id": "echo", "title": "Echo", "start": f"{origin}/", "hosts": [origin], "groups": ["wolcott"]}],
        upstream={"hosts": {"vendor.test": "127.0.0.1"}}, admin={"listen": f"127.0.0.1:{admin_port}"},
        records={"security": {"max_failures": 3}},
    )
    write_staff(config.proxy.state_dir)
    base = f"http://127.0.0.1:{admin_port}"
    async with run_proxy(config) as running, chromium() as page:
        # A card locked by wrong PINs, for IT to clear.
        guesser = Browser(running, local_addr="127.0.0.9")
        for _ in range(3):
            await guesser.sign_in("2000", "0000")
        await guesser.close()
        assert running.app[RECORDS].security.locked()

        await _sign_in(page, base, IT_NAME, IT_PASSWORD)
        await page.goto(f"{base}/it/vendors")
        assert "Echo" in await page.text()
        await page.submit_and_wait("document.querySelector('button[aria-label=\"Test Echo\"]').form.submit()")
        text = await page.text()
        assert "Test of Echo" in text and (await page.url()).endswith("/it/vendors/check")

        await page.goto(f"{base}/it/vendors")
        await page.submit_and_wait(
            f"document.getElementById('url').value = {json.dumps(origin + '/article/1')};"
            "document.getElementById('url').form.submit()"
        )
        assert "Covered by Echo" in await page.text()

        await page.goto(f"{base}/it/needed-hosts")
        assert "Needed hosts" in await page.text()

        await page.goto(f"{base}/it/locks")
        assert "Card locked at one address" in await page.text()
        await page.submit_and_wait("document.querySelector('button[aria-label^=\"Clear lock\"]').form.submit()")
        assert "Cleared." in await page.text()
        assert not running.app[RECORDS].security.locked()

        await page.goto(f"{base}/director/stats")
        assert "Not for your role" in await page.text()
        await _sign_out(page)

        await _sign_in(page, base, DIRECTOR_NAME, DIRECTOR_PASSWORD)
        await page.goto(f"{base}/director/stats")
        text = await page.text()
        assert "Usage statistics" in text and "Your library shares only your membership" not in text
        await page.goto(f"{base}/it/vendors")
        assert "Not for your role" in await page.text()
        await page.goto(f"{base}/audit")
        text = await page.text()
        assert IT_NAME in text and "cleared a lock" in text and "tested a vendor" in text
        await _sign_out(page)

        # Nothing but the staff listener itself was ever asked for (the stylesheet included).
        assert all(url.startswith(base + "/") for url in page.requests), page.requests
        assert f"{base}/static/staff.css" in page.requests
