"""bad-inputs.md section 1a, 1b, 1e: open proxy, open redirect, the proxy's reserved paths.

A second vendor, ``vendor.example`` (a name, served by the recording vendor through
``[upstream] hosts``), makes the host-name tricks of 1a meaningful. Every rejected starting
point must give a neutral 4xx page that does not echo the URL as markup, with no connection
anywhere (the decoy, a real loopback server no vendor names, counts them) and nothing at the
vendor; every ``Location`` the proxy emits must take a browser (WHATWG rules, see
``conftest.browser_target``) only to the proxy's own host names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.security.conftest import World, default_vendor, in_proxy_space, open_world
from tests.support import PROXY_HOST, Browser, run_echo_vendor

LOGIN = f"http://{PROXY_HOST}/login"


@pytest.fixture
async def named(tmp_path: Path) -> AsyncIterator[World]:
    async with run_echo_vendor() as echo:
        vendors = [default_vendor(echo),
                   {"id": "named", "title": "Named", "start": f"http://vendor.example:{echo.port}/echo",
                    "hosts": [f"http://vendor.example:{echo.port}"], "groups": ["wolcott"]}]
        async with open_world(tmp_path, echo=echo, vendors=vendors,
                              upstream={"hosts": {"vendor.example": "127.0.0.1"}, "read_timeout": "10s"}) as world:
            yield world


def unconfigured_targets(world: World) -> list[tuple[str, str]]:
    p, d = world.echo.port, world.decoy.port
    return [
        ("unknown_ezproxy_redirectunknown", "http://evil.example/"),
        ("unknown_loopback_port_ezproxy_redirectunknown", f"http://127.0.0.1:{d}/"),
        ("suffix_append_cve_2021_21291", f"http://vendor.example.evil.example:{p}/"),
        ("missing_dot_boundary_ezproxy_redirectsafe", f"http://evilvendor.example:{p}/"),
        ("userinfo_cve_2021_21291", f"http://vendor.example:{p}@127.0.0.1:{d}/"),
        ("userinfo_no_port_pkp_cve_2024_46326", f"http://vendor.example@127.0.0.1:{d}/"),
        ("backslash_authority_yarl_urlsplit", f"http://127.0.0.1:{d}\\@vendor.example:{p}/"),
        ("encoded_dot_in_host_ezproxy", f"http://vendor.example%2eevil.example:{p}/"),
        ("nul_truncation_ezproxy", f"http://vendor.example%00.evil.example:{p}/"),
        ("port_not_configured_ezproxy", f"http://vendor.example:{d}/"),
        ("scheme_ftp_ezproxy", f"ftp://vendor.example:{p}/"),
        ("scheme_file_ssrf_cheatsheet", "file:///etc/passwd"),
        ("scheme_gopher_ssrf_cheatsheet", f"gopher://127.0.0.1:{d}/_INFO"),
        ("scheme_javascript_payloadsallthethings", "javascript:alert(1)"),
        ("scheme_data_payloadsallthethings", "data:text/html,<script>alert(1)</script>"),
        ("schemeless_cve_2019_13038", f"vendor.example:{p}/"),
        ("protocol_relative_cve_2020_5233", f"//vendor.example:{p}/"),
        ("tab_in_scheme_cve_2026_75628", f"ht\ttp://vendor.example:{p}/"),
        ("crlf_header_injection_payloadsallthethings", f"http://vendor.example:{p}/\r\nLocation: http://evil.example/"),
        ("fragment_userinfo_payloadsallthethings", f"http://127.0.0.1:{d}#@vendor.example:{p}/"),
        ("query_userinfo_payloadsallthethings", f"http://127.0.0.1:{d}?@vendor.example:{p}/"),
        ("encoded_scheme_payloadsallthethings", f"%68ttp://vendor.example:{p}/"),
        ("fullwidth_solidus_blackhat_2019", f"http://127.0.0.1:{d}\uff0f.vendor.example:{p}/"),
    ]


def _assert_refused(reply_status: int, location: str | None, text: str, payload: str) -> None:
    assert 400 <= reply_status < 500, (payload, reply_status)
    assert location is None, (payload, location)
    assert "<script" not in text.lower()
    if any(ch in payload for ch in "<>\""):
        assert payload not in text


async def test_redirect_1a_unconfigured_starting_points_refused_signed_in_and_out(named: World) -> None:
    world = named
    mark = world.mark()
    for case, payload in unconfigured_targets(world):
        for cookie in ("attacker", None):
            status, headers, body = await world.fetch(f"/login?url={quote(payload, safe='')}", host=PROXY_HOST,
                                                      cookie=cookie)
            _assert_refused(status, headers.get("location"), body.decode("utf-8", "replace"), payload)
            assert headers.get("x-libproxy-reason") in ("not-configured", "bad-input"), case
    await world.bystander.served()
    assert world.since(mark) == []
    assert world.decoy.connections == 0


async def test_redirect_1a_normalised_host_forms_reach_only_the_vendor_whatwg(named: World) -> None:
    """U+3002 and "VENDOR.EXAMPLE." are the configured host to a browser: accepted or refused,
    the sign-on never leads anywhere but the vendor's proxied host."""
    world = named
    p = world.echo.port
    for payload in (f"http://vendor\u3002example:{p}/echo/attack/ideographic",
                    f"http://VENDOR.EXAMPLE.:{p}/echo/attack/trailing-dot"):
        reply = await world.attacker.get(f"{LOGIN}?url={quote(payload, safe='')}", follow=False)
        location = reply.header("Location")
        if location is None:
            assert 400 <= reply.status < 500
            continue
        assert in_proxy_space(location, LOGIN), location
        assert f"vendor-example---h{p}.{PROXY_HOST}" in location
    assert world.decoy.connections == 0


async def test_redirect_1a_duplicate_url_parameter_pollution(named: World) -> None:
    world = named
    mark = world.mark()
    good, bad = quote(f"{world.echo.origin}/echo"), quote(f"http://127.0.0.1:{world.decoy.port}/")
    for query in (f"url={good}&url={bad}", f"url={bad}&url={good}", f"url={good}&url={good}", f"url={good}&url="):
        status, headers, _ = await world.fetch(f"/login?{query}", host=PROXY_HOST)
        assert status == 400 and "location" not in headers, query
    assert world.since(mark) == []


RETURN_TO = ["//evil.example", "///evil.example", "/\\evil.example", "\\\\evil.example", "/\\/evil.example",
             "\\/\\/evil.example", "http:evil.example", "https:evil.example", "http:\\\\evil.example",
             "/\t/evil.example", "/\r\n/evil.example", " //evil.example", "\x00//evil.example",
             "/%2F%2Fevil.example", "java\tscript:alert(1)", "https://evil.example#@vendor.example",
             "https://evil.example?.vendor.example", "https://evil.c\u2100.example.com",
             "%0d%0aLocation:%20https://evil.example"]


async def test_redirect_1b_return_to_after_sign_in_cve_2020_5233_cve_2026_83589(named: World) -> None:
    """A sign-in posted with each "return to" value: the patron is either refused or sent on
    inside the proxy's host names, never to evil.example."""
    world = named
    mark = world.mark()
    for payload in RETURN_TO:
        browser = Browser(world.proxy, local_addr="127.0.0.4")
        try:
            form = await browser.get(LOGIN)
            csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            reply = await browser.post(LOGIN, data={"csrf": csrf, "url": payload, "card": "1000", "pin": "1111"},
                                       follow=False)
            location = reply.header("Location")
            if location is not None:
                assert in_proxy_space(location, LOGIN), (payload, location)
            else:
                assert reply.status < 500, payload
            assert "evil.example" not in " ".join(v for k, v in reply.headers.items() if k.lower() != "set-cookie")
        finally:
            await browser.close()
    assert world.since(mark) == []


async def test_redirect_1b_vendor_location_never_leaves_proxy_space_cve_2020_5233(named: World) -> None:
    """The vendor sends each payload as its Location: the browser is sent only within the proxy,
    or shown the "this link leaves the library's databases" page; nothing is followed."""
    world = named
    d = world.decoy.port
    payloads = [*RETURN_TO, f"http://127.0.0.1:{d}/internal-only", f"//127.0.0.1:{d}/x",
                "http://169.254.169.254/latest/meta-data/", "data:text/html,<script>alert(1)</script>",
                "javascript:alert(1)", f"http://vendor.example:{world.echo.port}/echo/mapped"]
    for payload in payloads:
        mark = world.mark()
        reply = await world.attacker.get(world.url(f"/redirect?to={quote(payload, safe='')}"), follow=False)
        # (one request; a vendor that cannot write a CR/LF Location drops the connection, and
        # the upstream client may then try that GET once more)
        assert {r.path.split("?")[0] for r in world.since(mark)} == {"/redirect"}, payload
        location = reply.header("Location")
        if location is not None:
            assert in_proxy_space(location, world.url("/redirect")), (payload, location)
            assert not any(ch in location for ch in "\\\t\r\n\x00"), (payload, location)
        else:
            # the "leaving" page, or (a CR/LF the vendor cannot even send) "cannot be reached"
            assert reply.header("X-Libproxy-Reason") in ("leaving", "vendor-unreachable"), (payload, reply.status)
            assert "<script" not in reply.text
        refresh = reply.header("Refresh")
        assert refresh is None or "javascript" not in refresh.lower()
    assert world.decoy.connections == 0
    await world.bystander.served()


@pytest.mark.parametrize("path", ["/admin", "/metrics", "/debug/pprof", "/status", "/server-status",
                                  "/.well-known/security.txt", "/proxy_url"])
async def test_redirect_1e_admin_surface_absent_on_public_listener_pomerium_cve_2022_24797(world: World,
                                                                                          path: str) -> None:
    mark = world.mark()
    for browser in (world.attacker, Browser(world.proxy, local_addr="127.0.0.5")):
        reply = await browser.get(f"http://{PROXY_HOST}{path}", follow=False)
        assert reply.status == 404, (path, reply.status)
        if browser is not world.attacker:
            await browser.close()
    assert world.since(mark) == []


async def test_redirect_1e_reserved_paths_on_proxied_hosts_ezproxy_admin(world: World) -> None:
    """On a proxied host only /.libproxy/connect (GET) is the proxy's; other /.libproxy/ paths
    are 404 and never forwarded, and the vendor's own /login and /logout stay the vendor's (so a
    vendor page cannot shadow the proxy's sign-out, and the proxy's cannot be reached there)."""
    mark = world.mark()
    for method, path in (("GET", "/.libproxy/admin"), ("GET", "/.libproxy/logout"), ("POST", "/.libproxy/connect"),
                         ("GET", "/.libproxy/connect/../admin"), ("GET", "/.LIBPROXY/connect")):
        reply = await world.attacker.request(method, world.url(path), follow=False)
        if path == "/.LIBPROXY/connect":
            assert reply.status in (200, 404)  # a vendor path (case matters in paths), or refused
        else:
            assert reply.status == 404, (method, path, reply.status)
    assert [r.path for r in world.since(mark)] in ([], ["/.LIBPROXY/connect"])
    mark = world.mark()
    vendor_login = await world.attacker.get(world.url("/login"), follow=False)
    vendor_logout = await world.attacker.post(world.url("/logout"), data={"csrf": "x"}, follow=False)
    assert vendor_login.text.startswith("<html>") and vendor_logout.text.startswith("<html>")
    assert [r.path for r in world.since(mark)] == ["/login", "/logout"]
    still = await world.attacker.get(world.url("/echo/attack/still-signed-in"), follow=False)
    assert still.status == 200 and still.json()["path"] == "/echo/attack/still-signed-in"
