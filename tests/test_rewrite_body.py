"""Streaming body rewriting (proxy/rewrite/body.py): golden files, chunk boundaries, vendor
rules, content types, and bounded work on hostile bodies."""

from __future__ import annotations

import hashlib
import json
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.config import VendorConfig
from proxy.rewrite import body
from proxy.rewrite.body import BodyRewriter, FindReplace, is_rewritable, media_type, rewrite_body
from proxy.rewrite.hosts import RewriteTable
from proxy.vendors import VendorMap

GOLDEN = Path(__file__).parent / "golden" / "rewrite"
SPEC = json.loads((GOLDEN / "vendors.json").read_text())
P = b"proxy.localhost:8080"


def make_table() -> RewriteTable:
    configs = [
        VendorConfig(id=v["id"], title=v["id"], start="", hosts=tuple(v["hosts"]),
                     domains=tuple(v["domains"]), groups=frozenset({"members"}))
        for v in SPEC["vendors"]
    ]
    return RewriteTable(VendorMap(configs, SPEC["proxy"]["host"], SPEC["proxy"]["scheme"]))


TABLE = make_table()
RULES = [FindReplace(r["find"].encode(), r["replace"].encode()) for r in SPEC["vendors"][0]["rules"]]
GOLDEN_FILES = ["page.html", "site.css", "app.js", "data.json", "feed.xml"]


def expected_name(name: str) -> str:
    stem, ext = name.rsplit(".", 1)
    return f"{stem}.expected.{ext}"


def stream(rewriter: BodyRewriter, data: bytes, sizes: Iterator[int]) -> bytes:
    out = []
    pos = 0
    while pos < len(data):
        size = next(sizes)
        out.append(rewriter.feed(data[pos : pos + size]))
        pos += size
    out.append(rewriter.flush())
    return b"".join(out)


@pytest.fixture
def tiny_batches(monkeypatch):
    """Process every chunk as it comes, so chunk boundaries really fall inside mentions."""
    monkeypatch.setattr(body, "BATCH", 1)


# --- golden files -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_golden_vendor_to_proxy(name):
    source = (GOLDEN / name).read_bytes()
    expected = (GOLDEN / expected_name(name)).read_bytes()
    assert rewrite_body(TABLE.to_proxy("https"), source, RULES) == expected


def test_golden_request_body_proxy_to_vendor():
    source = (GOLDEN / "form.txt").read_bytes()
    assert rewrite_body(TABLE.to_vendor(), source) == (GOLDEN / "form.expected.txt").read_bytes()


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_golden_output_is_stable(name):
    # Rewriting a rewritten page changes nothing: no vendor host is left in a rewritable form.
    expected = (GOLDEN / expected_name(name)).read_bytes()
    assert rewrite_body(TABLE.to_proxy("https"), expected) == expected


def test_golden_page_keeps_the_browser_in_proxy_space():
    out = (GOLDEN / "page.expected.html").read_bytes().decode()
    for url in ("https://www.vendor.test/", "https://cdn.vendor.test/", "//api.vendor.test",
                "wss://api.vendor.test", "https%3A%2F%2Fwww.vendor.test"):
        assert url not in out
    # What must stay: third parties, unconfigured ports and schemes, look-alike hosts.
    for kept in ("https://www.googletagmanager.com/", "https://www.vendor.test:8443/admin",
                 "ftp://www.vendor.test/pub", "https://evilvendor.test/", "help@vendor-sso.test"):
        assert kept in out


# --- chunk boundaries -------------------------------------------------------------------------


def test_every_split_point_of_the_page(tiny_batches):
    source = (GOLDEN / "page.html").read_bytes()
    expected = (GOLDEN / "page.expected.html").read_bytes()
    matcher = TABLE.to_proxy("https")
    for cut in range(len(source) + 1):
        rewriter = BodyRewriter(matcher, RULES)
        out = rewriter.feed(source[:cut]) + rewriter.feed(source[cut:]) + rewriter.flush()
        assert out == expected, cut


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_every_split_point_with_a_cold_matcher(tiny_batches, name):
    source = (GOLDEN / name).read_bytes()[:1500]
    expected = rewrite_body(make_table().to_proxy("https"), source, RULES)
    for cut in range(0, len(source) + 1, 3):
        rewriter = BodyRewriter(make_table().to_proxy("https"), RULES)
        assert rewriter.feed(source[:cut]) + rewriter.feed(source[cut:]) + rewriter.flush() == expected


@pytest.mark.parametrize("seed", range(20))
def test_random_chunking(tiny_batches, seed):
    rng = random.Random(seed)
    source = b"".join((GOLDEN / name).read_bytes() for name in GOLDEN_FILES)
    expected = rewrite_body(TABLE.to_proxy("https"), source, RULES)
    sizes = iter(lambda: rng.choice([1, 2, 3, 7, 50, 333, 4096]), None)
    assert stream(BodyRewriter(TABLE.to_proxy("https"), RULES), source, sizes) == expected


def test_one_byte_at_a_time_with_default_batching():
    source = (GOLDEN / "page.html").read_bytes() * 8
    expected = rewrite_body(TABLE.to_proxy("https"), source, RULES)
    rewriter = BodyRewriter(TABLE.to_proxy("https"), RULES)
    outputs = [rewriter.feed(source[i : i + 1]) for i in range(len(source))]
    assert b"".join(outputs) + rewriter.flush() == expected
    assert sum(1 for o in outputs if o) < len(source) // 1000  # batched, not per byte


def test_a_mention_split_at_every_byte(tiny_batches):
    mention = b"https%253A%252F%252Flogin.vendor-sso.test%253A443%252F"
    source = b"x" * 700 + b'"' + mention + b'"' + b"y" * 700
    expected = rewrite_body(TABLE.to_proxy("https"), source)
    assert b"login-vendor--sso-test.proxy.localhost%253A8080%252F" in expected
    start = 700
    for a in range(start, start + len(mention) + 2):
        for b in (a + 1, a + 5, a + 17):
            rewriter = BodyRewriter(TABLE.to_proxy("https"))
            out = rewriter.feed(source[:a]) + rewriter.feed(source[a:b]) + rewriter.feed(source[b:])
            assert out + rewriter.flush() == expected, (a, b)


TRICKY = [
    b"xhttps://a-rather-long-subdomain-name-for-tests.vendor-sso.test/",
    b"https://a-rather-long-subdomain-name-for-tests.vendor-sso.test/",
    b"https%253A%252F%252Flogin.vendor-sso.test%253A443%252F",
    b"\\u002f\\u002fcdn.vendor.test:443/", b"%3Dhttps%3A%2F%2Fwww.vendor.test%2F",
    b"http://127.0.0.1:8081/", b"127.0.0.1:80812", b"www.vendor.test.", b"www.vendor.test.x",
    b"help@www.vendor.test", b"/sites/www.vendor.test/", b"a//cdn.vendor.test/", b"ftp://www.vendor.test/",
    b"WSS://API.VENDOR.TEST/live", b"https://www.othervendor.example/d", b"..vendor.test",
]


def test_tricky_mentions_at_every_split_point(tiny_batches):
    filler = [b" ", b'"', b"x" * 40, b"\n", b"=", b"(" + b"y" * 70 + b")"]
    source = b"".join(m + filler[n % len(filler)] for n, m in enumerate(TRICKY * 3)) * 2
    expected = rewrite_body(make_table().to_proxy("https"), source)
    assert expected.count(b"proxy.localhost") >= 36  # the rest are left alone on purpose
    matcher = make_table().to_proxy("https")
    for cut in range(len(source) + 1):
        rewriter = BodyRewriter(matcher)
        assert rewriter.feed(source[:cut]) + rewriter.feed(source[cut:]) + rewriter.flush() == expected, cut


def test_feed_after_flush_is_an_error():
    rewriter = BodyRewriter(TABLE.to_proxy("https"))
    assert rewriter.flush() == b""
    assert rewriter.flush() == b""
    with pytest.raises(RuntimeError):
        rewriter.feed(b"x")


def test_bytes_that_are_not_text_pass_through():
    source = bytes(range(256)) * 300 + b" https://www.vendor.test/\xff\xfe " + bytes(range(255, -1, -1)) * 300
    out = rewrite_body(TABLE.to_proxy("https"), source)
    assert out == source.replace(b"https://www.vendor.test/", b"http://www-vendor-test." + P + b"/")


# --- vendor rules -----------------------------------------------------------------------------


def test_rules_run_before_host_rewriting():
    rules = [FindReplace(b"REPLACE_ME", b"https://cdn.vendor.test/x"), FindReplace(b"aa", b"b")]
    out = rewrite_body(TABLE.to_proxy("https"), b"<a href='REPLACE_ME'>aaaaa</a>", rules)
    assert out == b"<a href='http://cdn-vendor-test." + P + b"/x'>bba</a>"


def test_rules_at_every_split_point(tiny_batches):
    rules = [FindReplace(b"location.hostname", b"location.host"), FindReplace(b"abab", b"X")]
    source = b"if(location.hostname==x)ababab location.hostnam location.hostname abababab"
    expected = source.replace(b"location.hostname", b"location.host").replace(b"abab", b"X")
    for cut in range(len(source) + 1):
        rewriter = BodyRewriter(TABLE.to_proxy("https"), rules)
        assert rewriter.feed(source[:cut]) + rewriter.feed(source[cut:]) + rewriter.flush() == expected


@pytest.mark.parametrize("find", [b"", b"x" * (body.MAX_RULE + 1)])
def test_rules_are_checked(find):
    with pytest.raises(ValueError):
        FindReplace(find, b"y")


# --- content types ----------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [
    "text/html", "text/html; charset=utf-8", "TEXT/HTML;charset=ISO-8859-1", "text/css",
    "text/javascript", "application/javascript", "application/x-javascript", "application/json",
    "application/ld+json", "application/vnd.api+json", "application/xml", "text/xml",
    "application/rss+xml", "image/svg+xml", "application/xhtml+xml", "text/plain", "text/csv",
    "application/x-www-form-urlencoded", "application/manifest+json",
])
def test_rewritten_types(content_type):
    assert is_rewritable(content_type)


@pytest.mark.parametrize("content_type", [
    None, "", "application/pdf", "image/png", "image/jpeg", "video/mp4", "audio/mpeg", "font/woff2",
    "application/octet-stream", "application/zip", "application/wasm", "multipart/byteranges",
    "text/event-stream", "text/html; charset=utf-16", "application/json; charset=UTF-32LE",
])
def test_untouched_types(content_type):
    assert not is_rewritable(content_type)


def test_media_type():
    assert media_type('text/html; Charset="UTF-8"; x=1') == ("text/html", "utf-8")
    assert media_type(None) == ("", None)


# --- bounded work on hostile bodies -----------------------------------------------------------


def run_bounded(source: Iterator[bytes], trace: bool = True) -> tuple[bytes, int, int]:
    """Stream chunks through a rewriter, keeping only a digest; return (digest, size, peak
    bytes allocated meanwhile, or 0 when not traced: tracing slows Python down many times)."""
    rewriter = BodyRewriter(TABLE.to_proxy("https"))
    digest = hashlib.sha256()
    size = 0
    if trace:
        tracemalloc.start()
    try:
        for chunk in source:
            out = rewriter.feed(chunk)
            digest.update(out)
            size += len(out)
        out = rewriter.flush()
        digest.update(out)
        size += len(out)
        peak = tracemalloc.get_traced_memory()[1] if trace else 0
    finally:
        if trace:
            tracemalloc.stop()
    return digest.digest(), size, peak


def chunks_of(unit: bytes, count: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """``unit * count`` in chunks, generated lazily so the input never sits in memory."""
    data = unit * max(1, chunk // len(unit) + 1)
    total = len(unit) * count
    pos = 0
    while pos < total:
        offset = pos % len(unit)
        piece = data[offset : offset + min(chunk, total - pos)]
        yield piece
        pos += len(piece)


def expected_digest(unit: bytes, rewritten: bytes, count: int) -> tuple[bytes, int]:
    digest = hashlib.sha256()
    for _ in range(count):
        digest.update(rewritten)
    return digest.digest(), len(rewritten) * count


def test_thirty_megabyte_single_line_script():
    unit = (b'var a=function(e){return e.map(function(t){return t*2})};x.push("https://cdn.vendor.test/js/'
            b'chunk.js");y="api.vendor.test";z={u:"https:\\/\\/www.vendor.test\\/a"};' + b"q=1;" * 150)
    rewritten = rewrite_body(TABLE.to_proxy("https"), unit)
    assert rewritten.count(b"proxy.localhost:8080") == 3
    count = 30 * 1024 * 1024 // len(unit)
    digest, size, peak = run_bounded(chunks_of(unit, count))
    assert (digest, size) == expected_digest(unit, rewritten, count)
    assert peak < 2 * 1024 * 1024  # a few chunks, never the 30 MB body


def test_two_hundred_thousand_nested_elements():
    depth = 200_000
    head = b"<div>" * depth
    link = b'<a href="https://www.vendor.test/deep">deep</a><img src="//cdn.vendor.test/d.png">'
    tail = b"</div>" * depth
    source = head + link + tail
    rewritten = link.replace(b"https://www.vendor.test", b"http://www-vendor-test." + P).replace(
        b"//cdn.vendor.test", b"//cdn-vendor-test." + P)
    sizes = iter(lambda: 65536, None)
    assert stream(BodyRewriter(TABLE.to_proxy("https")), source, sizes) == head + rewritten + tail


@pytest.mark.parametrize(("unit", "rewritten"), [
    # one endless run of host characters: no host in it, however long
    (b"vendor.test", b"vendor.test"),
    (b"www.vendor.test.", b"www.vendor.test."),
    # near misses
    (b"www.vendor.tes ", b"www.vendor.tes "),
    (b"x.vendor.test ", b"x.vendor.test "),
    # the longest runs before an anchor
    (b" " + b"a" * 250 + b".vendor.test ", b" " + b"a" * 250 + b".vendor.test "),
    (b" " + b"a." * 130 + b"www.vendor.test ", b" " + b"a." * 130 + b"www.vendor.test "),
    # piles of separators and escapes in front of real mentions
    (b"//////" + b"%2F" * 20 + b"www.vendor.test/ ",
     b"//////" + b"%2F" * 20 + b"www-vendor-test.proxy.localhost%3A8080/ "),
    (b"https:https:https://www.vendor.test ", b"https:https:http://www-vendor-test." + P + b" "),
    (b"%25" * 30 + b"2Fwww.vendor.test ", b"%25" * 30 + b"2Fwww.vendor.test "),
    (b"\\u002f" * 10 + b"cdn.vendor.test:", b"\\u002f" * 10 + b"cdn-vendor-test." + P + b":"),
    (b"127.0.0.1:" * 7 + b"8081 ", b"127.0.0.1:" * 6 + b"127-0-0-1---h8081." + P + b" "),
])
def test_pathological_near_matches_stay_linear(unit, rewritten):
    assert rewrite_body(make_table().to_proxy("https"), unit * 3) == rewritten * 3
    # Big enough that quadratic work would not finish; memory is measured on a smaller run.
    count = 4 * 1024 * 1024 // len(unit)
    digest, size, _ = run_bounded(chunks_of(unit, count), trace=False)
    assert (digest, size) == expected_digest(unit, rewritten, count)
    count = 512 * 1024 // len(unit)
    digest, size, peak = run_bounded(chunks_of(unit, count))
    assert (digest, size) == expected_digest(unit, rewritten, count)
    assert peak < 2 * 1024 * 1024


def test_hostile_page_cannot_grow_the_memo():
    rng = random.Random(1)
    matcher = make_table().to_proxy("https")
    contexts = b"".join(
        b'%08x "https://www.vendor.test/" https://h%08x.vendor.test/' % (rng.getrandbits(32), rng.getrandbits(32))
        for _ in range(50_000)
    )  # distinct bytes before each mention, and distinct host names (keys of the compiled memo)
    out = rewrite_body(matcher, contexts)
    assert out.count(b"www-vendor-test") == 50_000
    from proxy.rewrite.hosts import MEMO_LIMIT

    assert all(len(memo) <= MEMO_LIMIT for memo in matcher._memos.values())
    assert all(len(memo) <= MEMO_LIMIT for memo in matcher._shaped.values())
