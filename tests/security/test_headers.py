"""bad-inputs.md section 2 (identity and hop-by-hop header spoofing) and 8a (allow-list only).

Requests are written on raw sockets, so duplicate and odd-spelled header names reach the proxy
exactly as an attacker sends them. The vendor's record is then searched: only the proxy's own,
verifiable assertion arrives, once, and nothing the client said about who or where it is.
"""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest
from jwt import PyJWKSet

from tests.security.conftest import World, default_vendor, open_world
from tests.support import PROXY_HOST, EchoVendor

ASSERTION = "X-Library-Membership"


async def verify(world: World, token: str) -> dict[str, object]:
    _, _, body = await world.fetch("/.well-known/jwks.json", host=PROXY_HOST, cookie=None)
    keyset = PyJWKSet.from_dict(json.loads(body))
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keyset.keys if k.key_id == kid)
    return jwt.decode(token, key.key, algorithms=["ES256"], audience="echo", issuer=f"http://{PROXY_HOST}")


FORGED_ASSERTIONS = [
    ("exact_name_cve_2025_64484", [f"{ASSERTION}: forged.jwt.value"]),
    ("lower_case_cve_2025_64484", [f"{ASSERTION.lower()}: forged"]),
    ("underscores_cve_2025_64484", [f"{ASSERTION.replace('-', '_')}: forged"]),
    ("dots_cve_2026_88011", [f"{ASSERTION.replace('-', '.')}: forged"]),
    ("duplicate_cve_2025_64484", [f"{ASSERTION}: a", f"{ASSERTION}: b"]),
    ("connection_token_cve_2024_45410", [f"Connection: close, {ASSERTION}"]),
    ("connection_token_lower_cve_2026_29054", [f"connection: keep-alive, {ASSERTION.lower()}"]),
    ("connection_forwarded_cve_2022_31813",
     ["Connection: X-Forwarded-For, Via, Forwarded", "X-Forwarded-For: 1.2.3.4"]),
    ("connection_host_nathan_davison", ["Connection: Host, Cookie"]),
]


@pytest.mark.parametrize(("case", "lines"), FORGED_ASSERTIONS, ids=[c[0] for c in FORGED_ASSERTIONS])
async def test_headers_2_assertion_cannot_be_forged_or_removed(world: World, case: str, lines: list[str]) -> None:
    mark = world.mark()
    status, _, _ = await world.fetch(f"/echo/attack/{case}", headers=tuple(lines))
    assert status == 200
    [got] = world.since(mark)
    values = [v for k, v in got.headers if k.lower() == ASSERTION.lower()]
    assert len(values) == 1, values
    claims = await verify(world, values[0])
    assert claims["eduPersonScopedAffiliation"] == "member@wolcott.lib.ct.us"
    names = got.names()
    assert not any(n.replace("_", "-").replace(".", "-") == ASSERTION.lower() and n != ASSERTION.lower()
                   for n in names)
    assert "x-forwarded-for" not in names and "via" not in names and "forwarded" not in names
    assert got.header("Host") == f"127.0.0.1:{world.echo.port}"


IDENTIFYING = {
    "Cookie": "proxysess=SECRET; _ga=GA1.2.3; other=1",
    "Authorization": "Basic cGF0cm9uOnBpbg==",
    "Proxy-Authorization": "Basic cGF0cm9uOnBpbg==",
    "X-Forwarded-For": "203.0.113.7", "X-Real-IP": "203.0.113.7", "Forwarded": "for=203.0.113.7",
    "True-Client-IP": "203.0.113.7", "CF-Connecting-IP": "203.0.113.7", "X-Client-IP": "203.0.113.7",
    "X-Cluster-Client-IP": "203.0.113.7", "Client-IP": "203.0.113.7", "Fastly-Client-IP": "203.0.113.7",
    "X-Originating-IP": "203.0.113.7", "X-Remote-IP": "203.0.113.7", "X-Remote-Addr": "203.0.113.7",
    "WL-Proxy-Client-IP": "203.0.113.7", "X_Forwarded_For": "203.0.113.7", "x.real.ip": "203.0.113.7",
    "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http", "X-Forwarded-Prefix": "//evil.example",
    "X-Original-URL": "/admin", "X-Rewrite-URL": "/admin", "X-Forwarded-Uri": "/public",
    "Via": "1.1 patron-laptop", "From": "patron@example.org",
    "Sec-CH-UA": '"Chromium";v="131"', "Sec-CH-UA-Platform": '"Windows"', "Sec-CH-UA-Model": '"Pixel 9"',
    "Sec-CH-UA-Full-Version-List": '"Chromium";v="131.0.6778.86"', "Sec-CH-Device-Memory": "8",
    "Device-Memory": "8", "Viewport-Width": "1280", "DPR": "2", "Downlink": "10", "ECT": "4g", "RTT": "50",
    "Save-Data": "on", "DNT": "1", "Sec-GPC": "1",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "patron=1", "X-Request-ID": "patron-request-1", "X-Amzn-Trace-Id": "Root=1-patron",
    "Referer": "http://www-other-example.proxy.localhost/search?q=HIV+treatment&user=jsmith",
    "Origin": "http://www-other-example.proxy.localhost",
    "X-Patron-Card": "29999000123456",
}
# Values that must not appear anywhere in what the vendor received.
MARKERS = ("203.0.113.7", "SECRET", "GA1.2.3", "cGF0cm9uOnBpbg", "patron-laptop", "patron@example.org",
           "Pixel 9", "6778.86", "0af7651916cd43dd", "patron-request-1", "Root=1-patron", "HIV", "jsmith",
           "29999000123456", "evil.example", "www-other-example", "libproxy")


async def test_headers_8a_identifying_headers_never_reach_the_vendor_clicky_proxy_tracking(world: World) -> None:
    mark = world.mark()
    lines = tuple(f"{k}: {v}" for k, v in IDENTIFYING.items() if k != "Cookie")
    cookie = f"{world.attacker_cookie()}; {IDENTIFYING['Cookie']}"
    status, _, _ = await world.fetch("/echo/attack/identifying?q=owls", headers=lines, cookie=cookie)
    assert status == 200
    [got] = world.since(mark)
    names = got.names()
    for name in IDENTIFYING:
        if name.lower() not in ("referer", "origin"):
            assert name.lower() not in names, name
    text = json.dumps([(k, v) for k, v in got.headers if k.lower() != ASSERTION.lower()])
    for marker in MARKERS:
        assert marker not in text, marker
    assert got.path == "/echo/attack/identifying?q=owls"


async def test_headers_2_forwarded_addresses_grant_no_library_network_ezproxy_acceptxff(tmp_path: Path,
                                                                                      echo: EchoVendor) -> None:
    """X-Forwarded-For and its cousins naming an in-library address do not make an anonymous
    client "on site" (no trusted proxies are configured; the socket peer decides)."""
    network = {"library": [{"name": "Branch", "cidrs": ["198.51.100.0/24"], "groups": ["wolcott"]}]}
    async with open_world(tmp_path, echo=echo, vendors=[default_vendor(echo)], network=network) as world:
        mark = world.mark()
        for header in ("X-Forwarded-For: 198.51.100.7", "X-Real-IP: 198.51.100.7", "Forwarded: for=198.51.100.7",
                       "True-Client-IP: 198.51.100.7", "X-Client-IP: 198.51.100.7", "CF-Connecting-IP: 198.51.100.7",
                       "X_Forwarded_For: 198.51.100.7"):
            status, headers, _ = await world.fetch("/echo/attack/on-site", headers=(header,), cookie=None,
                                                   local_addr="127.0.0.6")
            assert status == 302 and "/login?url=" in headers.get("location", ""), (header, status)
            status, headers, _ = await world.fetch(f"/login?url=http%3A%2F%2F127.0.0.1%3A{echo.port}%2Fecho",
                                                   host=PROXY_HOST, headers=(header,), cookie=None,
                                                   local_addr="127.0.0.6")
            assert status == 200 and "location" not in headers, header  # the sign-in form, not a session
        assert world.since(mark) == []


async def test_headers_2_health_check_user_agent_grants_nothing_oauth2_proxy_cve_2026_34457(world: World) -> None:
    mark = world.mark()
    for agent in ("kube-probe/1.0", "ELB-HealthChecker/2.0", "GoogleHC/1.0", "libproxy"):
        status, headers, _ = await world.fetch("/echo/attack/probe", headers=(f"User-Agent: {agent}",), cookie=None)
        assert status == 302 and "/login" in headers["location"], agent
    assert world.since(mark) == []


async def test_headers_8a_referer_and_origin_only_the_same_vendor_without_query_leak(world: World) -> None:
    """Referer and Origin are mapped back only within the vendor; the proxy's own pages and other
    hosts are dropped, so a query typed elsewhere never reaches this vendor."""
    mark = world.mark()
    same = f"http://{world.host}/echo/search?q=owls"
    for referer, expected in ((same, f"{world.echo.origin}/echo/search?q=owls"),
                              (f"http://{PROXY_HOST}/databases?card=1000", None),
                              ("https://evil.example/?q=secret", None)):
        origin_header = f"Origin: {referer.rsplit('/', 2)[0]}"
        await world.fetch("/echo/attack/referer", headers=(f"Referer: {referer}", origin_header))
        got = world.since(mark)[-1]
        assert got.header("Referer") == expected, referer
        origin = got.header("Origin")
        assert origin is None or origin == world.echo.origin, origin
