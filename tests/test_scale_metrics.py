"""Metrics and health on the staff listener: figures by vendor and outcome that carry no patron
data, /healthz (alive) and /readyz naming the part that is down."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from proxy.config import Config
from proxy.patrons.hashing import hash_pin
from proxy.patrons.local import add_patron
from tests.redis_server import redis_server_path
from tests.scale_support import RedisProcess
from tests.support import Browser, EchoVendor, base_config, free_port, run_proxy

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CARD, PIN = "29000100000077", "7391"
PATH_MARKER, QUERY_MARKER = "privacy-marker-path-5c1e", "privacy-marker-query-9d2a"


def _config(tmp_path: Path, echo: EchoVendor, **sections: dict[str, object]) -> tuple[Config, str]:
    vendor = {"id": "echo", "title": "E", "start": f"{echo.origin}/", "hosts": [echo.origin], "groups": ["wolcott"]}
    port = free_port()
    config = base_config(tmp_path, [vendor], admin={"listen": f"127.0.0.1:{port}"}, **sections)
    add_patron(tmp_path / "patrons.toml", CARD, hash_pin(PIN, n_log2=10), ["wolcott"], "wolcott", "active")
    return config, f"http://127.0.0.1:{port}"


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as client, client.get(url) as response:
        return response.status, await response.text()


async def test_metrics_count_by_vendor_and_carry_no_patron_data(tmp_path: Path, echo: EchoVendor) -> None:
    config, staff = _config(tmp_path, echo)
    async with run_proxy(config) as proxy:
        browser = Browser(proxy)
        try:
            signed_in = await browser.sign_in(CARD, PIN, f"{echo.origin}/echo")
            assert signed_in.status == 200
            host = proxy.proxied_host(echo.origin)
            visit = await browser.get(f"http://{host}/echo/{PATH_MARKER}?q={QUERY_MARKER}", follow=False)
            assert visit.status == 200
            other = Browser(proxy)
            wrong = await other.sign_in(CARD, "0000")
            await other.close()
            assert wrong.status == 401
            stranger = await browser.get("http://unknown-marker-host.example/", follow=False)
            assert stranger.status != 200
            session_cookie = next(iter(browser.cookies.get(config.proxy.host, {}).values()), "")
        finally:
            await browser.close()
        status, text = await _get(f"{staff}/metrics")
        assert status == 200
        assert 'libproxy_requests_total{outcome="ok",vendor="echo"}' in text
        assert 'libproxy_signins_total{outcome="succeeded"} 1.0' in text
        assert 'libproxy_signins_total{outcome="failed"} 1.0' in text
        assert 'libproxy_vendor_bytes_total{vendor="echo"}' in text
        assert 'libproxy_requests_total{outcome="refused",vendor="unconfigured"}' in text
        assert "libproxy_sessions 1.0" in text
        for marker in (CARD, PIN, PATH_MARKER, QUERY_MARKER, "unknown-marker-host", "127.0.0.1", host,
                       session_cookie or "no-cookie-seen"):
            assert marker not in text, marker
        for line in text.splitlines():
            if line.startswith("libproxy_") and "{" in line:
                pairs = line.split("{", 1)[1].split("}", 1)[0].split(",")
                values = [v for k, _, v in (pair.partition("=") for pair in pairs) if k != "le"]
                # Only vendor ids and fixed words: nothing with a slash, a dot or an at-sign.
                assert not any(c in v for v in values for c in "/.@?"), line


async def test_healthz_and_readyz(tmp_path: Path, echo: EchoVendor) -> None:
    config, staff = _config(tmp_path, echo)
    async with run_proxy(config):
        assert (await _get(f"{staff}/healthz"))[0] == 200
        status, text = await _get(f"{staff}/readyz")
        assert status == 200 and json.loads(text)["failing"] == []


@pytest.mark.skipif(redis_server_path() is None, reason="redis-server is not installed")
async def test_readyz_names_the_store_when_redis_is_down(tmp_path: Path, echo: EchoVendor,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    server = RedisProcess()
    server.start()
    try:
        monkeypatch.setenv("LIBPROXY_TEST_REDIS", server.url)
        config, staff = _config(tmp_path, echo, sessions={"store": "redis", "redis_url": "env:LIBPROXY_TEST_REDIS"})
        config = replace(config, sessions=replace(config.sessions, redis_timeout=0.5, redis_wait=0.5))
        async with run_proxy(config):
            assert (await _get(f"{staff}/readyz"))[0] == 200
            server.stop()
            status, text = await _get(f"{staff}/readyz")
            body = json.loads(text)
            assert status == 503 and body["failing"] == ["store"]
            assert "cannot connect" in body["parts"]["store"]
            assert (await _get(f"{staff}/healthz"))[0] == 200  # alive all the same
            status, text = await _get(f"{staff}/metrics")
            assert status == 200 and 'libproxy_ready{part="store"} 0.0' in text
            server.start()
            assert (await _get(f"{staff}/readyz"))[0] == 200
    finally:
        server.close()


async def test_a_cancelled_download_is_counted_and_logged_as_normal(tmp_path: Path, echo: EchoVendor,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from proxy.metrics import METRICS

    config, _ = _config(tmp_path, echo, network={"library": [{"name": "here", "cidrs": ["127.0.0.0/8"],
                                                              "groups": ["wolcott"]}]})
    async with run_proxy(config) as proxy:
        host = proxy.proxied_host(echo.origin)
        with caplog.at_level("INFO", logger="libproxy"):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(f"GET /big?size=200000000 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            await writer.drain()
            received = 0
            while received < 300_000:  # part of the download, then the patron gives up
                received += len(await reader.read(65536))
            writer.transport.abort()

            async def counted() -> bool:
                return 'libproxy_cancelled_total{vendor="echo"} 1.0' in proxy.app[METRICS].scrape().decode()

            from tests.scale_support import until

            await until(counted, what="the cancelled download to be counted")
        ours = [r for r in caplog.records if r.name.startswith("libproxy")]
        assert any("left an answer" in r.getMessage() for r in ours)
        assert not [r for r in ours if r.levelname in ("WARNING", "ERROR")], [r.getMessage() for r in ours]


def test_rewritten_bytes_are_counted_apart_from_all_vendor_bytes() -> None:
    """The observer's side: what an exchange says it rewrote is counted under the vendor."""
    from proxy.forward.hooks import Exchange
    from proxy.metrics import Metrics, MetricsObserver

    metrics = Metrics()
    observer = MetricsObserver(metrics)
    observer.done(Exchange("jstor", "/stable/pdf/1.pdf", False, None, False, received=5000))
    observer.done(Exchange("jstor", "/page", False, None, False, received=700, rewritten=700))
    observer.done(Exchange("jstor", "/refused", False, None, False))
    text = metrics.scrape().decode()
    assert 'libproxy_vendor_bytes_total{vendor="jstor"} 5700.0' in text
    assert 'libproxy_rewritten_bytes_total{vendor="jstor"} 700.0' in text


async def test_rewritten_bytes_through_the_proxy(tmp_path: Path, echo: EchoVendor) -> None:
    """A page (rewritten) and a PDF (passed through): both in the vendor's bytes, only the page
    in the rewritten bytes."""
    from proxy.metrics import METRICS

    config, _ = _config(tmp_path, echo, network={"library": [{"name": "here", "cidrs": ["127.0.0.0/8"],
                                                              "groups": ["wolcott"]}]})
    page = b"<html><body>vendor page</body></html>"  # what the echo vendor answers for /page.html
    async with run_proxy(config) as proxy:
        host = proxy.proxied_host(echo.origin)
        async with aiohttp.ClientSession() as client:
            for path in ("/page.html", "/big?size=5000"):
                async with client.get(f"http://127.0.0.1:{proxy.port}{path}", headers={"Host": host},
                                      allow_redirects=False) as response:
                    assert response.status == 200
                    await response.read()
        text = proxy.app[METRICS].scrape().decode()
    assert f'libproxy_vendor_bytes_total{{vendor="echo"}} {len(page) + 5000}.0' in text
    assert f'libproxy_rewritten_bytes_total{{vendor="echo"}} {len(page)}.0' in text


async def test_slots_tell_only_of_holds_that_queued() -> None:
    """A free slot is taken without a word; a hold that queued is reported with its wait, one
    that gave up with turned_away. The slots are all released afterwards."""
    import asyncio

    from proxy.forward.limits import Slots

    heard: list[tuple[str, float, bool]] = []
    slots = Slots(1, 0.2, lambda key, seconds, away: heard.append((key, seconds, away)))
    async with slots.hold("vendor:443") as first:
        assert first and heard == []

        async def second() -> bool:
            async with slots.hold("vendor:443") as ok:
                return ok

        task = asyncio.ensure_future(second())
        # Bounded: should the second hold never queue, the test fails instead of hanging.
        async with asyncio.timeout(5):
            while slots._slots["vendor:443"].users < 2:  # the second hold is queued
                await asyncio.sleep(0)
    assert await task
    assert len(heard) == 1 and heard[0][0] == "vendor:443" and heard[0][2] is False and heard[0][1] >= 0
    async with slots.hold("vendor:443"):
        async with slots.hold("vendor:443") as third:  # waits the whole 0.2 s, then gives up
            assert not third
    assert [away for _, _, away in heard] == [False, True] and heard[1][1] >= 0.2
    assert slots.in_use("vendor:443") == 0 and not slots._slots
    assert slots.resized(3, 1.0).on_wait is slots.on_wait


async def test_pool_waits_and_turned_away_are_labelled_by_vendor(tmp_path: Path) -> None:
    from proxy import context
    from proxy.app import build_routes
    from proxy.metrics import MeasuredSlots, Metrics

    vendor = {"id": "jstor", "title": "J", "start": "http://127.0.0.1:9/", "hosts": ["http://127.0.0.1:9"],
              "groups": ["wolcott"]}
    config = base_config(tmp_path, [vendor])
    app = web.Application()
    app[context.ROUTES] = build_routes(config, context.Site.from_config(config))
    metrics = Metrics()
    slots = MeasuredSlots(1, 0.05, metrics, app)
    async with slots.hold("127.0.0.1:9"):
        async with slots.hold("127.0.0.1:9") as ok:
            assert not ok
    async with slots.hold("127.0.0.1:9"):  # free at once: not a wait
        pass
    text = metrics.scrape().decode()
    assert 'libproxy_pool_turned_away_total{vendor="jstor"} 1.0' in text
    assert 'libproxy_pool_wait_seconds_count{vendor="jstor"} 1.0' in text


async def test_the_vendor_label_set_by_the_middleware_is_used() -> None:
    """Once the main middleware has named the vendor, the Host header is not looked up again;
    without it, the host decides (an unconfigured host here)."""
    from aiohttp.test_utils import make_mocked_request

    from proxy.metrics import METRICS, VENDOR, Metrics, measured

    app = web.Application()
    app[METRICS] = Metrics()

    class Open:  # the patron still connected: the answer counts as given
        def is_closing(self) -> bool:
            return False

        def get_extra_info(self, name: str, default: object = None) -> object:
            return default

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    @web.middleware
    async def naming(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[VENDOR] = "jstor"
        return await handler(request)

    request = make_mocked_request("GET", "/", headers={"Host": "anything.example"}, app=app,
                                  transport=Open())
    await measured(naming)(request, handler)
    text = app[METRICS].scrape().decode()
    assert 'libproxy_requests_total{outcome="ok",vendor="jstor"} 1.0' in text
    assert "anything" not in text


def test_a_worker_file_still_being_made_does_not_break_the_scrape(tmp_path: Path) -> None:
    """prometheus-client makes a worker's file empty, then sizes it; a scrape in between skips it."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    from proxy.metrics import _WorkerFiles

    (tmp_path / "counter_4242.db").touch()  # being made by a worker starting now
    # prometheus-client's own writer (untyped), as a worker uses it.
    written = MmapedDict(str(tmp_path / "counter_4241.db"))  # type: ignore[no-untyped-call]
    key = mmap_key("libproxy_requests", "libproxy_requests_total", ["vendor", "outcome"], ["-", "ok"], "Requests")
    written.write_value(key, 3.0, 0.0)  # type: ignore[no-untyped-call]
    written.close()  # type: ignore[no-untyped-call]
    families = list(_WorkerFiles(None, path=str(tmp_path)).collect())  # type: ignore[no-untyped-call]
    assert [s.value for f in families for s in f.samples] == [3.0]
