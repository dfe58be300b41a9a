"""Every patron page in headless Chromium, in English and in Spanish (issue 16):

* axe-core finds no violation of WCAG 2.1 A and AA, nor of its best-practice rules;
* no page scrolls sideways at 320 CSS pixels wide, nor at 200% zoom;
* a Spanish page holds no text of its English version (beyond names: the library's, a vendor's);
* a screenshot of each page in each language is saved to ``test-artifacts/pages/<lang>/``;
* sign-in works with the keyboard alone, and after a wrong PIN only the PIN is typed again.

axe-core comes from the npm registry (``npm pack``), checked against the integrity the registry
published for the pinned version, and is cached in ``test-artifacts/cache/``; it is injected
into each page over the DevTools protocol (the pages themselves run no script).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

from proxy.web import i18n
from proxy.web.pages import STATIC, Pages
from proxy.web.texts import MESSAGES
from tests.browser import Page, chromium, chromium_path
from tests.support import EchoVendor, RunningProxy, base_config, free_port, run_proxy

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed")

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "pages"
AXE_VERSION = "4.14.1"
# As published by the registry (npm view axe-core@4.14.1 dist.integrity).
AXE_INTEGRITY = "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
LANGUAGES = ("en", "es")
# Names on the pages that are the same in every language: they are not English left behind.
NAMES = {"Wolcott Public Library", "Echo Vendor", "Bibliomation", "Derby", "Wolcott", "English", "Español", "PIN",
         "Biblioteca Pública de Wolcott", "Demo Encyclopedia", "1000", "3000", "9999"}


def axe_source() -> str:
    """axe.min.js of the pinned version: from the cache, or fetched with ``npm pack`` and checked."""
    cache = ARTIFACTS / "cache"
    tarball = cache / f"axe-core-{AXE_VERSION}.tgz"
    if not tarball.exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed to fetch axe-core for the accessibility tests"
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "pack", f"axe-core@{AXE_VERSION}", "--pack-destination", str(cache), "--silent"],
                       check=True, timeout=180, stdout=subprocess.DEVNULL,
                       env={**os.environ, "npm_config_cache": str(cache / "npm"),
                            "npm_config_update_notifier": "false"})
    data = tarball.read_bytes()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != AXE_INTEGRITY:
        tarball.unlink()
        raise AssertionError(f"axe-core {AXE_VERSION} does not match the registry's integrity: {digest}")
    with tarfile.open(tarball) as archive:
        member = archive.extractfile("package/axe.min.js")
        assert member is not None
        return member.read().decode("utf-8")


@pytest.fixture(scope="module")
def axe() -> str:
    return axe_source()


# -- the browser ---------------------------------------------------------------------------------

async def wait_load(page: Page, action: Any) -> None:
    """Run ``action`` (a coroutine) that navigates, and wait for the new page's load event."""
    page._load.clear()
    await action
    await asyncio.wait_for(page._load.wait(), 30)


async def press(page: Page, key: str) -> None:
    codes = {"Tab": 9, "Enter": 13}
    params: dict[str, Any] = {"key": key, "code": key, "windowsVirtualKeyCode": codes[key]}
    if key == "Enter":
        params["text"] = "\r"
    await page.send("Input.dispatchKeyEvent", type="keyDown", **params)
    await page.send("Input.dispatchKeyEvent", type="keyUp", **params)


async def focused(page: Page) -> str:
    return str(await page.evaluate(
        "document.activeElement ? (document.activeElement.id || document.activeElement.tagName) : ''"))


async def set_width(page: Page, width: int, scale: float = 1) -> None:
    await page.send("Emulation.setDeviceMetricsOverride", width=width, height=int(900 / scale),
                    deviceScaleFactor=scale, mobile=False)


_TEXTS = """(() => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) { const t = walker.currentNode.textContent.trim(); if (t) out.push(t); }
  for (const el of document.querySelectorAll('[alt],[aria-label],[title],[placeholder]'))
    for (const a of ['alt', 'aria-label', 'title', 'placeholder']) { const v = el.getAttribute(a); if (v) out.push(v); }
  out.push(document.title);
  return out;
})()"""


@dataclass
class Checked:
    """What the run found, page by page, for one report at the end."""

    violations: dict[str, list[str]] = field(default_factory=dict)
    overflow: list[str] = field(default_factory=list)
    english_left: dict[str, list[str]] = field(default_factory=dict)
    texts: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    pages: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        found = [f"{page}: {', '.join(rules)}" for page, rules in self.violations.items()]
        found += [f"{page}: scrolls sideways" for page in self.overflow]
        found += [f"{page}: English text left: {texts}" for page, texts in self.english_left.items()]
        return found


def _names_only(text: str) -> bool:
    """True for a text made only of names (a list of groups: "Bibliomation; Wolcott")."""
    return all(part.strip() in NAMES for part in text.replace(";", ",").split(","))


async def axe_violations(page: Page, axe: str) -> Any:
    if not await page.evaluate("typeof axe !== 'undefined'"):
        await page.evaluate(axe + "\n;void 0")  # load it; its value is not wanted back
    options = json.dumps({"runOnly": {"type": "tag", "values": AXE_TAGS}, "resultTypes": ["violations"]})
    return await page.evaluate(
        f"axe.run(document, {options})"
        ".then(r => r.violations.map(v => v.id + ' (' + v.nodes.map(n => n.target.join(' ')).join('; ') + ')'))")


async def check_page(page: Page, axe: str, checked: Checked, language: str, name: str) -> None:
    """axe, reflow at 320 px and at 200%, the language of the text, and a screenshot."""
    label = f"{language}/{name}"
    checked.pages.append(label)
    assert await page.evaluate("document.documentElement.lang") == language, label
    result = await axe_violations(page, axe)
    assert isinstance(result, list), f"axe did not run on {label}: {result!r}"
    if result:
        checked.violations[label] = result
    for width, scale in ((320, 1), (640, 2)):
        await set_width(page, width, scale)
        wide = await page.evaluate("document.documentElement.scrollWidth > document.documentElement.clientWidth")
        if wide:
            checked.overflow.append(f"{label} at {width} px × {scale}")
    await set_width(page, 1024)
    texts = [t for t in await page.evaluate(_TEXTS) if any(c.isalpha() for c in t)]
    checked.texts[(language, name)] = texts
    if language != "en" and ("en", name) in checked.texts:
        left = sorted(t for t in set(texts) & set(checked.texts[("en", name)]) if not _names_only(t))
        if left:
            checked.english_left[label] = left
    await full_page_screenshot(page, SCREENSHOTS / language / f"{name}.png")


async def full_page_screenshot(page: Page, path: Path) -> None:
    """The whole page, not only the window, so a reader of the screenshots sees all of it."""
    metrics = await page.send("Page.getLayoutMetrics")
    size = metrics["cssContentSize"]
    shot = await page.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                           clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


# -- the servers -----------------------------------------------------------------------------------

def vendor_entry(echo: EchoVendor) -> dict[str, object]:
    return {"id": "echo", "title": "Echo Vendor", "start": f"{echo.origin}/", "hosts": [echo.origin],
            "groups": ["wolcott"]}


@asynccontextmanager
async def proxy_on_own_port(tmp: Path, echo: EchoVendor, **sections: Any) -> AsyncIterator[RunningProxy]:
    """The proxy as a browser reaches it: ``proxy.localhost:<port>`` on its own listening port."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proxy = {"listen": f"127.0.0.1:{port}", "host": f"proxy.localhost:{port}", **sections.pop("proxy", {})}
    config = base_config(tmp, [vendor_entry(echo)], proxy=proxy,
                         records={"security": {"max_failures": 2}}, **sections)
    async with run_proxy(config, port=port) as running:
        yield running


@asynccontextmanager
async def message_server() -> AsyncIterator[str]:
    """Every message page, rendered by the proxy's own ``Pages`` (same templates, same headers):
    ``/message/<reason>?lang=<code>``."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    pages = Pages("Wolcott Public Library", origin, f"127.0.0.1:{port}", "http")
    fields = {"vendor": "Echo Vendor", "groups": "Wolcott Public Library; Bibliomation", "count": 2}

    async def message(request: web.Request) -> web.StreamResponse:
        i18n.use(request.query.get("lang", "en"))
        reason = request.match_info["reason"]
        if reason == "leaving":
            return pages.leaving("https://elsewhere.example/")
        return pages.message(reason, **fields)

    app = web.Application()
    app.router.add_get("/message/{reason}", message)
    app.router.add_static("/static", STATIC)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield origin
    finally:
        await runner.cleanup()


async def type_in(page: Page, text: str) -> None:
    await page.send("Input.insertText", text=text)


async def sign_in_by_keyboard(page: Page, card: str, pin: str) -> None:
    """On a sign-in form whose card field has the focus: type, Tab, type, Tab, Enter."""
    # autofocus is applied at the browser's next rendering step after the load: wait for it
    # (a busy machine can read the focus before that step).
    deadline = asyncio.get_running_loop().time() + 10
    while await focused(page) != "card" and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert await focused(page) == "card"
    await type_in(page, card)
    await press(page, "Tab")
    assert await focused(page) == "pin"
    await type_in(page, pin)
    await press(page, "Tab")
    assert await focused(page) == "BUTTON"
    await wait_load(page, press(page, "Enter"))


# -- the tests -------------------------------------------------------------------------------------

async def test_every_page_in_both_languages(tmp_path: Path, echo: EchoVendor, axe: str) -> None:
    checked = Checked()
    logo = tmp_path / "logo.svg"
    logo.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40">'
                    '<rect width="40" height="40" fill="#7a1f5c"/></svg>')
    overrides = tmp_path / "overrides"
    overrides.mkdir()
    # A library's own sign-in page, as EZproxy libraries edit login.htm: a welcome above the form.
    (overrides / "login.html").write_text(
        '{% extends "builtin/login.html" %}{% block main %}'
        '<p class="welcome">{{ _("Sign in with your library card") }}: {{ library_name }}</p>'
        "{{ super() }}{% endblock %}")
    async with (
        proxy_on_own_port(tmp_path / "a", echo) as proxy,
        proxy_on_own_port(tmp_path / "b", echo, network={"library": [
            {"name": "Wolcott Public Library", "cidrs": ["127.0.0.0/8"], "groups": ["wolcott"]}]},
            library={"logo": str(logo), "accent": "#7a1f5c", "templates": str(overrides),
                     "es": {"name": "Biblioteca Pública de Wolcott"}}) as library,
        message_server() as messages,
        chromium() as page,
    ):
        origin = proxy.config.proxy.public_origin
        start = quote(f"{echo.origin}/echo", safe="")
        # axe itself works here: a page with a nameless field and no language is flagged.
        await page.goto("data:text/html,<title>t</title><input>")
        found = " ".join(await axe_violations(page, axe))
        assert "html-has-lang" in found and "label" in found, found
        await set_width(page, 1024)
        for language in LANGUAGES:
            async def check(name: str, language: str = language) -> None:
                await check_page(page, axe, checked, language, name)

            await page.goto(f"{origin}/language/{language}?next=/databases")
            await check("databases-signed-out")
            await page.goto(f"{origin}/login?url={start}")
            assert await page.evaluate("document.getElementById('card') !== null")
            await check("sign-in")
            await page.submit_and_wait("document.getElementById('card').value = '9999';"
                                       "document.getElementById('pin').value = '0000';"
                                       "document.querySelector('form').submit()")
            assert await page.evaluate("document.getElementById('login-error') !== null")
            await check("sign-in-error")
            for _ in range(3):
                await page.goto(f"{origin}/login?url={start}")
                await page.submit_and_wait("document.getElementById('card').value = '2000';"
                                           "document.getElementById('pin').value = '0000';"
                                           "document.querySelector('form').submit()")
                if "Too many attempts" in await page.text() or "Demasiados intentos" in await page.text():
                    break
            else:
                raise AssertionError("the card was never locked")
            await check("sign-in-locked")
            await page.goto(f"{origin}/login?url={start}")
            await sign_in_by_keyboard(page, "1000", "1111")
            assert (await page.url()).startswith(f"http://127-0-0-1---h{echo.port}.proxy.localhost")
            await page.goto(f"{origin}/databases")
            await check("databases-signed-in")
            await page.goto(f"{origin}/session")
            await check("session")
            await page.goto(f"{origin}/privacy")
            await check("privacy")
            await page.goto(f"{origin}/logout")
            await check("sign-out")
            await page.submit_and_wait("document.querySelector('main form').submit()")
            await check("signed-out")
            await page.goto(f"{origin}/login?url={start}")
            await sign_in_by_keyboard(page, "3000", "3333")
            await check("not-licensed")
            await page.goto(f"{origin}/logout")
            await page.submit_and_wait("document.querySelector('main form').submit()")
            # The library's own look: logo, accent colour, an overridden sign-in page; in the library.
            library_origin = library.config.proxy.public_origin
            await page.goto(f"{library_origin}/language/{language}?next=/databases")
            await check("databases-in-the-library")
            await page.goto(f"{library_origin}/session")
            await check("session-in-the-library")
            await page.goto(f"{library_origin}/login")
            assert await page.evaluate("document.querySelector('p.welcome') !== null")
            await check("sign-in-overridden")
            for reason in MESSAGES:
                await page.goto(f"{messages}/message/{reason}?lang={language}")
                await check(f"message-{reason}")
    problems = checked.problems()
    assert not problems, "\n".join(problems)
    # Every page listed in the issue, in both languages.
    assert len(checked.pages) == 2 * (13 + len(MESSAGES))


async def test_wrong_pin_then_only_the_pin_again(tmp_path: Path, echo: EchoVendor) -> None:
    """The patron types the card once, mistypes the PIN, and retypes only the PIN."""
    async with proxy_on_own_port(tmp_path, echo) as proxy, chromium() as page:
        origin = proxy.config.proxy.public_origin
        await page.goto(f"{origin}/login?url={quote(f'{echo.origin}/echo', safe='')}")
        await sign_in_by_keyboard(page, "1000", "1112")
        assert "not recognised" in await page.text()
        assert await page.evaluate("document.getElementById('card').value") == "1000"
        assert await page.evaluate("document.getElementById('pin').value") == ""
        # The error is announced and tied to both fields.
        assert await page.evaluate("document.querySelector('[role=alert]').id") == "login-error"
        for name in ("card", "pin"):
            assert await page.evaluate(f"document.getElementById('{name}').getAttribute('aria-invalid')") == "true"
            assert await page.evaluate(
                f"document.getElementById('{name}').getAttribute('aria-describedby')") == "login-error"
        assert await focused(page) == "pin"
        await type_in(page, "1111")
        await wait_load(page, press(page, "Enter"))
        assert (await page.url()) == f"http://127-0-0-1---h{echo.port}.proxy.localhost:{proxy.port}/echo"


async def test_the_proxy_port_under_localhost_leads_to_the_proxy(tmp_path: Path, echo: EchoVendor) -> None:
    async with proxy_on_own_port(tmp_path, echo) as proxy, chromium() as page:
        for name in ("localhost", "127.0.0.1"):
            await page.goto(f"http://{name}:{proxy.port}/")
            assert await page.url() == f"http://proxy.localhost:{proxy.port}/databases"
            assert "Echo Vendor" in await page.text()


async def test_staff_pages(tmp_path: Path, echo: EchoVendor, axe: str) -> None:
    """The staff console's pages (English only) pass the same axe rules, statistics included."""
    from proxy.context import RECORDS
    from tests.staff_support import DIRECTOR_NAME, DIRECTOR_PASSWORD, IT_NAME, IT_PASSWORD, write_staff

    admin_port = free_port()
    config = base_config(tmp_path, [vendor_entry(echo)], admin={"listen": f"127.0.0.1:{admin_port}"},
                         records={"threshold": 2})
    write_staff(config.proxy.state_dir)
    base = f"http://127.0.0.1:{admin_port}"
    checked = Checked()
    roles = ((IT_NAME, IT_PASSWORD, ["/", "/audit", "/it/vendors", "/it/needed-hosts", "/it/config", "/it/health",
                                      "/it/locks"]),
             (DIRECTOR_NAME, DIRECTOR_PASSWORD, ["/director/stats", "/director/stats?by=month", "/director/privacy",
                                                 "/director/privacy/preview", "/director/retention",
                                                 "/director/records-request"]))
    async with run_proxy(config) as running, chromium() as page:
        stats = running.app[RECORDS].stats
        for kind, n in (("session", 1), ("request", 7), ("search", 3), ("download", 2)):
            stats.record("echo", kind=kind, n=n, in_library=False)  # type: ignore[arg-type]
        await stats.flush()
        await page.goto(f"{base}/login")
        found = await axe_violations(page, axe)
        if found:
            checked.violations["staff/login"] = found
        for name, password, paths in roles:
            await page.goto(f"{base}/login")
            await page.submit_and_wait(
                f"document.getElementById('name').value = {json.dumps(name)};"
                f"document.getElementById('password').value = {json.dumps(password)};"
                "document.querySelector('main form').submit()")
            for path in paths:
                await page.goto(base + path)
                assert "sign-in" not in (await page.url()), path
                found = await axe_violations(page, axe)
                assert isinstance(found, list), path
                if found:
                    checked.violations[f"staff{path}"] = found
                shot = path.strip("/").replace("/", "-").replace("?", "-") or "home"
                await full_page_screenshot(page, SCREENSHOTS / "staff" / f"{shot}.png")
            await page.submit_and_wait("document.querySelector('form.signout').submit()")
    problems = checked.problems()
    assert not problems, "\n".join(problems)
