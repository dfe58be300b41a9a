"""The rewriting corpus in headless Chromium, through the proxy (issue 14).

Every HTML page of ``tests/corpus`` is served by a three-host vendor (``www``, ``cdn``, ``api``
``.vendor.test``, see ``tests/multihost_vendor.corpus_app``): the page from www, every JS and CSS
bundle of the corpus from cdn (plain, ``crossorigin`` and module scripts, stylesheets, and the
KaTeX web fonts they name), JSON from api, and a script and an image from a third party. A real
Chromium signs in through the proxy's form and loads each page through the proxy, recording
every request from the DevTools Network domain. For each page:

* no request goes to a vendor's real host (its names or ``127.0.0.1:<port>``): everything asks
  for the proxy's own hosts, except third-party loads, which the proxy's CSP refuses;
* every request to a proxied host arrives (2xx, 3xx or 304), those to the vendor's other hosts
  included: fonts, ``crossorigin`` and module scripts go without cookies (gate.py's static
  assets);
* the bundles run (each library's global is there) and the JSON and XML arrive rewritten;
* the third-party loads the CSP refused are listed (printed, and kept as the test's
  ``csp_refused`` property), the third party never hears from the browser, and the proxy's
  own list of needed hosts (from the browser's CSP reports) names it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from aiohttp import web

from proxy.context import NEEDED_HOSTS
from tests.browser import Page, chromium, chromium_path
from tests.corpus.vendorize import vendor_files
from tests.multihost_vendor import CORPUS_SEEN, HOSTS, a_real_font, corpus_app, vendor_config
from tests.support import RunningProxy, free_port, run_proxy

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed")

VENDOR_HOSTS = HOSTS[:3]
THIRD_PARTY = "tracker.localhost"  # resolves to loopback in Chromium; no host of the vendor
PAGE_TIMEOUT = 30.0
# Records what the proxy's CSP refused, from the page's side (the event's fields are kept).
CSP_LISTENER = """
window.__cspRefused = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__cspRefused.push({url: e.blockedURI, directive: e.effectiveDirective});
});
"""


@dataclass
class Exchange:
    """One request of the page, as Chromium saw it (a redirect is an exchange of its own)."""

    rid: str
    url: str
    kind: str
    status: int | None = None
    error: str | None = None
    blocked: str | None = None
    done: bool = False
    earlier: bool = False  # made for the page before (a late load the navigation cut short)


@dataclass
class Recorder:
    """Every request of the current page, from the Network domain's events."""

    exchanges: dict[str, list[Exchange]] = field(default_factory=dict)
    exceptions: list[str] = field(default_factory=list)
    raw: dict[str, list[Any]] = field(default_factory=dict)
    # Whether the request went with a Cookie header (the headers as sent, from ExtraInfo).
    with_cookie: dict[str, bool] = field(default_factory=dict)
    document: str = ""  # the page being loaded

    def reset(self, document: str = "") -> None:
        self.document = document
        self.exchanges.clear()
        self.exceptions.clear()
        self.raw.clear()
        self.with_cookie.clear()

    def all(self) -> list[Exchange]:
        return [e for chain in self.exchanges.values() for e in chain]

    def in_flight(self) -> list[Exchange]:
        return [e for e in self.all() if not e.done and not e.earlier and e.url.startswith("http")]

    def stuck(self) -> list[Any]:
        """The requests still in flight, with the events seen of each (for the failure message)."""
        return [(e, self.raw.get(e.rid)) for e in self.in_flight()]

    def __call__(self, method: str, params: dict[str, Any]) -> None:
        rid = params.get("requestId", "")
        if rid and method.startswith("Network."):
            kept = {k: v for k, v in params.items() if k in ("errorText", "blockedReason", "statusCode", "headers")}
            self.raw.setdefault(rid, []).append((method, kept))
        chain = self.exchanges.get(rid)
        if method == "Network.requestWillBeSentExtraInfo":
            self.with_cookie[rid] = any(k.lower() == "cookie" for k in params.get("headers", {}))
        elif method == "Network.requestWillBeSent":
            if chain and "redirectResponse" in params:
                chain[-1].status, chain[-1].done = params["redirectResponse"]["status"], True
            earlier = bool(self.document) and params.get("documentURL") not in (self.document, None)
            exchange = Exchange(rid, params["request"]["url"], params.get("type", ""), earlier=earlier)
            self.exchanges.setdefault(rid, []).append(exchange)
        elif method == "Network.responseReceived" and chain:
            chain[-1].status = params["response"]["status"]
        elif method == "Network.loadingFinished" and chain:
            chain[-1].done = True
        elif method == "Network.loadingFailed" and chain:
            chain[-1].done = True
            chain[-1].error = "canceled" if params.get("canceled") else params.get("errorText", "failed")
            chain[-1].blocked = params.get("blockedReason")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.exceptions.append(str(details.get("exception", {}).get("description") or details.get("text"))[:200])


@dataclass
class Setup:
    proxy: RunningProxy
    vendor_port: int
    proxy_host: str
    third_party: str
    third_party_seen: list[str]
    files: dict[str, bytes]
    vendor_seen: list[tuple[str, str]]
    real_font: bool

    def vendor(self, host: str) -> str:
        return f"http://{host}:{self.vendor_port}"

    def proxied(self, host: str) -> str:
        return f"http://{self.proxy.proxied_host(self.vendor(host))}"


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    vendor_port, proxy_port, third_port = free_port(), free_port(), free_port()
    files = vendor_files(vendor_port)
    third_party = f"http://{THIRD_PARTY}:{third_port}"
    runners = []
    third_seen: list[str] = []
    vendor_app = corpus_app(vendor_port, files, third_party)

    async def third(request: web.Request) -> web.Response:
        third_seen.append(request.path_qs)
        return web.Response(text="", content_type="text/javascript")

    third_app = web.Application()
    third_app.router.add_route("*", "/{tail:.*}", third)
    for app, port in ((vendor_app, vendor_port), (third_app, third_port)):
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
    proxy_host = f"proxy.localhost:{proxy_port}"
    config = vendor_config(tmp_path, vendor_port, proxy_port, VENDOR_HOSTS)
    try:
        async with run_proxy(config, port=proxy_port) as running:
            yield Setup(running, vendor_port, proxy_host, third_party, third_seen, files,
                        vendor_app[CORPUS_SEEN], a_real_font() is not None)
    finally:
        for runner in runners:
            await runner.cleanup()


async def until(condition: Callable[[], Any], what: Callable[[], str], timeout: float = PAGE_TIMEOUT) -> Any:
    """Poll ``condition`` (sync or async) until it gives a true value, for at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what()}")
        await asyncio.sleep(0.05)


@dataclass
class PageResult:
    name: str
    requests: int
    cross_host: int
    credentialless: int
    cross_host_kinds: dict[str, int]
    refused: list[str]
    reports: int
    exceptions: list[str]


async def settled(page: Page, recorder: Recorder, url: str) -> dict[str, Any]:
    """Wait until the page's probe has everything and no request is in flight; the probe.

    A request still in flight when the next navigation starts would be cancelled by it, often
    with no DevTools event to say so (late ones such as the favicon), so each page is let settle.
    """
    probe = await until(lambda: page.evaluate("window.__corpusProbe"), lambda: f"the probe of {url}")
    await until(lambda: not recorder.in_flight(), lambda: f"the last requests of {url}: {recorder.stuck()}")
    return dict(probe)


def check_page(setup: Setup, name: str, recorder: Recorder, probe: dict[str, Any],
               refused_in_page: list[dict[str, str]]) -> PageResult:
    proxy_netloc = setup.proxy_host
    vendor_netlocs = {f"{h}:{setup.vendor_port}" for h in VENDOR_HOSTS} | {f"127.0.0.1:{setup.vendor_port}"}
    page_netloc = urlsplit(setup.proxied("www.vendor.test")).netloc
    exchanges = [e for e in recorder.all() if e.url.startswith(("http:", "https:", "ws:", "wss:"))]

    def netloc(e: Exchange) -> str:
        return urlsplit(e.url).netloc.lower()

    def proxied(e: Exchange) -> bool:
        return netloc(e) == proxy_netloc or netloc(e).endswith("." + proxy_netloc)

    # Nothing asks for the vendor itself: every address in the page was rewritten.
    to_vendor = [e.url for e in exchanges if netloc(e) in vendor_netlocs or "vendor.test" in netloc(e)]
    assert to_vendor == [], f"{name}: requests for the vendor's own hosts: {to_vendor}"
    # Anything not for the proxy's hosts is a third party, and the proxy's CSP refused it.
    others = [e for e in exchanges if not proxied(e)]
    not_refused = [(e.url, e.error, e.blocked) for e in others if e.blocked != "csp"]
    assert not_refused == [], f"{name}: third-party loads the CSP did not refuse: {not_refused}"
    refused = sorted({e.url for e in others})
    assert {f"{setup.third_party}/pixel.gif", f"{setup.third_party}/analytics.js"} <= set(refused), refused
    # The page saw the same refusals (its securitypolicyviolation events), and no others: the
    # policy let every proxied load through.
    assert sorted({r["url"] for r in refused_in_page}) == refused, (refused_in_page, refused)
    # Every load from the proxy's hosts arrived, those from the vendor's other hosts included.
    bad = [(e.url, e.kind, e.status, e.error) for e in exchanges if proxied(e) and not e.earlier
           and (e.error is not None or e.status is None or not (200 <= e.status < 400))]
    assert bad == [], f"{name}: proxied loads that did not arrive: {bad}"
    cross = [e for e in exchanges if netloc(e).endswith("." + proxy_netloc) and netloc(e) != page_netloc
             and not e.earlier]
    # The browser reported the refusals to the proxy's own host (the policy's report-uri).
    reports = [e for e in exchanges if netloc(e) == proxy_netloc and urlsplit(e.url).path == "/csp-report"]
    assert len(reports) >= 1, name
    # Fonts, crossorigin and module scripts go without cookies: they arrived by the gate's rule
    # for a credentialless subresource of a page of the same vendor (gate.STATIC_ASSET).
    credentialless = [e for e in cross if recorder.with_cookie.get(e.rid) is False]
    assert {"Font", "Script", "Stylesheet"} <= {e.kind for e in credentialless}, credentialless
    kinds: dict[str, int] = {}
    for e in cross:
        kinds[e.kind] = kinds.get(e.kind, 0) + 1
    # Fonts and scripts (plain, crossorigin and module ones) came from the cdn host, JSON
    # (fetched with credentials) from the api host.
    assert kinds.get("Font", 0) >= 1 and kinds.get("Script", 0) >= len(
        [p for p in setup.files if p.endswith((".js", ".mjs"))]), kinds
    assert kinds.get("Stylesheet", 0) >= 3 and kinds.get("Fetch", 0) >= 1, kinds
    # The bundles ran after rewriting, and the api's JSON and the XML arrived.
    assert probe["pdfjs"] is True and probe["instantsearch"] == "function", probe
    for library in ("jquery", "vue", "katex", "lunr", "bootstrap"):
        assert isinstance(probe[library], str) and probe[library][:1].isdigit(), (library, probe)
    assert isinstance(probe["glossaryEntries"], int) and probe["glossaryEntries"] > 100, probe
    assert str(probe["opensearchTemplate"]).startswith(setup.proxied("api.vendor.test") + "/"), probe
    if setup.real_font:
        assert probe["fontFaces"] == [1, 1], probe  # the fonts arrived whole: Chromium decoded them
    return PageResult(name, len(exchanges), len(cross), len(credentialless), kinds, refused, len(reports),
                      list(recorder.exceptions))


async def load(page: Page, recorder: Recorder, url: str) -> dict[str, Any]:
    """Navigate to ``url`` and wait until it has settled; the page's probe."""
    recorder.reset(url)
    await page.goto(url)
    return await settled(page, recorder, url)


async def test_corpus_pages_in_chromium_stay_inside_and_load_everything(
        setup: Setup, record_property: Callable[[str, object], None]) -> None:
    started = time.monotonic()
    pages = sorted(name for name in setup.files if name.endswith(".html"))
    assert len(pages) >= 10
    home = setup.proxied("www.vendor.test")
    recorder = Recorder()
    results: list[PageResult] = []
    async with chromium() as page:
        page.listen(recorder)
        await page.send("Network.setCacheDisabled", cacheDisabled=True)  # every load goes through the proxy
        await page.send("Page.addScriptToEvaluateOnNewDocument", source=CSP_LISTENER)
        first = setup.vendor("www.vendor.test") + f"/pages/{pages[0]}"
        await page.goto(f"http://{setup.proxy_host}/login?url={quote(first, safe='')}")
        recorder.reset()
        await page.submit_and_wait(
            "document.getElementById('card').value = '1000';"
            "document.getElementById('pin').value = '1111';"
            "document.querySelector('form').submit()"
        )
        assert await page.url() == f"{home}/pages/{pages[0]}"
        await settled(page, recorder, first)  # the first page is checked below, loaded afresh
        for name in pages:
            probe = await load(page, recorder, f"{home}/pages/{name}")
            refused_in_page = await page.evaluate("window.__cspRefused")
            results.append(check_page(setup, name, recorder, probe, list(refused_in_page)))

    assert setup.third_party_seen == []  # the browser never reached the third party
    # The vendor heard on each of its hosts, the web fonts on cdn included (through the proxy:
    # the browser asked for no vendor host).
    assert {host for host, _ in setup.vendor_seen} == set(VENDOR_HOSTS)
    assert any(host == "cdn.vendor.test" and "/fonts/KaTeX_Main" in path for host, path in setup.vendor_seen)
    # The browser's CSP reports reached the proxy, which lists the refused host for IT.
    needed = setup.proxy.app[NEEDED_HOSTS]
    listed = await until(lambda: dict(needed.report(threshold=1)).get("vendor"), lambda: "the proxy's needed hosts")
    assert THIRD_PARTY in {host for host, _ in listed}, listed

    summary = {r.name: {"requests": r.requests, "cross_host": r.cross_host, "credentialless": r.credentialless,
                        "cross_host_kinds": r.cross_host_kinds, "csp_refused": r.refused, "csp_reports": r.reports,
                        "script_exceptions": r.exceptions} for r in results}
    record_property("csp_refused", json.dumps({r.name: r.refused for r in results}))
    print(f"\ncorpus in Chromium: {len(results)} pages, {sum(r.requests for r in results)} requests, "
          f"{sum(r.cross_host for r in results)} from the vendor's other hosts, "
          f"{sum(len(r.refused) for r in results)} third-party loads refused by the CSP, "
          f"{time.monotonic() - started:.1f} s")
    print(json.dumps(summary, indent=1))
    print("needed hosts listed by the proxy:", listed)
