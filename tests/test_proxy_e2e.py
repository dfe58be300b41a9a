"""The proxy end to end: a real proxy, a real recording vendor, a small browser, all on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import jwt
import pytest
from jwt import PyJWKSet

from proxy.context import ASSERTIONS, SESSIONS
from tests.support import PROXY_HOST, Browser, EchoVendor, RunningProxy, base_config, free_port, run_proxy


def vendor_entry(echo: EchoVendor, vid: str = "echo", groups: tuple[str, ...] = ("wolcott",)) -> dict[str, object]:
    return {"id": vid, "title": "Echo Vendor", "start": f"{echo.origin}/", "hosts": [echo.origin],
            "groups": list(groups)}


@pytest.fixture
async def proxy(tmp_path: Path, echo: EchoVendor) -> AsyncIterator[RunningProxy]:
    async with run_proxy(base_config(tmp_path, [vendor_entry(echo)])) as running:
        yield running


@pytest.fixture
async def browser(proxy: RunningProxy) -> AsyncIterator[Browser]:
    b = Browser(proxy)
    yield b
    await b.close()


async def signed_in(proxy: RunningProxy, echo: EchoVendor, card: str = "1000", pin: str = "1111") -> Browser:
    b = Browser(proxy)
    reply = await b.sign_in(card, pin, f"{echo.origin}/echo")
    assert reply.status == 200, reply.text
    return b


async def test_sign_in_reaches_vendor_through_proxied_host(proxy: RunningProxy, echo: EchoVendor,
                                                           browser: Browser) -> None:
    reply = await browser.sign_in("1000", "1111", f"{echo.origin}/echo?q=owls")
    assert reply.status == 200
    host = proxy.proxied_host(echo.origin)
    assert host == f"127-0-0-1---h{echo.port}.{PROXY_HOST}"
    assert reply.url == f"http://{host}/echo?q=owls"
    assert reply.json()["path"] == "/echo?q=owls"
    # The sign-in went through the one-time ticket on the proxied host.
    assert any("/.libproxy/connect?ticket=" in url for _, url in reply.history)
    # Next request on the same host needs no sign-in.
    again = await browser.get(f"http://{host}/echo/next", follow=False)
    assert again.status == 200 and again.json()["path"] == "/echo/next"


async def test_wrong_pin_and_unknown_card_look_the_same(proxy: RunningProxy, echo: EchoVendor) -> None:
    replies = []
    for card, pin in (("1000", "9999"), ("5555", "1111")):
        b = Browser(proxy)
        replies.append(await b.sign_in(card, pin, f"{echo.origin}/echo"))
        await b.close()
    assert [r.status for r in replies] == [401, 401]
    strip = [r.text.split('name="csrf" value="')[0] for r in replies]
    assert strip[0] == strip[1]
    assert "not recognised" in replies[0].text
    assert echo.received == []


async def test_empty_and_overlong_credentials_never_authenticate(proxy: RunningProxy, echo: EchoVendor) -> None:
    for card, pin in (("1000", ""), ("", "1111"), ("1000" * 40, "1111"), ("1000\x00", "1111")):
        b = Browser(proxy)
        reply = await b.sign_in(card, pin, f"{echo.origin}/echo")
        await b.close()
        assert reply.status == 401, (card, pin)
    assert echo.received == []


async def test_expired_card_gets_a_clear_page(proxy: RunningProxy, echo: EchoVendor, browser: Browser) -> None:
    reply = await browser.sign_in("4000", "4444", f"{echo.origin}/echo")
    assert reply.status == 403
    assert "expired" in reply.text
    assert echo.received == []


async def test_patron_without_licence_sees_not_licensed(proxy: RunningProxy, echo: EchoVendor,
                                                        browser: Browser) -> None:
    reply = await browser.sign_in("3000", "3333", f"{echo.origin}/echo")
    assert reply.status == 403
    assert reply.header("X-Libproxy-Reason") == "not-licensed"
    assert "Wolcott" in reply.text  # the group code made readable (no [groups] names here)
    assert echo.received == []


IDENTIFYING = {
    "Authorization": "Basic cGF0cm9uOnNlY3JldA==",
    "X-Forwarded-For": "203.0.113.7",
    "X_Forwarded_For": "203.0.113.7",
    "x.forwarded.for": "203.0.113.7",
    "X-FORWARDED-HOST": "evil.example",
    "X-Forwarded-Proto": "http",
    "Forwarded": "for=203.0.113.7;host=evil.example",
    "X-Real-IP": "203.0.113.7",
    "X_Real_IP": "203.0.113.7",
    "True-Client-IP": "203.0.113.7",
    "CF-Connecting-IP": "203.0.113.7",
    "X-Client-IP": "203.0.113.7",
    "Via": "1.1 patron-laptop",
    "From": "patron@example.org",
    "Sec-CH-UA": '"Chromium";v="156"',
    "Sec-CH-UA-Platform": '"Linux"',
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "X-B3-TraceId": "80f198ee56343ba864fe8b2a57d3eff7",
    "X-Request-Id": "patron-request",
    "X-Library-Membership_": "forged",
    "X_Library_Membership": "forged",
    "X.Library.Membership": "forged",
    "X-Patron-Card": "1000",
}


async def test_identifying_headers_never_reach_the_vendor(proxy: RunningProxy, echo: EchoVendor) -> None:
    b = await signed_in(proxy, echo)
    host = proxy.proxied_host(echo.origin)
    allowed = {
        "Accept": "text/html", "Accept-Language": "en-US", "User-Agent": "TestBrowser/1.0",
        "If-None-Match": '"abc"', "Range": "bytes=0-10", "Cache-Control": "no-cache",
    }
    headers = {**allowed, **IDENTIFYING, "X-Library-Membership": "forged.jwt.value",
               "Connection": "close, X-Library-Membership, Accept-Language"}
    echo.received.clear()
    reply = await b.get(f"http://{host}/echo", headers=headers, follow=False)
    assert reply.status == 200
    got = echo.last
    names = got.names()
    for name in IDENTIFYING:
        assert name.lower() not in names, name
    assert "cookie" not in names  # the proxy's own session cookie never leaves
    assert "x-forwarded-for" not in names and "forwarded" not in names and "via" not in names
    # Listed in Connection: hop-by-hop, dropped, but the proxy's own assertion still arrives once.
    assert "accept-language" not in names
    assert [v for k, v in got.headers if k.lower() == "x-library-membership"] != ["forged.jwt.value"]
    assert len([1 for k, _ in got.headers if k.lower() == "x-library-membership"]) == 1
    for name in ("Accept", "If-None-Match", "Range", "Cache-Control"):
        assert got.header(name) == allowed[name], name
    # [privacy] user_agent = "reduce" (the default): an unknown browser becomes the generic form.
    assert got.header("User-Agent") == "Mozilla/5.0"
    assert got.header("Host") == f"127.0.0.1:{echo.port}"
    # Nothing the patron typed is identifying, and nothing else carries the card number.
    plain = [(k, v) for k, v in got.headers if k.lower() not in ("host", "x-library-membership")]
    assert "1000" not in json.dumps(plain)  # (the JWT is base64 and may hold any digits by chance)
    await b.close()


async def test_origin_and_referer_mapped_back_only_within_the_vendor(proxy: RunningProxy,
                                                                     echo: EchoVendor) -> None:
    b = await signed_in(proxy, echo)
    host = proxy.proxied_host(echo.origin)
    await b.post(f"http://{host}/echo", follow=False, data=b"x",
                 headers={"Origin": f"http://{host}", "Referer": f"http://{host}/page?id=7#frag"})
    assert echo.last.header("Origin") == echo.origin
    assert echo.last.header("Referer") == f"{echo.origin}/page?id=7"
    await b.get(f"http://{host}/echo", follow=False,
                headers={"Referer": "https://search.example/?q=private+matter", "Origin": "https://evil.example"})
    assert echo.last.header("Referer") is None
    assert echo.last.header("Origin") is None
    await b.get(f"http://{host}/echo", follow=False, headers={"Referer": f"http://{PROXY_HOST}/databases"})
    assert echo.last.header("Referer") is None
    await b.close()


async def test_assertion_verifies_with_jwks_and_has_exactly_the_claims(proxy: RunningProxy, echo: EchoVendor,
                                                                       browser: Browser) -> None:
    await browser.sign_in("1000", "1111", f"{echo.origin}/echo")
    token = echo.last.header("X-Library-Membership")
    assert token
    jwks_reply = await browser.get(f"http://{PROXY_HOST}/.well-known/jwks.json")
    keyset = PyJWKSet.from_dict(jwks_reply.json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keyset.keys if k.key_id == kid)
    claims = jwt.decode(token, key.key, algorithms=["ES256"], audience="echo",
                        issuer=f"http://{PROXY_HOST}")
    assert set(claims) == {"iss", "aud", "iat", "exp", "jti", "eduPersonScopedAffiliation",
                           "eduPersonEntitlement"}
    assert claims["eduPersonScopedAffiliation"] == "member@wolcott.lib.ct.us"
    assert claims["eduPersonEntitlement"] == "urn:mace:dir:entitlement:common-lib-terms"
    assert claims["exp"] - claims["iat"] == 300
    # Replaying it to another vendor fails: the audience is this vendor.
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key.key, algorithms=["ES256"], audience="other-vendor")
    # Shared, not personal: a second patron's request carries the very same token.
    other = await signed_in(proxy, echo, "2000", "2222")
    assert echo.last.header("X-Library-Membership") == token
    await other.close()


async def test_vendor_cookies_stay_on_the_server_and_apart(proxy: RunningProxy, echo: EchoVendor) -> None:
    alice = await signed_in(proxy, echo, "1000", "1111")
    bob = await signed_in(proxy, echo, "2000", "2222")
    host = proxy.proxied_host(echo.origin)
    set_url = f"http://{host}/set-cookie?c={quote('vsess=alice-secret; Path=/; HttpOnly')}"
    reply = await alice.get(set_url, follow=False)
    assert reply.status == 200
    assert reply.headers_all("Set-Cookie") == []  # the browser never receives a vendor cookie
    await alice.get(f"http://{host}/echo", follow=False)
    assert "vsess=alice-secret" in (echo.last.header("Cookie") or "")
    await bob.get(f"http://{host}/echo", follow=False)
    assert "alice-secret" not in (echo.last.header("Cookie") or "")
    # Only the proxy's own cookies ever reached either browser.
    for b in (alice, bob):
        for _, raw in b.set_cookie_headers:
            assert raw.split("=", 1)[0] in ("libproxy", "libproxy_csrf", "libproxy_bind"), raw
    # Signing out forgets the jar: signing in again starts empty.
    await alice.sign_out()
    alice2 = await signed_in(proxy, echo, "1000", "1111")
    await alice2.get(f"http://{host}/echo", follow=False)
    assert "alice-secret" not in (echo.last.header("Cookie") or "")
    for b in (alice, bob, alice2):
        await b.close()


async def test_logout_ends_the_session_on_every_host(proxy: RunningProxy, echo: EchoVendor) -> None:
    b = await signed_in(proxy, echo)
    host = proxy.proxied_host(echo.origin)
    vendor_cookie = dict(b.cookies[host])
    reply = await b.sign_out()
    assert reply.status == 200 and "signed out" in reply.text
    # Replaying the vendor host's old cookie gets a sign-in redirect, not the vendor.
    echo.received.clear()
    b.cookies[host] = vendor_cookie
    again = await b.get(f"http://{host}/echo", follow=False)
    assert again.status == 302
    assert again.header("Location", ).startswith(f"http://{PROXY_HOST}/login?url=")  # type: ignore[union-attr]
    assert echo.received == []
    await b.close()


async def test_new_session_id_at_every_sign_in(proxy: RunningProxy, echo: EchoVendor, browser: Browser) -> None:
    browser.cookies[PROXY_HOST] = {"libproxy": "attacker-chosen-session-id-0123456789"}
    await browser.sign_in("1000", "1111", f"{echo.origin}/echo")
    first = browser.cookies[PROXY_HOST]["libproxy"]
    assert first != "attacker-chosen-session-id-0123456789"
    # Signing in again while signed in (e.g. with another card) also gets a fresh id.
    browser.cookies[PROXY_HOST].pop("libproxy")
    form = await browser.get(f"http://{PROXY_HOST}/login")
    csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    browser.cookies[PROXY_HOST]["libproxy"] = first
    await browser.post(f"http://{PROXY_HOST}/login", data={"csrf": csrf, "url": "", "card": "2000", "pin": "2222"})
    assert browser.cookies[PROXY_HOST]["libproxy"] != first
    store = proxy.app[SESSIONS]
    assert await store.get(first) is None
    cookie_lines = [raw for host, raw in browser.set_cookie_headers if raw.startswith("libproxy=")]
    assert all("HttpOnly" in raw and "SameSite=Lax" in raw and "Domain" not in raw for raw in cookie_lines)


async def test_unsigned_visit_to_proxied_host_goes_to_sign_in(proxy: RunningProxy, echo: EchoVendor,
                                                               browser: Browser) -> None:
    host = proxy.proxied_host(echo.origin)
    reply = await browser.get(f"http://{host}/echo?x=1", follow=False)
    assert reply.status == 302
    assert reply.header("Location") == (
        f"http://{PROXY_HOST}/login?url={quote(f'{echo.origin}/echo?x=1', safe='')}")
    post = await browser.post(f"http://{host}/echo", follow=False, data=b"x")
    assert post.status == 401
    assert echo.received == []


async def test_methods_and_streamed_upload(proxy: RunningProxy, echo: EchoVendor) -> None:
    b = await signed_in(proxy, echo)
    host = proxy.proxied_host(echo.origin)
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        reply = await b.request(method, f"http://{host}/echo", follow=False)
        assert reply.status == 200 and reply.json()["method"] == method
    head = await b.request("HEAD", f"http://{host}/echo", follow=False)
    assert head.status == 200 and head.body == b""
    form = await b.post(f"http://{host}/echo", data={"q": "owls"}, follow=False)
    assert echo.last.body == b"q=owls"
    assert form.json()["body_length"] == 6

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"u" * 65536

    up = await b.post(f"http://{host}/upload", data=chunks(), follow=False)
    assert up.json() == {"received_bytes": 64 * 65536}
    await b.close()


async def test_large_download_streams_with_length(proxy: RunningProxy, echo: EchoVendor) -> None:
    b = await signed_in(proxy, echo)
    host = proxy.proxied_host(echo.origin)
    reply = await b.get(f"http://{host}/big?size={20 * 1024 * 1024}", follow=False)
    assert reply.status == 200
    assert len(reply.body) == 20 * 1024 * 1024
    assert reply.header("Content-Length") == str(20 * 1024 * 1024)
    await b.close()


async def test_redirects_are_mapped_not_followed(proxy: RunningProxy, echo: EchoVendor) -> None:
    b = await signed_in(proxy, echo)
    host = proxy.proxied_host(echo.origin)
    echo.received.clear()
    inside = await b.get(f"http://{host}/redirect?to={quote(echo.origin + '/echo/there')}", follow=False)
    assert inside.status == 302
    assert inside.header("Location") == f"http://{host}/echo/there"
    for target in ("http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:1/internal",
                   "https://evil.example/"):
        echo.received.clear()
        outside = await b.get(f"http://{host}/redirect?to={quote(target)}", follow=False)
        assert outside.status == 200
        assert outside.header("X-Libproxy-Reason") == "leaving"
        assert outside.header("Location") is None
        assert len(echo.received) == 1  # the proxy followed nothing
    relative = await b.get(f"http://{host}/redirect?to=/echo/rel", follow=False)
    assert relative.header("Location") == "/echo/rel"
    backslash = quote("/\\evil.example")
    tricky = await b.get(f"http://{host}/redirect?to={backslash}", follow=False)
    assert tricky.header("Location") is None
    await b.close()


STARTING_POINTS_REFUSED = [
    "https://evil.example/",
    "https://vendor.example@evil.example/",
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "http:evil.example",
    "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "http://127.0.0.1:1/",
    "http://2130706433/",
    '"><svg/onload=alert(1)>',
]


@pytest.mark.parametrize("target", STARTING_POINTS_REFUSED)
async def test_unconfigured_starting_points_are_refused(proxy: RunningProxy, echo: EchoVendor,
                                                        target: str) -> None:
    for signed in (False, True):
        b = await signed_in(proxy, echo) if signed else Browser(proxy)
        echo.received.clear()
        reply = await b.get(f"http://{PROXY_HOST}/login?url={quote(target, safe='')}", follow=False)
        assert reply.status == 404
        assert reply.header("Location") is None
        assert "<svg" not in reply.text and "evil.example" not in reply.text
        assert "frame-ancestors 'none'" in (reply.header("Content-Security-Policy") or "")
        assert echo.received == []
        await b.close()


async def test_userinfo_to_configured_vendor_is_refused(proxy: RunningProxy, echo: EchoVendor) -> None:
    b = Browser(proxy)
    reply = await b.get(f"http://{PROXY_HOST}/login?url={quote(f'http://evil.example@127.0.0.1:{echo.port}/')}")
    assert reply.status == 404
    dup = await b.get(f"http://{PROXY_HOST}/login?url={quote(echo.origin)}&url={quote('https://evil.example/')}")
    # As EZproxy reads a raw starting point, everything after "url=" is one target here: a URL
    # whose port is "45119&url=https:", which names no configured vendor.
    assert dup.status == 404 and dup.header("Location") is None
    polluted = await b.get(f"http://{PROXY_HOST}/login?qurl={quote(echo.origin)}&qurl={quote('https://evil.example/')}")
    assert polluted.status == 400  # two encoded targets: parameter pollution, refused
    await b.close()


async def test_unknown_and_malformed_hosts(proxy: RunningProxy, echo: EchoVendor, browser: Browser) -> None:
    unknown = await browser.get(f"http://www-evil-example.{PROXY_HOST}/", follow=False)
    assert unknown.status == 404 and unknown.header("X-Libproxy-Reason") == "not-configured"
    other = await browser.get("http://evil.example/", follow=False)
    assert other.status == 404
    garbled = await browser.get(f"http://{PROXY_HOST}/", headers={"Host": f"x.{PROXY_HOST}@evil.example"},
                                follow=False)
    assert garbled.status == 400
    # The proxy keeps serving.
    assert (await browser.get(f"http://{PROXY_HOST}/healthz")).status == 200
    assert echo.received == []


async def test_absolute_form_request_line_is_refused(proxy: RunningProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET http://evil.example/ HTTP/1.1\r\nHost: " + PROXY_HOST.encode() + b"\r\n"
                 b"Connection: close\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 400")


async def test_malformed_cookies_are_ignored(proxy: RunningProxy, echo: EchoVendor, browser: Browser) -> None:
    host = proxy.proxied_host(echo.origin)
    for cookie in ("libproxy=", "libproxy=;;;;", "libproxy=%00%0d%0a", "libproxy=" + "A" * 4000,
                   "=====", "libproxy=../../etc/passwd"):
        reply = await browser.get(f"http://{host}/echo", headers={"Cookie": cookie}, follow=False)
        assert reply.status in (302, 400), cookie
    assert echo.received == []
    assert (await browser.get(f"http://{PROXY_HOST}/databases")).status == 200


async def test_vendor_down_or_silent_gets_clear_pages(tmp_path: Path, echo: EchoVendor) -> None:
    dead_port = free_port()
    vendors = [vendor_entry(echo), {"id": "dead", "title": "Dead", "start": f"http://127.0.0.1:{dead_port}/",
                                    "hosts": [f"http://127.0.0.1:{dead_port}"], "groups": ["wolcott"]}]
    config = base_config(tmp_path, vendors, upstream={"read_timeout": "1s", "connect_timeout": "1s"})
    async with run_proxy(config) as running:
        b = await signed_in(running, echo)
        dead = await b.get(f"http://{PROXY_HOST}/login?url={quote(f'http://127.0.0.1:{dead_port}/x')}")
        assert dead.status == 502
        assert "cannot be reached" in dead.text
        host = running.proxied_host(echo.origin)
        slow = await b.get(f"http://{host}/slow?s=5", follow=False)
        assert slow.status == 504
        assert "not answering" in slow.text
        ok = await b.get(f"http://{host}/echo", follow=False)
        assert ok.status == 200
        await b.close()


async def test_pages_escape_and_forbid_framing(proxy: RunningProxy, browser: Browser) -> None:
    reply = await browser.get(f"http://{PROXY_HOST}/login")
    assert reply.status == 200
    assert "frame-ancestors 'none'" in (reply.header("Content-Security-Policy") or "")
    assert reply.header("X-Frame-Options") == "DENY"
    assert reply.header("X-Content-Type-Options") == "nosniff"
    csrf = reply.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    failed = await browser.post(f"http://{PROXY_HOST}/login",
                                data={"csrf": csrf, "url": "", "card": "<img src=x onerror=alert(1)>", "pin": "x"})
    assert failed.status == 401 and "<img" not in failed.text
    missing = await browser.get(f"http://{PROXY_HOST}/<script>alert(1)</script>")
    assert missing.status == 404 and "<script>" not in missing.text
    for path in ("/admin", "/metrics", "/debug/pprof"):
        assert (await browser.get(f"http://{PROXY_HOST}{path}")).status == 404


async def test_login_csrf_is_refused(proxy: RunningProxy, echo: EchoVendor, browser: Browser) -> None:
    reply = await browser.post(f"http://{PROXY_HOST}/login",
                               data={"csrf": "forged", "url": "", "card": "1000", "pin": "1111"})
    assert reply.status == 400
    assert "libproxy" not in browser.cookies.get(PROXY_HOST, {})


async def test_databases_lists_vendors_and_jwks_is_public(proxy: RunningProxy, echo: EchoVendor,
                                                          browser: Browser) -> None:
    page = await browser.get(f"http://{PROXY_HOST}/databases")
    assert "Echo Vendor" in page.text
    assert quote(f"{echo.origin}/", safe="") in page.text
    jwks = (await browser.get(f"http://{PROXY_HOST}/.well-known/jwks.json")).json()
    assert jwks["keys"][0]["kty"] == "EC" and "d" not in jwks["keys"][0]
    assert jwks["keys"][0]["kid"] == proxy.app[ASSERTIONS].signing_key.kid


async def test_session_holds_no_card_or_pin(proxy: RunningProxy, echo: EchoVendor) -> None:
    b = await signed_in(proxy, echo)
    store = proxy.app[SESSIONS]
    session = await store.get(b.cookies[PROXY_HOST]["libproxy"])
    assert session is not None
    def strings(value: object) -> list[str]:
        if isinstance(value, dict):
            return [*value.keys(), *(t for v in value.values() for t in strings(v))]
        if isinstance(value, list):
            return [t for v in value for t in strings(v)]
        return [value] if isinstance(value, str) else []

    # (timestamps are numbers and may contain any digits; only stored text could hold a card)
    for text in strings(session.to_dict()):
        assert "1000" not in text and "1111" not in text, text
    assert session.membership.groups == frozenset({"wolcott", "bibliomation"})
    assert session.membership.key and len(session.membership.key) == 32
    await b.close()


async def test_session_page_and_sign_out_everywhere(proxy: RunningProxy, echo: EchoVendor) -> None:
    laptop = await signed_in(proxy, echo)
    phone = await signed_in(proxy, echo)
    other_patron = await signed_in(proxy, echo, "2000", "2222")
    page = await laptop.get(f"http://{PROXY_HOST}/session")
    assert page.status == 200
    assert "Wolcott" in page.text and "Echo Vendor" in page.text
    assert "1000" not in page.text and "1111" not in page.text
    anonymous = Browser(proxy)
    assert "You are not signed in" in (await anonymous.get(f"http://{PROXY_HOST}/session")).text
    await anonymous.close()
    done = await laptop.sign_out(everywhere=True)
    assert "other session" in done.text
    host = proxy.proxied_host(echo.origin)
    assert (await phone.get(f"http://{host}/echo", follow=False)).status == 302
    assert (await other_patron.get(f"http://{host}/echo", follow=False)).status == 200
    for b in (laptop, phone, other_patron):
        await b.close()


async def test_privacy_page_is_generated_from_the_configuration(proxy: RunningProxy, browser: Browser) -> None:
    page = await browser.get(f"http://{PROXY_HOST}/privacy")
    assert page.status == 200
    assert "member@wolcott.lib.ct.us" in page.text or "wolcott.lib.ct.us" in page.text
    assert "12 hours" in page.text  # the session lifetime actually configured
    assert "90 days" in page.text  # the statistics detail retention


async def test_websocket_through_the_proxy(proxy: RunningProxy, echo: EchoVendor) -> None:
    b = await signed_in(proxy, echo)
    host = proxy.proxied_host(echo.origin)
    cookie = f"libproxy={b.cookies[host]['libproxy']}"
    url = f"http://127.0.0.1:{proxy.port}/ws"
    echo.received.clear()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.ws_connect(url, headers={"Host": host, "Cookie": cookie, "Origin": f"http://{host}",
                                                 "X-Forwarded-For": "203.0.113.9"}, protocols=("chat",)) as ws:
            assert ws.protocol == "chat"
            await ws.send_str("hello")
            assert (await ws.receive()).data == "echo:hello"
            await ws.send_bytes(b"abc")
            assert (await ws.receive()).data == b"cba"
        got = echo.last
        assert got.path == "/ws" and got.header("X-Library-Membership")
        assert got.header("Origin") == echo.origin
        assert "x-forwarded-for" not in got.names() and "cookie" not in got.names()
        # A page on another site cannot open a socket with the patron's cookie.
        echo.received.clear()
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, headers={"Host": host, "Cookie": cookie, "Origin": "https://evil.example"})
        assert refused.value.status == 403
        # A bogus handshake opens nothing upstream.
        async with http.get(url, headers={"Host": host, "Cookie": cookie, "Upgrade": "websocket",
                                          "Connection": "Upgrade", "Sec-WebSocket-Version": "1337",
                                          "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as bogus:
            assert bogus.status == 400
        # Not signed in: sign-in redirect, no tunnel.
        async with http.get(url, allow_redirects=False, headers={
                "Host": host, "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as unsigned:
            assert unsigned.status == 302
    assert echo.received == []
    await b.close()


async def test_streamed_upload_over_the_cap_gets_413(tmp_path: Path, echo: EchoVendor) -> None:
    config = base_config(tmp_path, [vendor_entry(echo)], proxy={"max_upload": "1MiB"})
    async with run_proxy(config) as running:
        b = await signed_in(running, echo)
        host = running.proxied_host(echo.origin)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(40):  # 2.5 MiB, chunked: no Content-Length to refuse up front
                yield b"u" * 65536

        echo.received.clear()
        too_big = await b.post(f"http://{host}/upload", data=chunks(), follow=False)
        assert too_big.status == 413
        declared = await b.post(f"http://{host}/upload", data=b"x" * (2 * 1024 * 1024), follow=False)
        assert declared.status == 413
        # The declared-too-large one never reached the vendor at all.
        assert len([r for r in echo.received if r.path == "/upload"]) <= 1
        assert (await b.get(f"http://{host}/echo", follow=False)).status == 200
        await b.close()


async def test_a_sign_on_ticket_cannot_plant_a_session_in_another_browser(proxy: RunningProxy,
                                                                        echo: EchoVendor) -> None:
    attacker = await signed_in(proxy, echo)
    link = await attacker.get(f"http://{PROXY_HOST}/login?url={quote(echo.origin + '/echo')}", follow=False)
    ticket_url = link.header("Location")
    assert ticket_url and "/.libproxy/connect?ticket=" in ticket_url
    victim = Browser(proxy)
    echo.received.clear()
    reply = await victim.get(ticket_url, follow=False)
    assert reply.status == 400 and reply.header("X-Libproxy-Reason") == "ticket-elsewhere"
    assert not victim.cookies.get(proxy.proxied_host(echo.origin))
    assert echo.received == []
    await attacker.close()
    await victim.close()


async def test_forms_from_vendor_pages_cannot_sign_in_or_out(proxy: RunningProxy, echo: EchoVendor) -> None:
    b = await signed_in(proxy, echo)
    other_device = await signed_in(proxy, echo)
    vendor_page = f"http://{proxy.proxied_host(echo.origin)}"
    fresh = Browser(proxy)
    form = await fresh.get(f"http://{PROXY_HOST}/login")
    csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    login = await fresh.post(f"http://{PROXY_HOST}/login", headers={"Origin": vendor_page},
                             data={"csrf": csrf, "url": "", "card": "2000", "pin": "2222"})
    assert login.status == 403 and login.header("X-Libproxy-Reason") == "cross-site"
    assert "libproxy" not in fresh.cookies.get(PROXY_HOST, {})
    await fresh.close()
    out = await b.sign_out(everywhere=True, headers={"Origin": vendor_page})
    assert "other session" not in out.text and out.header("X-Libproxy-Reason") == "cross-site"
    host = proxy.proxied_host(echo.origin)
    assert (await other_device.get(f"http://{host}/echo", follow=False)).status == 200
    # The vendor host has no sign-out of the proxy's own: that path is the vendor's.
    assert (await other_device.get(f"http://{host}/.libproxy/logout", follow=False)).status == 404
    await b.close()
    await other_device.close()


async def test_slow_sign_in_form_is_abandoned(proxy: RunningProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy.web import routes

    monkeypatch.setattr(routes, "FORM_DEADLINE", 0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"POST /login HTTP/1.1\r\nHost: " + PROXY_HOST.encode() + b"\r\n"
                 b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ncard=1")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 408")
