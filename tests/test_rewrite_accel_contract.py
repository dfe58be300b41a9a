"""The contract of the compiled loop (proxy/rewrite/_hostscan.c), under adversarial callers.

``rewrite(buf, base, limit, specs, miss)`` is checked against a Python model of its contract on
random anchors (letters only, length 1, longer than the buffer, ending inside it) and buffers,
with a ``miss`` callback whose decisions are a pure function of the memo key the loop would use
under the shape the callback files them with (so many bytes before the host run or the anchor,
so many after the anchor), so whatever the memos remember or forget the output must equal the
model's. The callback also
clears the memos, floods them (growing the tables in the middle of a call), raises, and returns
edits before ``base``, overlapping, past ``limit`` or inside out. Reference counts of every
replacement, of the buffer and of the callback must come back to where they were.
"""

from __future__ import annotations

import hashlib
import random
import sys

import pytest

from proxy.rewrite import hosts as hosts_module

hs = hosts_module._hostscan
if hs is None:
    pytest.skip("the compiled rewriter is not built here (see test_rewrite_accel.py)", allow_module_level=True)

REPLS = [bytes([65 + j]) * (j % 5) + b"<r%d>" % j for j in range(40)]  # distinct objects
DEFAULT_SEP = b":%."


class Boom(Exception):
    pass


def h64(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


RUN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
SHAPES = [(0, 1, True), (0, 0, True), (1, 1, False), (3, 2, False), (8, 12, False), (32, 1, False), (5, 5, True)]


def run_start(buf: bytes, i: int) -> int:
    """Where the host run ending at i starts, or -1 (as _hostscan.c's run_start)."""
    rs = i
    while rs > 0 and i - rs < hs.MAX_RUN and buf[rs - 1] in RUN:
        rs -= 1
    return rs if rs > 0 and i - rs < hs.MAX_RUN else -1


def key_of(buf: bytes, i: int, anchor: bytes, shape: tuple[int, int, bool]) -> tuple[bytes, int] | None:
    """(key, where it starts) the C loop looks up for a hit at i under ``shape``."""
    left, right, at_anchor = shape
    if at_anchor:
        a = i - left
    else:
        rs = run_start(buf, i)
        if rs < 0:
            return None
        a = rs - left
    b = i + len(anchor) + right
    if a < 0 or b > len(buf):
        return None
    return buf[a:b], a


def decision(buf: bytes, i: int, idx: int, spec: tuple, shape: tuple, salt: int, allow_bad: bool):
    anchor, _memo = spec
    m, n = len(anchor), len(buf)
    k = key_of(buf, i, anchor, shape)
    if k is not None:
        key, a = k
        r = h64(salt, idx, key)
        span_before = i - a
        span_after = len(key) - span_before  # bytes from i to the end of the key: end stays inside buf
    else:
        r = h64(salt, idx, "pos", i, buf[max(0, i - 8) : i + m + 4])
        span_after = min(n - i, m + 12)
        span_before = i
        if r % 7 == 0:
            return None  # "needs more bytes": never memoised
    if r % 5 == 0:
        return (0, 0, None)
    rs = -((r >> 8) % (span_before + 1))
    if allow_bad and (r >> 20) % 13 == 0:
        rs = (r >> 24) % 6  # starts after the hit (may pass limit)
    re_ = rs + ((r >> 32) % (span_after - rs + 1)) if span_after >= rs else rs
    if allow_bad and (r >> 40) % 97 == 0:
        re_ = rs - 1  # end before start: ValueError
    return (rs, re_, REPLS[(r >> 48) % len(REPLS)])


def find_hits(buf: bytes, specs: tuple) -> list[tuple[int, int]]:
    low = buf.lower()
    hits = []
    for idx, spec in enumerate(specs):
        a = spec[0]
        if not a or len(a) > len(buf):
            continue
        p = 0
        while True:
            j = low.find(a, p)
            if j < 0:
                break
            hits.append((j, idx))
            p = j + len(a)
    hits.sort()
    return hits


def model(buf, base, limit, specs, dec):
    n = len(buf)
    last = base
    edits = []
    for i, idx in find_hits(buf, specs):
        if i < base:
            continue
        d = dec(i, idx)
        if d is None:
            continue
        rs, re_, repl = d
        if repl is None:
            continue
        start, end = i + rs, i + re_
        if start < last:
            continue
        if start >= limit:
            break
        if end < start or end > n:
            raise ValueError("edit outside")
        edits.append((start, end, repl))
        last = end
    cut = max(last, limit)
    out, at = [], base
    for s, e, r in edits:
        out.append(buf[at:s])
        out.append(r)
        at = e
    out.append(buf[at:cut])
    return b"".join(out), cut


def random_anchor(rng: random.Random) -> bytes:
    kind = rng.random()
    L = rng.choice([1, 1, 2, 2, 3, 4, 5, 8, 17, 33])
    if kind < 0.25:
        return bytes(rng.choice(b"abcxyz") for _ in range(L))  # letters only
    if kind < 0.5:
        return bytes(rng.choice(b"ab.c:%") for _ in range(L))
    if kind < 0.6:
        return bytes(rng.choice(b"aA.\x00\xff") for _ in range(L))  # with an upper-case byte: never matches
    return bytes(rng.choice(b"abc.-1") for _ in range(L))


def random_buf(rng: random.Random, anchors: list[bytes]) -> bytes:
    n = rng.choice([0, 1, 2, 3, 15, 16, 17, 31, 32, 33, 34, 47, 48, 63, 64, 65, 100, 257, 1000, 5000])
    mode = rng.random()
    if mode < 0.2:
        b = bytearray(rng.randbytes(n))
    else:
        alpha = rng.choice([b"aAbB.:%", b"abc.-1:%", b"ab.", b"xyz ./:%", b"AaBbCc.:%-1"])
        b = bytearray(rng.choice(alpha) for _ in range(n))
    # plant anchors (in random case), some ending exactly at the end of the buffer
    for _ in range(rng.randint(0, 40)):
        a = rng.choice(anchors)
        if not a or len(a) > n:
            continue
        pos = n - len(a) if rng.random() < 0.3 else rng.randint(0, n - len(a))
        if rng.random() < 0.2 and len(a) > 1:  # truncated: buffer ends inside the anchor
            cutlen = rng.randint(1, len(a) - 1)
            pos = n - cutlen
            b[pos:] = bytes(c ^ (0x20 if rng.random() < 0.5 and 97 <= c <= 122 else 0) for c in a[:cutlen])
            continue
        b[pos : pos + len(a)] = bytes(c ^ (0x20 if rng.random() < 0.5 and 97 <= c <= 122 else 0) for c in a)
    return bytes(b)


def no_prefix_conflict(anchors: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for a in anchors:
        if any(a.startswith(b) or b.startswith(a) for b in out):
            continue
        out.append(a)
    return out


def one_case(rng: random.Random, case: int, stats: dict) -> None:
    anchors = no_prefix_conflict([random_anchor(rng) for _ in range(rng.randint(1, 5))])
    specs = tuple((a, hs.Memo()) for a in anchors)
    shapes = [rng.choice(SHAPES) for _ in anchors]
    salt = rng.getrandbits(32)
    allow_bad = rng.random() < 0.3
    behaviour = rng.choice(["plain", "clear", "flood", "raise", "mixed", "grow_clear"])
    buf = random_buf(rng, anchors)
    n = len(buf)
    if n == 0:
        try:
            hs.rewrite(buf, 0, 0, specs, lambda i, x: None)
        except ValueError:
            stats["badargs"] += 1
        return
    base = rng.choice([0, 0, rng.randint(0, n - 1), n - 1])
    limit = rng.choice([n, n, base + 1, rng.randint(base + 1, n)])
    dec = lambda i, idx: decision(buf, i, idx, specs[idx], shapes[idx], salt, allow_bad)  # noqa: E731

    calls = [0]

    def flood(idx, count):
        anchor, memo = specs[idx]
        shape = shapes[idx]
        m = len(anchor)
        for _ in range(count):
            # a fake buffer with the anchor in place: its key's decision is the one any hit with
            # the same key gets, so the entry is right wherever it matches
            pos = rng.randint(0, 40)
            fake = bytes(rng.choice(b"aAbB.:%c-1 ") for _ in range(pos)) + anchor + bytes(
                rng.choice(b"aAbB.:%c-1 ") for _ in range(rng.randint(0, 20)))
            k = key_of(fake, pos, anchor, shape)
            d = decision(fake, pos, idx, specs[idx], shape, salt, allow_bad)
            if k is None or d is None:
                continue
            memo.store(k[0], *shape, d)
            # junk under other shapes, with a value that would be wrong anywhere: its bytes
            # (\x01) are in no buffer, so it must never be found
            if rng.random() < 0.3:
                other = rng.choice(SHAPES)
                memo.store(b"\x01" * (other[0] + m + other[1] + 3), *other, (-10**6, 10**6, REPLS[0]))

    def miss(i: int, idx: int):
        calls[0] += 1
        anchor, memo = specs[idx]
        beh = behaviour if behaviour != "mixed" else rng.choice(["plain", "clear", "flood", "raise"])
        if beh == "raise" and rng.random() < 0.02:
            raise Boom(i)
        if beh in ("clear", "grow_clear") and rng.random() < 0.5:
            for s in rng.sample(specs, rng.randint(1, len(specs))):
                s[1].clear()
        if beh in ("flood", "grow_clear") and rng.random() < 0.3:
            flood(rng.randrange(len(specs)), rng.choice([10, 200, 3000]))
        d = dec(i, idx)
        k = key_of(buf, i, anchor, shapes[idx])
        if d is not None and k is not None:
            memo.store(k[0], *shapes[idx], d)
        return d

    before = [sys.getrefcount(r) for r in REPLS]
    rc_buf, rc_miss = sys.getrefcount(buf), sys.getrefcount(miss)
    try:
        want = model(buf, base, limit, specs, dec)
        want_exc = None
    except ValueError:
        want, want_exc = None, True
    for rep in range(2):  # cold, then warm memos
        try:
            got = hs.rewrite(buf, base, limit, specs, miss)
        except Boom:
            stats["raised"] += 1
            continue
        except ValueError as exc:
            if want_exc is None:
                raise AssertionError(f"case {case}: unexpected ValueError {buf!r} {base} {limit} {specs}") from exc
            stats["valueerror"] += 1
            continue
        if want_exc is not None:
            raise AssertionError(f"case {case}: expected ValueError, got {got!r}")
        if got != want:
            raise AssertionError(
                f"case {case} rep {rep}: mismatch\n buf={buf!r}\n base={base} limit={limit}\n"
                f" anchors={[s[0] for s in specs]} shapes={shapes}\n"
                f" got={got!r}\n want={want!r}"
            )
        stats["ok"] += 1
        del got
    stats["miss_calls"] += calls[0]
    del want
    for s in specs:
        s[1].clear()
    after = [sys.getrefcount(r) for r in REPLS]
    assert before == after, f"case {case}: refcount drift {[(a - b) for a, b in zip(after, before, strict=True)]}"
    if len(buf) <= 1:
        rc_buf = sys.getrefcount(buf)  # a one-byte bytes is a shared singleton: its count moves anyway
    assert sys.getrefcount(buf) == rc_buf and sys.getrefcount(miss) == rc_miss, (
        f"case {case}: buf/miss refcount {sys.getrefcount(buf) - rc_buf} {sys.getrefcount(miss) - rc_miss} "
        f"{behaviour} {stats}")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_loop_keeps_its_contract(seed: int) -> None:
    rng = random.Random(seed)
    stats = {"ok": 0, "raised": 0, "valueerror": 0, "miss_calls": 0, "badargs": 0}
    for case in range(100):
        one_case(rng, case, stats)
    assert stats["ok"] > 100 and stats["miss_calls"] > 300  # the cases did exercise the loop


EDGE = b"ab.t cd.T ef.t"


@pytest.mark.parametrize("ret", [(-100, 1, b"x"), (0, 1, b"x"), (-1, 5, b"y"), (1, 0, b"z"), (0, 10**6, b"x"),
                                 (10**18, 10**18, b"x"), (-10**18, 0, b"x")])
def test_odd_edits_from_the_callback(ret: tuple[int, int, bytes]) -> None:
    spec = ((b".t", hs.Memo()),)
    try:
        want = model(EDGE, 3, 14, spec, lambda i, x: ret)
    except ValueError:
        with pytest.raises(ValueError):
            hs.rewrite(EDGE, 3, 14, spec, lambda i, x: ret)
        return
    assert hs.rewrite(EDGE, 3, 14, spec, lambda i, x: ret) == want


@pytest.mark.parametrize("bad", [[0, 1, b"x"], (0, 1, "s"), (0, 1), ("0", 1, b"x"), (2**70, 1, b"x"), 5])
def test_callback_answers_that_are_not_edits(bad: object) -> None:
    spec = ((b".t", hs.Memo()),)
    with pytest.raises((TypeError, OverflowError)):
        hs.rewrite(b"ab.t", 0, 4, spec, lambda i, x: bad)


@pytest.mark.parametrize("args", [(b"abc", 0, 0), (b"abc", 3, 3), (b"abc", -1, 2), (b"abc", 0, 4), (b"", 0, 0)])
def test_bad_bounds(args: tuple[bytes, int, int]) -> None:
    with pytest.raises(ValueError):
        hs.rewrite(*args, ((b".t", hs.Memo()),), lambda i, x: None)


def test_bad_specs() -> None:
    m1 = hs.Memo()
    for badspec in [((b".t", m1, 3),), ((b".t",),), ([b".t", m1],), ((b".t", {}),), (("t", m1),),
                    tuple((b".t", m1) for _ in range(65))]:
        with pytest.raises((TypeError, ValueError)):
            hs.rewrite(b"ab.t", 0, 4, badspec, lambda i, x: None)


def test_degenerate_anchors_and_many_hits() -> None:
    m1 = hs.Memo()
    assert hs.rewrite(b"abc", 0, 3, ((b"", m1),), lambda i, x: (0, 1, b"X")) == (b"abc", 3)
    assert hs.rewrite(b"abc", 0, 3, ((b"abcd", m1),), lambda i, x: (0, 1, b"X")) == (b"abc", 3)
    assert hs.rewrite(b"a.a.a", 0, 5, ((b".", hs.Memo()),),
                      lambda i, x: (0, 1, b"D")) == (b"aDaDa", 5)
    assert hs.rewrite(b"aAaA", 1, 4, ((b"a", hs.Memo()),),
                      lambda i, x: (0, 1, b"x")) == (b"xxx", 4)
    big = b"." * 1_000_000
    assert hs.rewrite(big, 0, len(big), ((b".", hs.Memo()),),
                      lambda i, x: (0, 1, b"")) == (b"", len(big))
    big = b"ab" * 500_000
    out, cut = hs.rewrite(big, 0, len(big), ((b"ab", hs.Memo()),), lambda i, x: (0, 2, b"c"))
    assert out == b"c" * 500_000 and cut == len(big)
