"""Cross-site request forgery against sign-in and sign-out (bad-inputs.md 1d/6, issue 11 unclear).

A proxied vendor page is same-site with the proxy (``*.proxy.localhost``), so SameSite=Lax
cookies ride along on its forms and on top-level navigations: the proxy's own Origin check and
the page's token are what refuse them. After each attempt the patron must still be signed in:
their next vendor page arrives at the vendor with the assertion.
"""

from __future__ import annotations

from tests.security.conftest import World
from tests.support import PROXY_HOST, Browser

LOGOUT = f"http://{PROXY_HOST}/logout"
LOGIN = f"http://{PROXY_HOST}/login"


async def still_signed_in(world: World, patron: Browser, tag: str) -> None:
    mark = world.mark()
    reply = await patron.get(world.url(f"/echo/attack/{tag}"), follow=False)
    assert reply.status == 200, (tag, reply.status)
    [got] = world.since(mark)
    assert got.header("X-Library-Membership"), tag


async def test_csrf_logout_cross_site_get_does_not_sign_out_issue11(world: World) -> None:
    """Before the fix, GET /logout signed out: a link or an <img> on any page (top-level
    navigation carries the Lax cookie) ended the patron's session."""
    evil = {"Referer": "https://evil.example/page", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    mark = world.mark()
    for _ in range(3):
        reply = await world.attacker.get(LOGOUT, headers=evil, follow=False)
        assert reply.status == 200
        assert 'name="csrf"' in reply.text  # only a confirmation button
    reply = await world.attacker.get(f"{LOGOUT}?everywhere=1&csrf=x", follow=False)
    assert reply.status == 200 and 'name="csrf"' in reply.text
    assert world.since(mark) == []
    await still_signed_in(world, world.attacker, "after-get-logout")


async def test_csrf_logout_post_needs_the_page_token_owasp_csrf(world: World) -> None:
    other = Browser(world.proxy, local_addr="127.0.0.9")
    try:
        page = await other.get(LOGOUT)  # a token, but for another browser
        assert page.status == 200
        foreign = other.cookies.get(PROXY_HOST, {}).get("libproxy_csrf", "")
        for data in ({}, {"csrf": ""}, {"csrf": "0" * 32}, {"csrf": foreign}, {"csrf": foreign, "everywhere": "1"}):
            reply = await world.attacker.post(LOGOUT, data=data, follow=False)
            assert reply.header("X-Libproxy-Reason") != "signed-out", data
        await still_signed_in(world, world.attacker, "after-tokenless-post")
    finally:
        await other.close()


async def test_csrf_logout_from_a_vendor_page_origin_refused_same_site_not_same_origin(world: World) -> None:
    page = await world.attacker.get(LOGOUT)
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    for origin in (f"http://{world.host}", "https://evil.example", "null", f"http://{PROXY_HOST}.evil.example"):
        reply = await world.attacker.post(LOGOUT, data={"csrf": csrf, "everywhere": "1"},
                                          headers={"Origin": origin}, follow=False)
        assert reply.status == 403 and reply.header("X-Libproxy-Reason") == "cross-site", origin
    await still_signed_in(world, world.attacker, "after-cross-origin-post")
    # The control: the patron's own button does sign out.
    patron = Browser(world.proxy, local_addr="127.0.0.10")
    try:
        assert (await patron.sign_in("2000", "2222", f"{world.echo.origin}/echo/attack/control")).status == 200
        out = await patron.sign_out()
        assert out.header("X-Libproxy-Reason") == "signed-out"
        mark = world.mark()
        again = await patron.get(world.url("/echo/attack/control-after"), follow=False)
        assert again.status == 302 and world.since(mark) == []
    finally:
        await patron.close()


async def test_csrf_login_cross_site_and_forged_token_refused_cve_2022_37153(world: World) -> None:
    victim = Browser(world.proxy, local_addr="127.0.0.11")
    mark = world.mark()
    try:
        form = await victim.get(LOGIN)
        csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        for origin in (f"http://{world.host}", "https://evil.example"):
            reply = await victim.post(LOGIN, headers={"Origin": origin},
                                      data={"csrf": csrf, "url": "", "card": "1000", "pin": "1111"}, follow=False)
            assert reply.status == 403 and reply.header("X-Libproxy-Reason") == "cross-site", origin
        # No cookie, or a token the attacker made up: refused (login CSRF plants the attacker's session).
        for cookie in ("", "libproxy_csrf=" + "a" * 32):
            status, headers, _ = await world.fetch(
                "/login", host=PROXY_HOST, method="POST", cookie=cookie,
                headers=("Content-Type: application/x-www-form-urlencoded",),
                body=b"csrf=" + b"b" * 32 + b"&url=&card=1000&pin=1111", local_addr="127.0.0.11")
            assert status == 400, cookie
            assert "libproxy=" not in headers.get("set-cookie", "").replace("libproxy_csrf", "")
        assert "libproxy" not in victim.cookies.get(PROXY_HOST, {})
        assert world.since(mark) == []  # no sign-in, so no sign-on at the vendor either
    finally:
        await victim.close()
