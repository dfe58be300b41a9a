"""The compiled hot loop of host rewriting (proxy/rewrite/_hostscan.c) against the pure-Python
matcher it accelerates: the same output for any input, whole or streamed, warm or cold, in both
directions and for every shape of anchor table; and its memo, a bounded cache that may forget
but never answers wrongly.

The rest of the rewrite suite runs with the compiled loop when it is built; scripts/test.sh runs
it again with LIBPROXY_PURE_PYTHON=1, so both loops pass every golden file and property.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.config import VendorConfig
from proxy.rewrite import BodyRewriter, RewriteTable
from proxy.rewrite import hosts as hosts_module
from proxy.rewrite.hosts import Matcher
from proxy.vendors import VendorMap
from tests.test_rewrite_hosts import HOSTS, make_table

hostscan = hosts_module._hostscan

if hostscan is None:
    if os.environ.get("LIBPROXY_REQUIRE_ACCEL"):
        pytest.fail("the compiled rewriter (proxy/rewrite/_hostscan.c) was not built", pytrace=False)
    pytest.skip("the compiled rewriter is not built here", allow_module_level=True)


def pair(table: RewriteTable, direction: str = "https") -> tuple[Matcher, Matcher]:
    """The same matcher twice: compiled loop and pure Python."""
    if direction == "reverse":
        anchors, resolve = table.reverse_anchors, table.reverse_target
    else:
        anchors = table.forward_anchors

        def resolve(host: str, scheme: str | None, port: int | None) -> hosts_module.Target | None:
            return table.forward_target(host, scheme, port, direction)

    fast = Matcher(anchors, resolve, accelerated=True)
    slow = Matcher(anchors, resolve, accelerated=False)
    assert fast.accelerated and not slow.accelerated
    return fast, slow


def many_vendor_table() -> RewriteTable:
    """Enough registrable names that anchors merge into top-level ones (".com", ".org")."""
    configs = [
        VendorConfig(id=f"v{n}", title=f"v{n}", start="", groups=frozenset({"m"}),
                     hosts=(f"https://www.db{n}.{tld}", f"http://cdn.db{n}.{tld}:8443"),
                     domains=(f"auth{n}.{tld}",))
        for n, tld in enumerate(["com", "org", "com", "net", "org", "com", "edu", "com", "org", "net"])
    ]
    return RewriteTable(VendorMap(configs, "proxy.lib.example", "https"))


def one_anchor_table() -> RewriteTable:
    configs = [VendorConfig(id="j", title="j", start="", groups=frozenset({"m"}),
                            hosts=("https://www.jstor.org", "https://jstor.org:8443"), domains=("jstor.org",))]
    return RewriteTable(VendorMap(configs, "proxy.localhost:8080", "http"))


TABLES = {
    "demo": make_table(),  # three anchors: ".test", "othervendor.example" and an IP address
    "production": make_table(production=True),
    "many": many_vendor_table(),
    "one": one_anchor_table(),
}
MANY_HOSTS = ["www.db0.com", "cdn.db1.org:8443", "x.auth3.net", "WWW.DB7.COM", "db9.net", "www.db2.com.evil"]
ONE_HOSTS = ["www.jstor.org", "jstor.org:8443", "a.b.jstor.org", "JSTOR.ORG", "notjstor.org"]
PREFIXES = ["https://", "http://", "//", "https:\\/\\/", "http%3A%2F%2F", "https%253A%252F%252F", "wss://",
            "HTTPS://", "ftp://", "@", "/", "\\u002f\\u002f", '"', " ", "x", "",
            # escapes before a scheme, and double encoding in both cases (issue 14)
            "\\nhttps://", "\\\\nhttps://", "\\\\\\nhttp%3A%2F%2F", "\\t//", "\\rhttps:\\/\\/",
            "%253Dhttp%253A%252F%252F", "=https%253a%252f%252f", "%3Dhttps%3A%2F%2F", "\\x3dhttps://",
            "\\u003dhttps://", "%2Xhttps://", "https:\\\\/\\\\/", "\\\\/\\\\/", "a\\\\/\\\\/",
            "https:\\\\u002F\\\\u002F", "\\\\x2f\\\\x2f", "https\\\\u003a\\\\u002f\\\\u002f"]
SUFFIXES = ["/", "/path?q=1", '"', ":8080/", ":8443", "%3A8443%2F", ".", ".x", "-", ")", "\\/", "%2F", ""]
NOISE = st.text(alphabet=st.sampled_from(list("ab/.:-_%\"' <>=?&#\\@3AFT")), max_size=10)


@st.composite
def documents(draw: st.DrawFn, hosts: list[str]) -> bytes:
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        parts.append(draw(NOISE))
        parts.append(draw(st.sampled_from(PREFIXES)) + draw(st.sampled_from(hosts)))
        parts.append(draw(st.sampled_from(SUFFIXES)))
    return "".join(parts).encode()


ALL_HOSTS = [*HOSTS, "127.0.0.1:8081", "WWW.Vendor.TEST", "proxy.localhost:8080", *MANY_HOSTS, *ONE_HOSTS,
             "www-vendor-test.proxy.localhost:8080", "cdn-vendor-test.proxy.lib.example"]
MATCHERS = {name: {d: pair(t, d) for d in ("https", "http", "reverse")} for name, t in TABLES.items()}


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(TABLES)), st.sampled_from(["https", "http", "reverse"]),
       documents(ALL_HOSTS))
def test_same_output_as_pure_python(name: str, direction: str, doc: bytes) -> None:
    fast, slow = MATCHERS[name][direction]  # warm: the memos of every earlier example
    expected = slow.rewrite_all(doc)
    assert fast.rewrite_all(doc) == expected
    assert fast.rewrite_all(doc) == expected  # again, now from the memo
    cold_fast, cold_slow = pair(TABLES[name], direction)
    assert cold_fast.rewrite_all(doc) == cold_slow.rewrite_all(doc) == expected


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_same_output_on_arbitrary_bytes(doc: bytes) -> None:
    for name in TABLES:
        fast, slow = MATCHERS[name]["https"]
        assert fast.rewrite_all(doc) == slow.rewrite_all(doc)


def chunked(data: bytes, rng: random.Random) -> Iterator[bytes]:
    pos = 0
    while pos < len(data):
        size = rng.choice([1, 2, 7, 30, 300, 5000])
        yield data[pos : pos + size]
        pos += size


@pytest.fixture
def tiny_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every feed is rewritten at once, so chunk boundaries land everywhere in mentions.
    monkeypatch.setattr("proxy.rewrite.body.BATCH", 1)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(TABLES)), st.lists(documents(ALL_HOSTS), min_size=1, max_size=30),
       st.integers(0, 2**32))
def test_streamed_output_is_the_same(name: str, docs: list[bytes], seed: int) -> None:
    data = b" <p> ".join(docs)
    fast, slow = MATCHERS[name]["https"]
    expected = slow.rewrite_all(data)
    for batch in (1, 16 * 1024):
        rewriter = BodyRewriter(fast)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("proxy.rewrite.body.BATCH", batch)
            out = b"".join(rewriter.feed(c) for c in chunked(data, random.Random(seed))) + rewriter.flush()
        assert out == expected


def test_a_large_page_streamed_in_any_chunks() -> None:
    rng = random.Random(7)
    pieces = []
    for _ in range(20_000):
        pieces.append(rng.choice(PREFIXES) + rng.choice(ALL_HOSTS) + rng.choice(SUFFIXES))
        pieces.append(" " * rng.randint(0, 300))
    data = "".join(pieces).encode()
    for name in TABLES:
        fast, slow = pair(TABLES[name], "https")
        expected = slow.rewrite_all(data)
        assert fast.rewrite_all(data) == expected
        rewriter = BodyRewriter(fast)
        out = b"".join(rewriter.feed(c) for c in chunked(data, rng)) + rewriter.flush()
        assert out == expected


def test_mentions_at_the_edges_of_the_buffer() -> None:
    fast, slow = MATCHERS["demo"]["https"]
    for doc in (b"www.vendor.test", b"https://www.vendor.test", b"x.test", b".test", b"vendor.test:",
                b"vendor.test%", b"vendor.test%3", b"https://cdn.vendor.test:8", b"127.0.0.1:8081", b"test"):
        for k in range(len(doc) + 1):
            assert fast.rewrite(doc, 0, True, True) == ([slow.rewrite_all(doc)], len(doc))
            context, body = doc[:k], doc[k:]
            if body:
                # Bytes before base are context already sent: never edited, by either loop.
                got, cut = fast.rewrite(context + body, len(context), k == 0, True)
                want, want_cut = slow.rewrite(context + body, len(context), k == 0, True)
                assert (b"".join(got), cut) == (b"".join(want), want_cut)


# --- the memo ---------------------------------------------------------------------------------


def test_memo_files_edits_by_shape_and_bytes() -> None:
    memo = hostscan.Memo()
    assert len(memo) == 0 and memo.find(b"k", 1, 2, False) is None and memo.shapes() == []
    assert memo.store(b"k", 1, 2, False, (-3, 5, b"x"))
    assert memo.store(b"s", 0, 1, True, (0, 0, None))
    assert memo.find(b"k", 1, 2, False) == (-3, 5, b"x") and memo.find(b"s", 0, 1, True) == (0, 0, None)
    # The same bytes under another shape are another key: they would sit elsewhere around a hit.
    assert memo.find(b"k", 2, 1, False) is None and memo.find(b"k", 1, 2, True) is None
    memo.store(b"k", 1, 2, False, (1, 2, b"y"))  # replaced, not added
    assert len(memo) == 2 and memo.find(b"k", 1, 2, False) == (1, 2, b"y")
    assert sorted(memo.shapes()) == [(0, 1, True), (1, 2, False)]
    memo.clear()
    assert len(memo) == 0 and memo.find(b"k", 1, 2, False) is None and memo.shapes() == []


def test_memo_tries_a_bounded_number_of_shapes() -> None:
    memo = hostscan.Memo()
    for left in range(hostscan.MAX_SHAPES):
        assert memo.store(b"k", left, 1, False, (0, 0, None))
    assert not memo.store(b"k", 999, 1, False, (0, 0, None))  # one shape too many: not filed
    assert memo.find(b"k", 999, 1, False) is None and len(memo.shapes()) == hostscan.MAX_SHAPES


@pytest.mark.parametrize("bad", [(1, 2), (1, 2, "text"), [1, 2, b"x"], (1, "2", b"x"), None])
def test_memo_refuses_what_is_not_an_edit(bad: object) -> None:
    memo = hostscan.Memo()
    with pytest.raises(TypeError):
        memo.store(b"k", 0, 1, False, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        memo.store("text", 0, 1, False, (0, 0, None))  # type: ignore[arg-type]
    for left, right in [(-1, 1), (0, -1), (10**6, 1), (0, 10**6)]:
        with pytest.raises(ValueError):
            memo.store(b"k", left, right, False, (0, 0, None))  # SECURITY: shapes are bounded
    assert len(memo) == 0 and memo.shapes() == []


def test_a_full_memo_forgets_but_never_answers_wrongly() -> None:
    # Far more entries than any probe sequence holds: some are forgotten (replaced), none is
    # ever found under another key.
    memo = hostscan.Memo()
    rng = random.Random(3)
    keys = list(dict.fromkeys(rng.randbytes(rng.randint(1, 70)) for _ in range(60_000)))
    for n, key in enumerate(keys):
        memo.store(key, n % 3, 1, False, (n, n + 1, None))
    found = 0
    for n, key in enumerate(keys):
        value = memo.find(key, n % 3, 1, False)
        if value is not None:
            assert value == (n, n + 1, None)
            found += 1
    assert 0 < found <= len(memo) <= len(keys)


def test_the_compiled_loop_checks_its_arguments() -> None:
    memo = hostscan.Memo()
    spec = ((b".test", memo),)

    def miss(i: int, index: int) -> None:
        return None

    with pytest.raises(ValueError):
        hostscan.rewrite(b"abc", 2, 1, spec, miss)  # limit before base
    with pytest.raises(TypeError):
        hostscan.rewrite(b"abc", 0, 3, ((b".test", {}),), miss)  # not a Memo

    def bad_miss(i: int, index: int) -> object:
        return (0, 10**6, b"x")  # an edit ending past the buffer

    with pytest.raises(ValueError):
        hostscan.rewrite(b"a.test b", 0, 8, spec, bad_miss)

    def failing_miss(i: int, index: int) -> object:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        hostscan.rewrite(b"a.test b", 0, 8, spec, failing_miss)


# --- real pages: every mention on the fast path -------------------------------------------------


def test_every_mention_of_the_corpus_takes_the_compiled_path_once_known() -> None:
    # Decisions are keyed by the bytes they read, not by the page around them: after one pass
    # over the corpus, a second pass asks Python about nothing, and the memo holds one entry
    # per form of each host, not one per place it appears.
    from tests.corpus.vendorize import VENDOR_HOSTS, vendor_files

    for port in (8081, 80):
        suffix = "" if port == 80 else f":{port}"
        configs = [VendorConfig(id="c", title="c", start="", groups=frozenset({"m"}),
                                hosts=tuple(f"http://{h}{suffix}" for h in VENDOR_HOSTS), domains=())]
        table = RewriteTable(VendorMap(configs, "proxy.localhost:8080", "http"))
        matcher = Matcher(table.forward_anchors, lambda h, s, p, t=table: t.forward_target(h, s, p, "http"),
                          accelerated=True)  # (the suite also runs with LIBPROXY_PURE_PYTHON=1)
        assert matcher.accelerated
        files = vendor_files(port)
        first = {name: matcher.rewrite_all(data) for name, data in files.items()}
        asked: list[object] = []

        def counting(*args: object, asked: list[object] = asked, decide: object = matcher._miss) -> object:
            asked.append(args)
            return decide(*args)  # type: ignore[operator]

        matcher._miss = counting  # type: ignore[method-assign,assignment]
        assert {name: matcher.rewrite_all(data) for name, data in files.items()} == first
        assert not asked
        mentions = sum(data.lower().count(b".vendor.test") for data in files.values())
        entries = sum(len(memo) for memo in matcher._shaped.values())
        assert mentions > 1000 and entries < 100, (mentions, entries)


def test_the_run_limit_is_the_same_in_both_loops() -> None:
    assert hostscan.MAX_RUN == hosts_module._RUN_LIMIT
