"""The host rewrite table and matcher (proxy/rewrite/hosts.py): forms, boundaries, schemes,
both directions, and properties that must hold for any input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.config import VendorConfig
from proxy.rewrite.hosts import MAX_ANCHORS, RewriteTable, choose_anchors
from proxy.vendors import VendorMap

GOLDEN = Path(__file__).parent / "golden" / "rewrite"
SPEC = json.loads((GOLDEN / "vendors.json").read_text())
P = "proxy.localhost:8080"


def make_table(production: bool = False, extra: tuple[VendorConfig, ...] = ()) -> RewriteTable:
    proxy = SPEC["production_proxy" if production else "proxy"]
    configs = [
        VendorConfig(id=v["id"], title=v["id"], start="", hosts=tuple(v["hosts"]),
                     domains=tuple(v["domains"]), groups=frozenset({"members"}))
        for v in SPEC["vendors"]
    ]
    return RewriteTable(VendorMap([*configs, *extra], proxy["host"], proxy["scheme"]))


TABLE = make_table()
FWD = TABLE.to_proxy("https")
REV = TABLE.to_vendor()


def fwd(text: str, context: str = "https", table: RewriteTable = TABLE) -> str:
    return table.to_proxy(context).rewrite_all(text.encode()).decode()


def rev(text: str, table: RewriteTable = TABLE) -> str:
    return table.to_vendor().rewrite_all(text.encode()).decode()


# --- the table ------------------------------------------------------------------------------


def test_anchors_are_the_shared_suffixes():
    # vendor.test and vendor-sso.test share a top-level domain: one pass over ".test" finds both.
    assert set(TABLE.forward_anchors) == {b".test", b"othervendor.example", b"127.0.0.1"}
    assert TABLE.reverse_anchors == (b"proxy.localhost",)


def test_anchor_choice():
    assert choose_anchors(["www.example.co.uk", "cdn.example.co.uk"]) == (b"example.co.uk",)
    assert choose_anchors(["vendor.com", "cdn.vendor.com", "x.y.vendor.com"]) == (b"vendor.com",)
    assert choose_anchors(["www.myvendor.com", "vendor.com"]) == (b"vendor.com",)  # contains it
    assert choose_anchors(["localhost"]) == (b"localhost",)
    assert set(choose_anchors(["www.ebsco.com", "search.ebscohost.com", "www.jstor.org"])) == {
        b".com", b"jstor.org"}
    many = [f"www.vendor{n}.{tld}" for n in range(MAX_ANCHORS + 1) for tld in ("a", "b")][: MAX_ANCHORS * 2]
    assert len(choose_anchors([*many, "10.0.0.1"])) == 3


def test_many_vendors_still_rewrite_exactly():
    extra = tuple(
        VendorConfig(id=f"v{n}", title="v", start="", hosts=(f"https://www.vendor{n}.example",),
                     domains=(), groups=frozenset({"members"}))
        for n in range(20)
    )
    table = make_table(extra=extra)
    assert b".example" in table.forward_anchors  # merged per top-level domain
    text = "https://www.vendor7.example/a https://www.vendor7.example.evil/ https://www.google.example/"
    assert fwd(text, table=table) == (
        f"http://www-vendor7-example.{P}/a https://www.vendor7.example.evil/ https://www.google.example/"
    )


def test_patterns_round_trip():
    patterns = TABLE.patterns()
    assert {p.form for p in patterns} == {"absolute", "websocket", "json", "percent", "upper"}
    assert len({p.origin for p in patterns}) >= 8
    for p in patterns:
        assert FWD.rewrite_all(p.vendor) == p.proxy, p
        back = REV.rewrite_all(p.proxy)
        assert back == (p.vendor.lower() if p.form == "upper" else p.vendor), p


def test_fingerprint_follows_the_configuration():
    assert make_table().fingerprint == TABLE.fingerprint
    assert make_table(production=True).fingerprint != TABLE.fingerprint


# --- forms ----------------------------------------------------------------------------------

FORWARD = [
    # absolute, protocol-relative, WebSocket, case
    ("https://www.vendor.test/a", f"http://www-vendor-test.{P}/a"),
    ("//cdn.vendor.test/x.png", f"//cdn-vendor-test.{P}/x.png"),
    ("///cdn.vendor.test/x.png", f"///cdn-vendor-test.{P}/x.png"),
    ("wss://api.vendor.test/live", f"ws://api-vendor-test.{P}/live"),
    ("HTTPS://WWW.VENDOR.TEST/", f"http://www-vendor-test.{P}/"),
    ("https://Cdn.Vendor.Test/A", f"http://cdn-vendor-test.{P}/A"),
    # JSON and JS escapes
    ("https:\\/\\/www.vendor.test\\/a", f"http:\\/\\/www-vendor-test.{P}\\/a"),
    ("\\/\\/cdn.vendor.test\\/a", f"\\/\\/cdn-vendor-test.{P}\\/a"),
    ("https:\\u002f\\u002fwww.vendor.test", f"http:\\u002f\\u002fwww-vendor-test.{P}"),
    ("https:\\x2f\\x2fwww.vendor.test", f"http:\\x2f\\x2fwww-vendor-test.{P}"),
    # JSON inside a JS string: the slashes escaped twice
    ("https:\\\\u002F\\\\u002Fwww.vendor.test", f"http:\\\\u002F\\\\u002Fwww-vendor-test.{P}"),
    ("https\\\\x3a\\\\x2f\\\\x2fapi.vendor.test", f"http\\\\x3a\\\\x2f\\\\x2fapi-vendor-test.{P}"),
    ('"https:\\\\/\\\\/www.vendor.test\\\\/a"', f'"http:\\\\/\\\\/www-vendor-test.{P}\\\\/a"'),
    ('"\\\\/\\\\/cdn.vendor.test/f.woff2"', f'"\\\\/\\\\/cdn-vendor-test.{P}/f.woff2"'),
    ('"line\\nwww.vendor.test"', f'"line\\nwww-vendor-test.{P}"'),
    # percent-encoded, either case of hex, doubly encoded; the proxy port's ":" follows suit
    ("u=https%3A%2F%2Fwww.vendor.test%2Fa", "u=http%3A%2F%2Fwww-vendor-test.proxy.localhost%3A8080%2Fa"),
    ("u=https%3a%2f%2fwww.vendor.test%2fa", "u=http%3a%2f%2fwww-vendor-test.proxy.localhost%3a8080%2fa"),
    ("u=%2F%2Fcdn.vendor.test%2Fa", "u=%2F%2Fcdn-vendor-test.proxy.localhost%3A8080%2Fa"),
    ("r%3Dhttps%253A%252F%252Fwww.vendor.test%252F",
     "r%3Dhttp%253A%252F%252Fwww-vendor-test.proxy.localhost%253A8080%252F"),
    ("u=http%3A%2F%2F127.0.0.1%3A8081%2F", "u=http%3A%2F%2F127-0-0-1---h8081.proxy.localhost%3A8080%2F"),
    # bare host names (JavaScript, JSON, text)
    ('var h = "api.vendor.test";', f'var h = "api-vendor-test.{P}";'),
    ('"//" + "api.vendor.test"', f'"//" + "api-vendor-test.{P}"'),
    ("host=127.0.0.1:8081&x", f"host=127-0-0-1---h8081.{P}&x"),
    ("see www.vendor.test.", f"see www-vendor-test.{P}."),
    ("see https://www.vendor.test:443.", f"see http://www-vendor-test.{P}."),
    ('{"www.vendor.test":1}', f'{{"www-vendor-test.{P}":1}}'),
    ("cookie domain=.www.vendor.test;", f"cookie domain=.www-vendor-test.{P};"),
    # scheme and port rules
    ("http://www.vendor.test/x", f"http://www-vendor-test.{P}/x"),  # upgraded to https origin
    ("http://www.vendor.test:80/x", f"http://www-vendor-test.{P}/x"),
    ("https://www.vendor.test:443/x", f"http://www-vendor-test.{P}/x"),
    ("http://api.vendor.test/x", f"http://api-vendor-test---h.{P}/x"),  # http is configured
    ("http://127.0.0.1:8081/", f"http://127-0-0-1---h8081.{P}/"),
    # domains: every host under it, each with its own label
    ("https://login.vendor-sso.test/", f"http://login-vendor--sso-test.{P}/"),
    ("https://a.b.vendor-sso.test/", f"http://a-b-vendor--sso-test.{P}/"),
    ("https://vendor-sso.test/", f"http://vendor--sso-test.{P}/"),
    ("https://www.othervendor.example/d", f"http://www-othervendor-example.{P}/d"),
]

UNCHANGED = [
    "https://evilvendor.test/",  # no dot boundary
    "https://wwwxvendor.test/",
    "https://www.vendor.test.evil.example/",  # suffix-append
    "https://vendor.test.evil.example/",
    "https://x.www.vendor.test/",  # a subdomain of an exact host is another host
    "https://www.vendor.testing/",
    "https://www.vendor.test-x.example/",
    "https://www.vendor.test_x/",
    "https://vendor.test/",  # vendor.test itself is not configured
    "mailto:help@www.vendor.test",  # e-mail addresses
    "help%40www.vendor.test",
    "https://user@www.vendor.test/",  # userinfo: refused by the proxy anyway
    "/sites/www.vendor.test/about",  # a path segment
    "%2Fsites%2Fwww.vendor.test%2F",
    "a//www.vendor.test/",  # an empty path segment, not a host
    "ftp://www.vendor.test/",  # not web traffic
    "android-app://www.vendor.test/",
    "xhttps://www.vendor.test/",
    "https://www.vendor.test:8443/",  # port not configured
    "https://login.vendor-sso.test:8443/",  # domains cover default ports only
    "https://www.vendor.test:99999/",  # not a port
    "https://www.vendor.test:80abc/",
    "https://%77ww.vendor.test/",  # escaped letters belong to the name
    "https://www..vendor.test/",
    "https://proxy.localhost:8080/login",
    "https://www-vendor-test.proxy.localhost:8080/",  # already proxied
    "",
    "no hosts here, just text: vendor test, 127.0.0.2, 27.0.0.1",
    "127.0.0.10 and 1127.0.0.1 and 127.0.0.1.5",
]


@pytest.mark.parametrize(("source", "expected"), FORWARD)
def test_forward_forms(source, expected):
    assert fwd(source) == expected


@pytest.mark.parametrize("source", UNCHANGED)
def test_forward_leaves_other_hosts_alone(source):
    assert fwd(source) == source


def test_protocol_relative_and_bare_follow_the_page_scheme():
    # api.vendor.test is configured for both schemes: the page's scheme decides.
    assert fwd("//api.vendor.test/x", context="https") == f"//api-vendor-test.{P}/x"
    assert fwd("//api.vendor.test/x", context="http") == f"//api-vendor-test---h.{P}/x"
    assert fwd('"api.vendor.test"', context="http") == f'"api-vendor-test---h.{P}"'
    # cdn is https only: an http page still gets the https origin rather than nothing.
    assert fwd("//cdn.vendor.test/x", context="http") == f"//cdn-vendor-test.{P}/x"
    assert fwd("//127.0.0.1:8081/x", context="https") == f"//127-0-0-1---h8081.{P}/x"


def test_production_proxy_scheme():
    table = make_table(production=True)
    q = "proxy.lib.example"
    assert fwd("https://www.vendor.test/a", table=table) == f"https://www-vendor-test.{q}/a"
    assert fwd("http://127.0.0.1:8081/a", table=table) == f"https://127-0-0-1---h8081.{q}/a"
    assert fwd("ws://api.vendor.test/a", table=table) == f"wss://api-vendor-test---h.{q}/a"
    assert fwd("u=https%3A%2F%2Fcdn.vendor.test%2F", table=table) == f"u=https%3A%2F%2Fcdn-vendor-test.{q}%2F"
    assert rev(f"https://www-vendor-test.{q}/a https://www-vendor-test.{q}:443/b", table=table) == (
        "https://www.vendor.test/a https://www.vendor.test/b"
    )
    assert rev(f"https://www-vendor-test.{q}:8443/a", table=table) == f"https://www-vendor-test.{q}:8443/a"


def test_long_hosts_use_the_vendor_alias():
    long_host = "a-very-long-subdomain-name-for-testing.with-many-labels.vendor-long.example"
    extra = (VendorConfig(id="longone", title="l", start="", hosts=(f"https://{long_host}",), domains=(),
                          groups=frozenset({"members"})),)
    table = make_table(extra=extra)
    out = fwd(f"https://{long_host}/x", table=table)
    assert out == f"http://longone1---a.{P}/x"
    assert rev(out, table=table) == f"https://{long_host}/x"


def test_proxy_names_are_never_rewritten_even_under_a_vendor_domain():
    extra = (VendorConfig(id="self", title="s", start="", hosts=(), domains=("localhost",),
                          groups=frozenset({"members"})),)
    table = make_table(extra=extra)
    assert fwd("https://proxy.localhost/ https://x.proxy.localhost/", table=table) == (
        "https://proxy.localhost/ https://x.proxy.localhost/"
    )


# --- reverse ----------------------------------------------------------------------------------

REVERSE = [
    (f"http://www-vendor-test.{P}/a", "https://www.vendor.test/a"),
    (f"//cdn-vendor-test.{P}/a", "//cdn.vendor.test/a"),
    (f"ws://api-vendor-test.{P}/live", "wss://api.vendor.test/live"),
    (f"http://api-vendor-test---h.{P}/a", "http://api.vendor.test/a"),
    (f"http://127-0-0-1---h8081.{P}/a", "http://127.0.0.1:8081/a"),
    ("x=http%3A%2F%2Fwww-vendor-test.proxy.localhost%3A8080%2F", "x=https%3A%2F%2Fwww.vendor.test%2F"),
    ("www-vendor-test.proxy.localhost", "www.vendor.test"),  # location.hostname style
    ("HTTP://WWW-VENDOR-TEST.PROXY.LOCALHOST:8080/A", "https://www.vendor.test/A"),
]
REVERSE_UNCHANGED = [
    f"http://{P}/login",
    f"http://nope---x.{P}/",
    f"http://evil-example.{P}/",
    "http://www-vendor-test.proxy.localhost:9999/",
    f"http://a.www-vendor-test.{P}/",
    "http://www-vendor-test.proxy.localhostx/",
    "mailto:me@www-vendor-test.proxy.localhost",
]


@pytest.mark.parametrize(("source", "expected"), REVERSE)
def test_reverse(source, expected):
    assert rev(source) == expected


@pytest.mark.parametrize("source", REVERSE_UNCHANGED)
def test_reverse_leaves_the_rest_alone(source):
    assert rev(source) == source


# --- properties -------------------------------------------------------------------------------

CANONICAL_PREFIXES = ["https://", "//", "https:\\/\\/", "https%3A%2F%2F", "wss://", '"', " "]
HOSTS = ["www.vendor.test", "cdn.vendor.test", "api.vendor.test", "login.vendor-sso.test",
         "x-1.vendor-sso.test", "www.othervendor.example"]
NOISE = st.text(alphabet=st.sampled_from(list("ab/.:-_%\"' <>=?&#\\@3AF")), max_size=12)


@st.composite
def documents(draw):
    parts = []
    for _ in range(draw(st.integers(1, 6))):
        parts.append(draw(NOISE))
        parts.append(draw(st.sampled_from(CANONICAL_PREFIXES)) + draw(st.sampled_from(HOSTS)))
        parts.append(draw(st.sampled_from(["/", "/path?q=1", '"', "'", " ", "%2F", "\\/", ")"])))
    return "".join(parts)


@settings(max_examples=300, deadline=None)
@given(documents())
def test_reverse_undoes_forward(doc):
    once = fwd(doc)
    assert rev(once) == doc


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("wcapiv.endorstx-_/:%2F3A\\@\"' 1078")), max_size=80))
def test_rewriting_is_idempotent_and_never_leaves_a_vendor_url(doc):
    once = fwd(doc)
    assert fwd(once) == once
    for host in HOSTS:
        # Whatever the noise, a configured host after "https://" followed by "/" is rewritten.
        probe = f"{doc} https://{host}/ "
        assert f"https://{host}/" not in fwd(probe).lower()


@settings(max_examples=200, deadline=None)
@given(documents(), st.integers(0, 10**6))
def test_memo_gives_the_same_answer_as_a_cold_matcher(doc, seed):
    cold = make_table().to_proxy("https").rewrite_all(doc.encode())
    assert FWD.rewrite_all(doc.encode()) == cold
    assert FWD.rewrite_all(doc.encode()) == cold  # and again, now from the memo


def test_a_decision_at_the_end_of_a_body_is_not_reused_for_longer_text():
    # "...vendor.test%" at the very end of a body was decided without seeing what follows the
    # "%"; memoising that decision made a later "%3A8443" port (a different origin) be ignored.
    pad = b"see the link in this paragraph: "  # the same 48 bytes of context before the anchor
    first = pad + b"https%3A%2F%2Fwww.vendor.test%"
    second = pad + b"https%3A%2F%2Fwww.vendor.test%3A8443%2Fpath"
    expected = make_table().to_proxy("https").rewrite_all(second)  # a cold matcher
    assert expected == second  # port 8443 is not configured for www.vendor.test: left alone
    warm = make_table().to_proxy("https")
    warm.rewrite_all(first)
    assert warm.rewrite_all(second) == expected


# --- missed links found on real pages (issue 14) ----------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    # A doubly encoded URL after a doubly encoded "=" (a redirect inside an encoded query).
    ("x%2526l0%253Dhttp%253A%252F%252Fcdn.vendor.test%252Fpath",
     "x%2526l0%253Dhttp%253A%252F%252Fcdn-vendor-test.proxy.localhost%253A8080%252Fpath"),
    ("l0%253Dhttps%253A%252F%252Fwww.vendor.test",
     "l0%253Dhttp%253A%252F%252Fwww-vendor-test.proxy.localhost%253A8080"),
    # A URL right after a JSON or JS escape for a control character.
    ('"Read more:\\nhttps://www.vendor.test/a"', '"Read more:\\nhttp://www-vendor-test.proxy.localhost:8080/a"'),
    ("redirect_uri=\\\\\\nhttp%3A%2F%2Fapi.vendor.test",
     "redirect_uri=\\\\\\nhttp%3A%2F%2Fapi-vendor-test---h.proxy.localhost%3A8080"),
    ('"a\\thttps://www.vendor.test/"', '"a\\thttp://www-vendor-test.proxy.localhost:8080/"'),
    ('"a\\rhttps://www.vendor.test/"', '"a\\rhttp://www-vendor-test.proxy.localhost:8080/"'),
    ('"a\\n//cdn.vendor.test/x.css"', '"a\\n//cdn-vendor-test.proxy.localhost:8080/x.css"'),
    # Lower-case double encoding: the proxy's port colon is written in the same case.
    ("https%253a%252f%252fwww.vendor.test%252f", "http%253a%252f%252fwww-vendor-test.proxy.localhost%253a8080%252f"),
    ("https%253A%252F%252Fwww.vendor.test%252F", "http%253A%252F%252Fwww-vendor-test.proxy.localhost%253A8080%252F"),
    ("https%3a%2f%2fwww.vendor.test%2f", "http%3a%2f%2fwww-vendor-test.proxy.localhost%3a8080%2f"),
])
def test_urls_after_escapes_and_in_double_encoding(text: str, expected: str) -> None:
    assert fwd(text) == expected
    assert make_table().to_proxy("https").rewrite_all(text.encode()).decode() == expected  # cold


@pytest.mark.parametrize("text", [
    "\\\\nhttps://www.vendor.test/",  # an escaped backslash, then the word "nhttps": another scheme
    "xhttps://www.vendor.test/",
    "%2Xhttps://www.vendor.test/",  # not an escape: "Xhttps" is a word
    "path\\\\n//www.vendor.test/",
])
def test_words_before_a_scheme_still_stop_it(text: str) -> None:
    assert fwd(text) == text
