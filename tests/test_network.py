"""In-library browsing: client addresses, trusted proxies, library networks, access rules.

Clients run on distinct loopback source addresses: 127.0.0.2 stands for a public computer in the
library, 127.0.0.3 for a patron at home, 127.0.0.9 for the library's own load balancer.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt
import pytest

from proxy.network import client_address, forwarded_for_chain, parse_address, parse_network
from tests.support import PROXY_HOST, Browser, EchoVendor, RunningProxy, base_config, run_proxy

IN_LIBRARY = "127.0.0.2"
AT_HOME = "127.0.0.3"
BALANCER = "127.0.0.9"

TRUSTED = [n for n in map(parse_network, ["127.0.0.9/32", "10.0.0.0/8"]) if n]


def test_forwarding_headers_from_untrusted_peers_are_ignored() -> None:
    for header, value in (("x-forwarded-for", "127.0.0.2"), ("forwarded", "for=127.0.0.2"),
                          ("true-client-ip", "127.0.0.2")):
        assert client_address(AT_HOME, [value], header, TRUSTED) == ipaddress.ip_address(AT_HOME)
        assert client_address(AT_HOME, [value], header, []) == ipaddress.ip_address(AT_HOME)


def test_trusted_proxy_chain_takes_right_most_untrusted() -> None:
    # spoofed left part, then the real client, then an inner trusted hop.
    chain = ["198.51.100.66, 203.0.113.5", "10.1.2.3"]
    assert client_address(BALANCER, chain, "x-forwarded-for", TRUSTED) == ipaddress.ip_address("203.0.113.5")
    fwd = ['for=198.51.100.66, for="[2001:db8::7]:4711"', "for=10.1.2.3;proto=https"]
    assert client_address(BALANCER, fwd, "forwarded", TRUSTED) == ipaddress.ip_address("2001:db8::7")
    # Every hop trusted: the left-most is the client.
    assert client_address(BALANCER, ["10.9.9.9"], "x-forwarded-for", TRUSTED) == ipaddress.ip_address("10.9.9.9")
    # A garbled hop stops the walk at the last address we can vouch for.
    assert client_address(BALANCER, ["203.0.113.5, garbage"], "x-forwarded-for", TRUSTED) == \
        ipaddress.ip_address(BALANCER)


def test_address_forms() -> None:
    assert parse_address("::ffff:127.0.0.2") == ipaddress.ip_address("127.0.0.2")
    assert parse_address("[2001:db8::1]:443") == ipaddress.ip_address("2001:db8::1")
    assert parse_address("192.0.2.1:8080") == ipaddress.ip_address("192.0.2.1")
    assert parse_address("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    assert parse_address("unknown") is None
    assert forwarded_for_chain("forwarded", ["for=unknown"]) == [None]


def _vendors(echo: EchoVendor) -> list[dict[str, object]]:
    return [
        {"id": "auto", "title": "Auto", "start": f"{echo.origin}/auto", "hosts": [echo.origin],
         "groups": ["wolcott"], "assert_on_site": True, "anonymous_paths": ["/open/*"]},
    ]


@pytest.fixture
async def proxy(tmp_path: Path, echo: EchoVendor) -> AsyncIterator[RunningProxy]:
    config = base_config(
        tmp_path, _vendors(echo),
        network={"trusted_proxies": [f"{BALANCER}/32"], "forwarded_header": "x-forwarded-for",
                 "library": [{"name": "wolcott-main", "cidrs": [f"{IN_LIBRARY}/32", "2001:db8:1::/48"],
                              "groups": ["wolcott", "bibliomation"]}]},
    )
    async with run_proxy(config) as running:
        yield running


async def test_in_library_machine_reads_without_sign_in(proxy: RunningProxy, echo: EchoVendor) -> None:
    b = Browser(proxy, local_addr=IN_LIBRARY)
    reply = await b.get(f"http://{PROXY_HOST}/login?url={quote(echo.origin + '/echo/x')}")
    assert reply.status == 200 and reply.json()["path"] == "/echo/x"
    token = echo.last.header("X-Library-Membership")
    assert token and jwt.decode(token, options={"verify_signature": False})["on_site"] is True
    # A proxied host reached directly from the library also works, with no sign-in.
    b2 = Browser(proxy, local_addr=IN_LIBRARY)
    host = proxy.proxied_host(echo.origin)
    direct = await b2.get(f"http://{host}/echo/y", follow=False)
    assert direct.status == 200 and direct.json()["path"] == "/echo/y"
    # The in-library session holds no patron key.
    from proxy.context import SESSIONS

    session = await proxy.app[SESSIONS].get(b.cookies[PROXY_HOST]["libproxy"])
    assert session is not None and session.membership.key is None and session.membership.source == "network"
    await b.close()
    await b2.close()


async def test_spoofed_headers_from_home_give_no_library_access(proxy: RunningProxy, echo: EchoVendor) -> None:
    b = Browser(proxy, local_addr=AT_HOME)
    spoof = {"X-Forwarded-For": IN_LIBRARY, "Forwarded": f"for={IN_LIBRARY}", "True-Client-IP": IN_LIBRARY,
             "X-Real-IP": IN_LIBRARY}
    reply = await b.get(f"http://{PROXY_HOST}/login?url={quote(echo.origin + '/echo')}", headers=spoof)
    assert reply.status == 200 and 'name="card"' in reply.text  # the sign-in form, not the vendor
    host = proxy.proxied_host(echo.origin)
    direct = await b.get(f"http://{host}/echo", headers=spoof, follow=False)
    assert direct.status == 302 and "/login?url=" in (direct.header("Location") or "")
    assert echo.received == []
    await b.close()


async def test_trusted_balancer_forwarding_is_honoured(proxy: RunningProxy, echo: EchoVendor) -> None:
    b = Browser(proxy, local_addr=BALANCER)
    inside = await b.get(f"http://{PROXY_HOST}/login?url={quote(echo.origin + '/echo')}",
                         headers={"X-Forwarded-For": f"198.51.100.1, {IN_LIBRARY}"})
    assert inside.status == 200 and inside.json()["path"] == "/echo"
    b2 = Browser(proxy, local_addr=BALANCER)
    outside = await b2.get(f"http://{PROXY_HOST}/login?url={quote(echo.origin + '/echo')}",
                           headers={"X-Forwarded-For": f"{IN_LIBRARY}, 198.51.100.1"})
    assert 'name="card"' in outside.text
    await b.close()
    await b2.close()


async def test_network_session_is_worthless_outside_the_library(proxy: RunningProxy, echo: EchoVendor) -> None:
    inside = Browser(proxy, local_addr=IN_LIBRARY)
    await inside.get(f"http://{PROXY_HOST}/login?url={quote(echo.origin + '/echo')}")
    host = proxy.proxied_host(echo.origin)
    home = Browser(proxy, local_addr=AT_HOME)
    home.cookies = {h: dict(c) for h, c in inside.cookies.items()}  # the laptop goes home
    echo.received.clear()
    reply = await home.get(f"http://{host}/echo", follow=False)
    assert reply.status == 302
    assert echo.received == []
    await inside.close()
    await home.close()


async def test_remote_patron_gets_on_site_false(proxy: RunningProxy, echo: EchoVendor) -> None:
    b = Browser(proxy, local_addr=AT_HOME)
    reply = await b.sign_in("1000", "1111", f"{echo.origin}/echo")
    assert reply.status == 200
    token = echo.last.header("X-Library-Membership")
    assert token and jwt.decode(token, options={"verify_signature": False})["on_site"] is False
    await b.close()


async def test_anonymous_paths_need_no_sign_in_and_send_no_assertion(proxy: RunningProxy, echo: EchoVendor) -> None:
    b = Browser(proxy, local_addr=AT_HOME)
    host = proxy.proxied_host(echo.origin)
    reply = await b.get(f"http://{host}/open/guide.html", follow=False)
    assert reply.status == 200
    assert echo.last.header("X-Library-Membership") is None
    for tricky in ("/open/../echo", "/open/%2e%2e/echo", "/open%2f..%2fecho", "/open/..;x/echo", "//open/x",
                   "/echo"):
        echo.received.clear()
        refused = await b.get(f"http://{host}{tricky}", follow=False)
        assert refused.status == 302, tricky
        assert echo.received == []
    await b.close()


async def test_databases_page_shows_what_the_library_can_open(proxy: RunningProxy, echo: EchoVendor) -> None:
    b = Browser(proxy, local_addr=IN_LIBRARY)
    page = await b.get(f"http://{PROXY_HOST}/databases")
    assert "You are in the library" in page.text
    home = Browser(proxy, local_addr=AT_HOME)
    assert "You are in the library" not in (await home.get(f"http://{PROXY_HOST}/databases")).text
    await b.close()
    await home.close()


async def test_direct_vendor_and_group_licensing(tmp_path: Path, echo: EchoVendor) -> None:
    vendors = [
        {"id": "direct", "title": "Direct", "start": f"{echo.origin}/d", "hosts": [echo.origin],
         "groups": ["wolcott"], "on_site": "direct"},
        {"id": "derbyonly", "title": "Derby Only", "start": "https://derby.example/", "hosts": ["derby.example"],
         "groups": ["derby"]},
    ]
    config = base_config(
        tmp_path, vendors, groups={"derby": "Derby Neck Library", "wolcott": "Wolcott Public Library"},
        network={"library": [{"name": "main", "cidrs": [f"{IN_LIBRARY}/32"], "groups": ["wolcott"]}]},
    )
    async with run_proxy(config) as running:
        b = Browser(running, local_addr=IN_LIBRARY)
        # EZproxy's raw form: the rest of the query is the target, its own query included.
        reply = await b.get(f"http://{PROXY_HOST}/login?url={echo.origin}/d?x=1", follow=False)
        assert reply.status == 302 and reply.header("Location") == f"{echo.origin}/d?x=1"
        # Not licensed to this library's network: a patron must bring a card that is.
        other = await b.get(f"http://{PROXY_HOST}/login?url={quote('https://derby.example/')}")
        assert 'name="card"' in other.text
        remote = Browser(running, local_addr=AT_HOME)
        refused = await remote.sign_in("1000", "1111", "https://derby.example/")
        assert refused.status == 403 and "Derby Neck Library" in refused.text
        await b.close()
        await remote.close()
    assert echo.received == []


async def test_in_library_fonts_and_failures_leave_no_unused_sessions(tmp_path: Path, echo: EchoVendor) -> None:
    """Credentialless subresource fetches from the library network are forwarded as a member
    without making a session (the browser drops the cookie of such an answer), and an
    in-library first request the vendor never answers leaves no session behind."""
    from proxy.context import SESSIONS
    from tests.support import free_port

    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    vendors = [*_vendors(echo), {"id": "down", "title": "Down", "start": f"{down}/", "hosts": [down],
                                 "groups": ["wolcott"]}]
    # One connection per client: the branch's machines share one public address, whose
    # sessionless loads get LIBRARY_SHARE (4) clients' worth.
    config = base_config(tmp_path, vendors, upstream={"connections_per_client": 1, "queue_wait": "1s",
                                                                 "read_timeout": "10s"}, network={
        "library": [{"name": "wolcott-main", "cidrs": [f"{IN_LIBRARY}/32"], "groups": ["wolcott"]}]})
    async with run_proxy(config) as running:
        store = running.app[SESSIONS]
        page_origin = f"http://{running.proxied_host(echo.origin)}"
        fonts = Browser(running, local_addr=IN_LIBRARY)
        cors = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "script", "Origin": page_origin}
        # Another machine of the branch holds a slow load the whole time.
        other = Browser(running, local_addr=IN_LIBRARY)

        async def hold_slow_loads(count: int) -> list[asyncio.Task[Any]]:
            before = sum(r.path.startswith("/slow") for r in echo.received)
            tasks = [asyncio.create_task(other.get(f"{page_origin}/slow?s=4", follow=False, headers=cors))
                     for _ in range(count)]
            async with asyncio.timeout(10):
                while sum(r.path.startswith("/slow") for r in echo.received) < before + count:
                    await asyncio.sleep(0.02)
            return tasks

        slow = await hold_slow_loads(1)
        replies = await asyncio.gather(*(fonts.get(f"{page_origin}/static/f{n}.woff2", follow=False, headers={
            **cors, "Sec-Fetch-Dest": "font"}) for n in range(3)))
        # A fetch of the page's script ("empty") is one of these too: forwarded, no session made.
        replies.append(await fonts.get(f"{page_origin}/echo/api", follow=False, headers={
            **cors, "Sec-Fetch-Dest": "empty"}))
        # Each would have been turned away after 1 s in a queue behind the 4 s load, had the
        # address had one client's share.
        for reply in replies:
            assert reply.status == 200 and reply.header("Set-Cookie") is None
        assert all(r.body.startswith(b"static:") for r in replies[:3])
        # The allowance is bounded: with 4 loads held, a fifth waits its second and is turned away.
        slow += await hold_slow_loads(3)
        busy = await fonts.get(f"{page_origin}/static/late.woff2", follow=False, headers={
            **cors, "Sec-Fetch-Dest": "font"})
        assert busy.status == 429
        assert [(await task).status for task in slow] == [200] * 4
        await other.close()
        # Members all: the library's own network.
        assert all(r.header("X-Library-Membership") for r in echo.received if r.path.startswith("/static/"))
        assert await store.count() == 0
        # The vendor is down: the patron sees the "unreachable" page and no session is kept.
        visitor = Browser(running, local_addr=IN_LIBRARY)
        reply = await visitor.get(f"http://{running.proxied_host(down)}/", follow=False)
        assert reply.status == 502
        assert await store.count() == 0
        # A WebSocket as the first request: its handshake carries no cookie, so no session is kept.
        connector = aiohttp.TCPConnector(local_addr=(IN_LIBRARY, 0))
        async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as http:
            host = running.proxied_host(echo.origin)
            async with http.ws_connect(f"http://127.0.0.1:{running.port}/ws",
                                       headers={"Host": host, "Origin": page_origin}) as ws:
                await ws.send_str("hello")
                assert (await ws.receive()).data == "echo:hello"
        async with asyncio.timeout(10):  # the proxy ends its side after the browser's close
            while await store.count():
                await asyncio.sleep(0.02)
        # A page that is answered makes exactly one session, reused by the next request.
        reader = Browser(running, local_addr=IN_LIBRARY)
        for _ in range(3):
            assert (await reader.get(f"{page_origin}/echo/a", follow=False)).status == 200
        assert await store.count() == 1
        for b in (fonts, visitor, reader):
            await b.close()
