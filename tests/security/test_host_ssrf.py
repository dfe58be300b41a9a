"""bad-inputs.md section 5 (Host header, proxy-by-hostname mapping) and 1c (SSRF), raw sockets.

Every hostile Host or request target must be refused with a 4xx (never a 500), carry nothing to
the vendor, and open no connection to the decoy (a loopback server no vendor names).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from tests.security.conftest import World, default_vendor, open_world
from tests.support import PROXY_HOST, EchoVendor


def host_cases(world: World) -> list[tuple[str, list[str]]]:
    h, d = world.host, world.decoy.port
    return [
        ("userinfo_in_host_aiohttp_observed", [f"Host: {h}:80@127.0.0.1:{d}"]),
        ("path_in_host_aiohttp_observed", [f"Host: 127.0.0.1:{d}/x"]),
        ("comma_list_aiohttp_observed", [f"Host: {h}, 127.0.0.1:{d}"]),
        ("space_list_aiohttp_observed", [f"Host: {h} 127.0.0.1:{d}"]),
        ("unclosed_bracket_aiohttp_observed", ["Host: [::1"]),
        ("port_too_large_aiohttp_500_observed", [f"Host: {h}:99999"]),
        ("port_not_digits_aiohttp_500_observed", [f"Host: {h}:abc"]),
        ("duplicate_host_cve_2026_34525", [f"Host: {h}", f"Host: 127-0-0-1---h{d}.{PROXY_HOST}"]),
        ("duplicate_host_same_cve_2026_34525", [f"Host: {h}", f"Host: {h}"]),
        ("missing_host_rfc9112_3_2", []),
        ("empty_host_rfc9112_3_2", ["Host: "]),
        ("proxy_userinfo_vendor_bad_inputs_5", [f"Host: {PROXY_HOST}:443@{h}"]),
        ("nul_in_host_desync_guardian", [f"Host: {h}\x00.evil.example"]),
        ("non_ascii_host_cve_2025_69224", ["Host: vendor\u212a.proxy.localhost"]),
    ]


async def test_host_5_malformed_host_headers_refused_not_500(world: World) -> None:
    mark = world.mark()
    for case, host_lines in host_cases(world):
        head = "\r\n".join(["GET /echo/attack/host HTTP/1.1", *host_lines, f"Cookie: {world.attacker_cookie()}",
                            "Connection: close"])
        reply = await world.raw((head + "\r\n\r\n").encode("utf-8"))
        assert reply.status is not None and 400 <= reply.status < 500, (case, reply.data[:200])
        assert reply.closed, case
    assert world.since(mark) == []
    await world.bystander.served()


@pytest.mark.parametrize(("case", "line"), [
    ("absolute_form_decoy_aiohttp_observed", "GET http://127.0.0.1:{decoy}/ HTTP/1.1"),
    ("absolute_form_vendor_host_aiohttp_observed", "GET http://{host}/echo/attack/absolute HTTP/1.1"),
    ("absolute_form_https_bad_inputs_5", "GET https://127.0.0.1:{decoy}/echo/attack/absolute HTTP/1.1"),
    ("authority_form_connect_bad_inputs_5", "CONNECT 127.0.0.1:{decoy} HTTP/1.1"),
    ("asterisk_form_options_bad_inputs_5", "OPTIONS * HTTP/1.1"),
    ("scheme_relative_target_middie_cve_2026_2880", "GET //127.0.0.1:{decoy}/echo/attack/x HTTP/1.1"),
])
async def test_host_5_request_target_forms_refused_aiohttp_cve_2026_34525(world: World, case: str, line: str) -> None:
    mark = world.mark()
    head = world.request_head("X", "/", "Connection: close")
    first = line.format(decoy=world.decoy.port, host=world.host).encode()
    reply = await world.raw(first + head.split(b"\r\n", 1)[1] + b"\r\n")
    if case.startswith("scheme_relative"):
        # "//host/path" is a path on the vendor's own host (never a target host): it may be
        # forwarded as such, or refused; the decoy is never contacted.
        assert reply.status in (200, 400, 404), reply.data[:200]
        for r in world.since(mark):
            assert r.path.startswith("//") and r.header("Host") == f"127.0.0.1:{world.echo.port}"
    else:
        assert reply.status is not None and 400 <= reply.status < 500, reply.data[:200]
        assert world.since(mark) == []
    assert world.decoy.connections == 0


async def test_host_5_unconfigured_and_ambiguous_labels_ezproxy_hyphens(world: World) -> None:
    """Labels that decode to an unconfigured origin, or are not the canonical label of a
    configured one, are "not configured"; no lookup, no connection."""
    p, d = world.echo.port, world.decoy.port
    labels = [
        f"127-0-0-1---h{d}",            # a real loopback server, not configured
        f"127-0-0-1---s{p}",            # the vendor's port, but https (not configured)
        f"127-0-0-1---h0{p}",           # leading zero: not canonical
        f"127-0-0-1---ah{p}",           # alias marker with no such alias
        f"127-0-0-1----h{p}",           # four dashes
        f"127--0-0-1---h{p}",           # "127-0.0.1"
        f"127-0-0-1---h{p}---h{p}",     # two suffixes
        "127-0-0-1",                    # https on 443
        f"p{d}-127-0-0-1",              # EZproxy's port prefix form
        f"127-0-0-1---h{p}.evil",       # one more label
        f"127-0-0-1---h{p}{'x' * 60}",  # overlong label
    ]
    mark = world.mark()
    for label in labels:
        status, headers, _ = await world.fetch("/echo/attack/label", host=f"{label}.{PROXY_HOST}")
        assert status in (400, 404), (label, status)
        assert headers.get("x-libproxy-reason") in ("not-configured", "bad-input"), label
    for host in (f"{world.host}.evil.example", f"{world.host}.", f"evil.example.{world.host}", "evil.example",
                 f"{PROXY_HOST}.evil.example"):
        status, _, _ = await world.fetch("/echo/attack/label", host=host)
        assert status in (400, 404), (host, status)
    assert world.since(mark) == []
    # The canonical label in upper case is the same host name (DNS is case-blind): served.
    status, _, body = await world.fetch("/echo/attack/upper", host=world.host.upper(),
                                        cookie=world.attacker.cookie_header(world.host))
    assert status == 200 and b"/echo/attack/upper" in body


SSRF_STARTS = ["http://2130706433:{d}/", "http://0x7f.1:{d}/", "http://0177.0.0.1:{d}/", "http://127.1:{d}/",
               "http://[::]:{d}/", "http://[::1]:{d}/", "http://[::ffff:127.0.0.1]:{d}/", "http://0.0.0.0:{d}/",
               "http://127.0.0.1.nip.io:{d}/", "http://localhost:{d}/", "http://169.254.169.254/latest/meta-data/",
               "http://10.0.0.5/"]


async def test_host_1c_ip_literal_starting_points_refused_portswigger_ssrf(world: World) -> None:
    mark = world.mark()
    for start in SSRF_STARTS:
        url = start.format(d=world.decoy.port)
        for cookie in ("attacker", None):
            status, headers, _ = await world.fetch(f"/login?url={quote(url, safe='')}", host=PROXY_HOST,
                                                   cookie=cookie)
            assert status in (400, 404) and "location" not in headers, (url, status)
    assert world.since(mark) == []
    assert world.decoy.connections == 0


async def test_host_1c_vendor_name_resolving_to_loopback_refused_dns_rebinding(tmp_path: Path,
                                                                               echo: EchoVendor) -> None:
    """A configured vendor *name* that resolves to loopback (``localhost`` here, as a rebinding
    name would) is refused at connect time: the decoy behind it is never contacted."""
    vendors = [default_vendor(echo),
               {"id": "rebound", "title": "Rebound", "start": f"http://localhost:{echo.port}/echo",
                "hosts": [f"http://localhost:{echo.port}"], "groups": ["wolcott"]}]
    async with open_world(tmp_path, echo=echo, vendors=vendors) as world:
        mark = world.mark()
        reply = await world.attacker.get(
            f"http://{PROXY_HOST}/login?url={quote(f'http://localhost:{echo.port}/echo/attack/rebound')}")
        assert reply.status == 502, reply.status
        assert reply.header("X-Libproxy-Reason") == "vendor-unreachable"
        # The recording vendor listens on 127.0.0.1, which "localhost" names: it saw nothing.
        assert world.since(mark) == []
