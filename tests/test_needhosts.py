"""Needed hosts from real use: the CSP reports of proxied pages, reduced to host names."""

from __future__ import annotations

import json
from pathlib import Path

from proxy.context import NEEDED_HOSTS
from proxy.records.needhosts import NeededHosts, parse_report
from tests.support import PROXY_HOST, Browser, EchoVendor, base_config, run_proxy


def test_reports_keep_two_host_names_only() -> None:
    legacy = json.dumps({"csp-report": {
        "document-uri": "https://www-vendor-com.proxy.lib.example:8443/search?q=MARKER-QUERY",
        "blocked-uri": "https://ads.tracker.example/pixel.gif?u=MARKER", "violated-directive": "img-src",
        "source-file": "https://www-vendor-com.proxy.lib.example/app.js"}}).encode()
    assert list(parse_report(legacy)) == [("www-vendor-com.proxy.lib.example:8443", "ads.tracker.example")]
    modern = json.dumps([{"type": "csp-violation", "url": "https://p.example/x", "body": {
        "documentURL": "https://www-vendor-com.proxy.lib.example/a", "blockedURL": "https://fonts.vendor.com/f.woff2"}},
        {"type": "deprecation", "body": {}}]).encode()
    assert list(parse_report(modern)) == [("www-vendor-com.proxy.lib.example", "fonts.vendor.com")]
    for junk in (b"", b"{", b"[]", b'{"csp-report": 5}', b'{"csp-report": {"blocked-uri": "inline"}}',
                 json.dumps({"csp-report": {"document-uri": "https://a.example/", "blocked-uri": "data"}}).encode(),
                 b"x" * 20_000):
        assert list(parse_report(junk)) == []


async def test_counts_are_small_count_suppressed_bounded_and_purged(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    needed = NeededHosts(tmp_path / "n.json", retention_days=90, clock=lambda: now[0])
    for _ in range(7):
        needed.note("gale", "cdn.gale.example")
    needed.note("gale", "tracker.example")
    for i in range(500):
        needed.note("ebsco", f"h{i}.example")
    report = needed.report(threshold=5)
    assert report["gale"] == [("cdn.gale.example", "7"), ("tracker.example", "<5")]
    assert len(report["ebsco"]) == 200
    await needed.flush()
    again = NeededHosts(tmp_path / "n.json", retention_days=90, clock=lambda: now[0])
    await again.start()
    await again.close()
    assert again.report(5)["gale"] == report["gale"]
    now[0] += 91 * 86400
    assert again.purge() == 200 + 2  # one day entry per host
    assert again.report(5) == {}


async def test_proxied_pages_report_blocked_hosts_to_the_proxy(tmp_path: Path, echo: EchoVendor) -> None:
    vendor = {"id": "echo", "title": "Echo", "start": f"{echo.origin}/", "hosts": [echo.origin], "groups": ["wolcott"]}
    async with run_proxy(base_config(tmp_path, [vendor])) as proxy:
        b = Browser(proxy)
        page = await b.sign_in("1000", "1111", f"{echo.origin}/page")
        policies = [v for k, v in page.headers.items() if k.lower() == "content-security-policy"]
        assert any(f"report-uri http://{PROXY_HOST}/csp-report" in p for p in policies)
        host = proxy.proxied_host(echo.origin)
        report = {"csp-report": {"document-uri": f"http://{host}/page?q=PRIVATE-SEARCH",
                                 "blocked-uri": "https://analytics.tracker.example/collect?cid=PRIVATE-ID"}}
        for _ in range(6):
            # Browsers send reports without cookies, from the proxied page to the proxy's host.
            anonymous = Browser(proxy)
            answer = await anonymous.post(f"http://{PROXY_HOST}/csp-report", data=json.dumps(report).encode(),
                                          headers={"Content-Type": "application/csp-report"})
            assert answer.status == 204 and answer.body == b""
            await anonymous.close()
        # A report about a page that is not a proxied vendor page counts for nobody.
        stray = {"csp-report": {"document-uri": "http://elsewhere.example/", "blocked-uri": "https://x.example/"}}
        await b.post(f"http://{PROXY_HOST}/csp-report", data=json.dumps(stray).encode())
        needed = proxy.app[NEEDED_HOSTS]
        assert needed.report(5) == {"echo": [("analytics.tracker.example", "6")]}
        await needed.flush()
        stored = (proxy.config.proxy.state_dir / "needed-hosts.json").read_text()
        assert "PRIVATE" not in stored and "page" not in stored and "127.0.0.1" not in stored
        await b.close()
