"""Content codings (proxy/rewrite/compression.py): round trips at any chunking, bombs stopped
at the caps with bounded memory, malformed streams refused, encoding negotiation."""

from __future__ import annotations

import gzip
import os
import random
import tracemalloc
import zlib

import brotli
import pytest
import zstandard

from proxy.errors import UpstreamError
from proxy.rewrite.compression import (
    STEP,
    BadEncoding,
    DecodedTooLarge,
    choose_encoding,
    make_decoder,
    make_encoder,
    parse_codings,
)

PAYLOAD = (os.urandom(2000) + b"<p>The blue whale is the largest animal known to have lived.</p>\n" * 8000)


def raw_deflate(data: bytes) -> bytes:
    obj = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return obj.compress(data) + obj.flush()


ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "deflate-raw": raw_deflate,
    "br": brotli.compress,
    "zstd": lambda data: zstandard.ZstdCompressor(level=3).compress(data),
    "identity": lambda data: data,
}


def decode(coding: str, data: bytes, sizes: list[int] | None = None, **caps: int) -> bytes:
    decoder = make_decoder(coding.replace("-raw", ""), **caps)
    out = []
    pos = 0
    rng = random.Random(len(data))
    while pos < len(data):
        size = rng.choice(sizes) if sizes else len(data)
        for piece in decoder.iter_decompress(data[pos : pos + size]):
            assert len(piece) <= STEP
            out.append(piece)
        pos += size
    out.append(decoder.flush())
    return b"".join(out)


@pytest.mark.parametrize("coding", list(ENCODERS))
@pytest.mark.parametrize("sizes", [None, [1, 2, 3], [7, 100, 4096], [65536]], ids=["whole", "tiny", "mixed", "64k"])
def test_round_trip(coding, sizes):
    data = PAYLOAD if sizes != [1, 2, 3] else PAYLOAD[:40_000]
    assert decode(coding, ENCODERS[coding](data), sizes) == data


def test_empty_bodies():
    for coding in ("gzip", "deflate", "br", "zstd", "identity"):
        decoder = make_decoder(coding)
        assert decoder.decompress(b"") == b""
        assert decoder.flush() == b""


def test_chained_codings_are_undone_right_to_left():
    data = PAYLOAD
    encoded = brotli.compress(gzip.compress(data))
    assert parse_codings("gzip, br") == ["gzip", "br"]
    assert decode("gzip, br", encoded, [1000, 50_000]) == data


def test_many_gzip_members_and_trailing_bytes():
    members = b"".join(gzip.compress(b"part %d;" % n) for n in range(1000))
    expected = b"".join(b"part %d;" % n for n in range(1000))
    assert decode("gzip", members, [1, 10, 333]) == expected
    assert decode("gzip", members + b"\0\0\0\0") == expected  # padding after the last member
    assert decode("gzip", gzip.compress(b"x") + b"garbage") == b"x"


def test_multiple_zstd_frames_and_skippable_frames():
    cctx = zstandard.ZstdCompressor(write_checksum=True, write_content_size=False)
    skippable = (0x184D2A50).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"12345"
    encoded = cctx.compress(b"one ") + skippable + cctx.compress(b"two " * 50_000) + skippable
    assert decode("zstd", encoded, [1, 3, 1000]) == b"one " + b"two " * 50_000


# --- bombs --------------------------------------------------------------------------------------


def bomb_chunks(encoded: bytes, size: int = 65536):
    for pos in range(0, len(encoded), size):
        yield encoded[pos : pos + size]


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    # About 200 KB that inflate to 200 MB, as in the issue.
    obj = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * (1024 * 1024)
    return b"".join(obj.compress(block) for _ in range(200)) + obj.flush()


def consume(decoder, chunks) -> int:
    produced = 0
    for chunk in chunks:
        for piece in decoder.iter_decompress(chunk):
            produced += len(piece)
    decoder.flush()
    return produced


def test_gzip_bomb_stops_at_the_size_cap_with_flat_memory(gzip_bomb):
    assert 150_000 < len(gzip_bomb) < 300_000
    cap = 20 * 1024 * 1024
    decoder = make_decoder("gzip", max_size=cap, max_ratio=10_000)
    tracemalloc.start()
    try:
        with pytest.raises(DecodedTooLarge) as caught:
            consume(decoder, bomb_chunks(gzip_bomb))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(caught.value, UpstreamError) and caught.value.status == 502
    assert peak < 4 * STEP  # the decoded 20 MB were never held at once


def test_gzip_bomb_stops_at_the_ratio_cap(gzip_bomb):
    decoder = make_decoder("gzip")  # defaults: 64 MiB, 200:1 after 1 MiB
    with pytest.raises(DecodedTooLarge, match="200x"):
        consume(decoder, bomb_chunks(gzip_bomb))
    assert decoder._caps.produced < 2 * 1024 * 1024 + STEP


@pytest.mark.parametrize("coding", ["br", "zstd", "deflate"])
def test_other_bombs(coding):
    block = b"\0" * (64 * 1024 * 1024)
    encoded = {
        "br": lambda: brotli.compress(block, quality=5),
        "zstd": lambda: zstandard.ZstdCompressor(level=3).compress(block),
        "deflate": lambda: zlib.compress(block, 9),
    }[coding]()
    decoder = make_decoder(coding, max_size=8 * 1024 * 1024, max_ratio=1_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(DecodedTooLarge):
            consume(decoder, bomb_chunks(encoded))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * STEP


def test_a_bomb_inside_a_chained_coding():
    encoded = brotli.compress(gzip.compress(b"\0" * (50 * 1024 * 1024)))
    with pytest.raises(DecodedTooLarge):
        consume(make_decoder("gzip, br", max_size=10 * 1024 * 1024, max_ratio=10**9), [encoded])
    with pytest.raises(DecodedTooLarge, match="200x"):
        consume(make_decoder("gzip, br"), [encoded])


# --- malformed streams ---------------------------------------------------------------------------

GZ = gzip.compress(PAYLOAD)


@pytest.mark.parametrize(("coding", "encoded"), [
    ("gzip", b"<html>not compressed</html>"),
    ("gzip", GZ[:-8] + bytes(8)),  # CRC and length wrong
    ("gzip", GZ[: len(GZ) // 2]),  # truncated
    ("gzip", GZ[:10] + bytes([GZ[10] ^ 0xFF]) + GZ[11:]),  # corrupt data
    ("gzip", b"\x1f"),
    ("deflate", zlib.compress(PAYLOAD)[:-10]),
    ("deflate", b"\xff" * 100),
    ("br", brotli.compress(PAYLOAD)[:-20]),
    ("br", b"\xff" * 100),
    ("zstd", zstandard.ZstdCompressor().compress(PAYLOAD)[:-20]),
    ("zstd", b"\x28\xb5\x2f\xfd" + b"\xff" * 100),
    ("zstd", b"not zstd at all"),
    ("compress", b"anything"),
    ("gzip, rot13", b"anything"),
])
def test_malformed_streams_raise_bad_encoding(coding, encoded):
    with pytest.raises(BadEncoding) as caught:
        decoder = make_decoder(coding)
        for chunk in bomb_chunks(encoded, 1000):
            decoder.decompress(chunk)
        decoder.flush()
    assert caught.value.status == 502


# --- encoders and negotiation --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gzip", "br", "zstd", "identity"])
def test_encoders_stream_and_flush(name):
    encoder = make_encoder(name)
    assert encoder.name == name
    first = encoder.compress(PAYLOAD[:100_000]) + encoder.flush()
    # After flush() everything so far is decodable, before the stream ends.
    partial = make_decoder(name).decompress(first)
    assert partial == PAYLOAD[:100_000]
    whole = first + encoder.compress(PAYLOAD[100_000:]) + encoder.finish()
    assert decode(name, whole) == PAYLOAD


@pytest.mark.parametrize("level", [0, 1, 3, 4, 6, 9])
def test_gzip_at_every_level(level):
    encoder = make_encoder("gzip", gzip_level=level)
    assert decode("gzip", encoder.compress(PAYLOAD) + encoder.finish()) == PAYLOAD


def test_unknown_encoder():
    with pytest.raises(ValueError):
        make_encoder("compress")


@pytest.mark.parametrize(("accept", "expected"), [
    ("gzip, deflate, br, zstd", "zstd"),  # the cheapest to encode (docs/rewriting.md)
    ("gzip, deflate, br", "br"),
    ("zstd;q=0, *", "br"),
    ("gzip, deflate", "gzip"),
    ("br;q=0.5, gzip;q=0.9", "gzip"),
    ("br;q=1.0, gzip;q=1.0", "br"),
    ("gzip;q=0, br;q=0", "identity"),
    ("*", "zstd"),
    ("*;q=0.1, br;q=0, zstd;q=0", "gzip"),
    ("x-gzip", "gzip"),
    ("identity", "identity"),
    ("", "identity"),
    (None, "identity"),
    ("br;q=abc, gzip", "gzip"),
    ("BR, GZIP", "br"),
])
def test_choose_encoding(accept, expected):
    # (The default order depends on whether ISA-L is installed; see the test below.)
    assert choose_encoding(accept, offered=("zstd", "br", "gzip")) == expected


def test_the_cheapest_coding_is_offered_first():
    from proxy.rewrite.compression import OFFERED, _deflate

    fast_gzip = _deflate.__name__ != "zlib"
    assert OFFERED == (("gzip", "zstd", "br") if fast_gzip else ("zstd", "br", "gzip"))
    assert choose_encoding("gzip, deflate, br, zstd") == OFFERED[0]
    assert choose_encoding("gzip, deflate, br") == ("gzip" if fast_gzip else "br")


def test_choose_among_what_is_offered():
    assert choose_encoding("br, gzip", offered=("gzip",)) == "gzip"
