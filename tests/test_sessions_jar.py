"""The vendor cookie jar kept on the server (RFC 6265 matching, bounds, storage form)."""

from __future__ import annotations

from proxy.sessions.jar import MAX_COOKIES, Cookie, Jar, parse_set_cookie


def test_cookie_jar_rules() -> None:
    jar = Jar()
    now = 1_000_000.0
    for header in ("sid=1; Path=/", "shared=2; Domain=.vendor.com; Path=/", "deep=3; Path=/a/b",
                   "sec=4; Secure", "old=5; Max-Age=0", "bad=6; Domain=evil.example", "tld=7; Domain=com"):
        cookie = parse_set_cookie(header, "www.vendor.com", "/a/b/page", now)
        if cookie is not None:
            jar.apply(cookie, now)
    assert {c.name for c in jar} == {"sid", "shared", "deep", "sec"}
    assert jar.header_for("www.vendor.com", "/a/b/c", True, now) == "deep=3; sec=4; sid=1; shared=2"
    assert jar.header_for("cdn.vendor.com", "/", False, now) == "shared=2"
    assert jar.header_for("www.vendor.com", "/a/bc", False, now) == "sid=1; shared=2"
    expiring = parse_set_cookie("t=1; Max-Age=10", "www.vendor.com", "/", now)
    assert expiring is not None
    jar.apply(expiring, now)
    assert "t=1" not in (jar.header_for("www.vendor.com", "/", False, now + 11) or "")


def test_cookie_jar_is_bounded() -> None:
    jar = Jar()
    for i in range(MAX_COOKIES * 2):
        cookie = parse_set_cookie(f"c{i}=v", "www.vendor.com", "/", 0.0)
        assert cookie is not None
        jar.apply(cookie, 0.0)
    assert len(jar) == MAX_COOKIES
    assert parse_set_cookie("big=" + "x" * 5000, "www.vendor.com", "/", 0.0) is None


def test_cookie_records_survive_storage() -> None:
    cookie = parse_set_cookie("a=b; Domain=vendor.com; Path=/x; Secure; Max-Age=60", "www.vendor.com", "/", 0.0)
    assert cookie is not None
    assert Cookie.from_json(cookie.to_json()) == cookie
    assert Cookie.from_json("{not json") is None


def test_an_absurd_max_age_is_clamped_not_a_crash() -> None:
    cookie = parse_set_cookie("a=b; Max-Age=" + "9" * 400, "www.vendor.com", "/", 0.0)
    assert cookie is not None and cookie.expires == 400 * 86400
