"""Content codings: capped streaming decoders, streaming encoders, and choosing an encoding.

Decoding is only needed for bodies the proxy rewrites; everything else passes through still
compressed. Every decoder enforces two caps on what it produces:

* ``max_size``: total decoded bytes (a 200 KB gzip bomb that inflates to 200 MB stops here);
* ``max_ratio``: decoded bytes per encoded byte received so far, once the output passes
  ``ratio_grace`` bytes (small bodies may compress very well; a long stream at 1000:1 is a bomb).

A cap raises ``DecodedTooLarge``; a stream that is not valid in its coding (bad header, CRC
mismatch, truncated at the end, unknown coding) raises ``BadEncoding``. Both are ``UpstreamError``
subclasses, so the error middleware answers 502. The decoders never produce more than
``STEP`` bytes per call into the underlying library, so a bomb is stopped after at most
``max_size + STEP`` bytes were ever allocated, and ``iter_decompress`` lets the caller stream
the output on in ``STEP``-sized pieces.

Codings: ``gzip``/``x-gzip`` (several concatenated members are decoded, bytes after the last
member that are not a gzip member are ignored, as browsers do), ``deflate`` (zlib-wrapped or raw,
told apart by the first two bytes), ``br``, ``zstd`` (window limited to 8 MiB as RFC 8878
requires of HTTP), ``identity``; a list such as ``gzip, br`` is undone right to left.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final, Protocol

import brotli
import zstandard

from proxy.errors import UpstreamError, VendorResponseTooLarge

if TYPE_CHECKING:
    _deflate = zlib
else:
    # Gzip and deflate go through ISA-L where it is installed (python-isal: the same formats and
    # the same API as zlib). On the corpus it encodes at level 1 four to seven times as fast
    # as zlib, and smaller, and decodes two to three times as fast (docs/rewriting.md). The caps
    # work the same on both (tests/test_rewrite_compression.py runs on whichever is installed).
    try:
        from isal import isal_zlib as _deflate
    except ImportError:
        _deflate = zlib
# What a corrupt stream raises (ISA-L's error is not zlib's).
_DEFLATE_ERRORS: Final = (zlib.error, _deflate.error)

# The codings a rewritten body may be sent in, cheapest first (ties in the browser's preferences
# go to the earlier one). Measured on the corpus (see make_encoder): with ISA-L, gzip 1 is the
# cheapest and about as small as zstd 1; with zlib alone zstd 1 is, then brotli 1.
OFFERED: Final = ("gzip", "zstd", "br") if _deflate is not zlib else ("zstd", "br", "gzip")

STEP: Final = 256 * 1024
DEFAULT_MAX_SIZE: Final = 64 * 1024 * 1024
DEFAULT_MAX_RATIO: Final = 200
DEFAULT_RATIO_GRACE: Final = 1024 * 1024
ZSTD_MAX_WINDOW: Final = 8 * 1024 * 1024
_ZSTD_BLOCK_MAX: Final = 128 * 1024  # RFC 8878: no block decodes to more than this


class DecodedTooLarge(VendorResponseTooLarge):
    """A compressed vendor body decoded past the size or ratio cap (a bomb, or simply too big)."""

    status = 502


class BadEncoding(UpstreamError):
    """A vendor body is not valid in the content coding it claims."""

    status = 502


class Decoder(Protocol):
    """A streaming decoder. Feed every received chunk, then call ``flush`` once at the end."""

    def iter_decompress(self, data: bytes) -> Iterator[bytes]:
        """Decoded pieces (each at most ``STEP`` bytes) for the next encoded chunk."""
        ...

    def decompress(self, data: bytes) -> bytes:
        """All decoded bytes for the next encoded chunk."""
        ...

    def flush(self) -> bytes:
        """The last decoded bytes; raises ``BadEncoding`` if the stream ended early."""
        ...


_BROTLI_SLICE: Final = 4096


def _pieces(data: bytes) -> Iterator[bytes]:
    """``data`` in pieces of at most STEP bytes (the libraries' output limits are soft)."""
    if len(data) <= STEP:
        yield data
        return
    view = memoryview(data)
    for pos in range(0, len(data), STEP):
        yield bytes(view[pos : pos + STEP])


class _Caps:
    """Counts bytes in and out and raises when a cap is passed."""

    __slots__ = ("consumed", "grace", "max_ratio", "max_size", "produced", "source")

    def __init__(self, max_size: int, max_ratio: float, grace: int, source: _Caps | None = None) -> None:
        self.max_size = max_size
        self.max_ratio = max_ratio
        self.grace = grace
        self.consumed = 0
        self.produced = 0
        # For an inner layer of a chained coding: the ratio is measured against the bytes the
        # vendor sent (counted by the outermost layer), not against the layer's own input.
        self.source = source

    def budget(self) -> int:
        """How many more bytes one call may produce: enough to see the cap passed, no more."""
        return max(1, min(STEP, self.max_size - self.produced + 1))

    def add(self, produced: int) -> None:
        self.produced += produced
        # SECURITY: stop a decompression bomb at the size cap or as soon as its ratio shows.
        if self.produced > self.max_size:
            raise DecodedTooLarge(f"decoded body exceeds {self.max_size} bytes")
        received = self.source.consumed if self.source is not None else self.consumed
        if self.produced > self.grace and self.produced > self.max_ratio * max(1, received):
            raise DecodedTooLarge(f"decoded body exceeds {self.max_ratio}x its encoded size")


class _Base:
    """Shared plumbing: ``decompress`` is the joined ``iter_decompress``."""

    def __init__(self, caps: _Caps) -> None:
        self._caps = caps

    def iter_decompress(self, data: bytes) -> Iterator[bytes]:
        raise NotImplementedError

    def decompress(self, data: bytes) -> bytes:
        return b"".join(self.iter_decompress(data))

    def flush(self) -> bytes:
        raise NotImplementedError


class _ZlibDecoder(_Base):
    """gzip (any number of members) and deflate (zlib or raw), via ``decompressobj`` of zlib or
    ISA-L (see ``_deflate``)."""

    def __init__(self, caps: _Caps, gzip: bool) -> None:
        super().__init__(caps)
        self._gzip = gzip
        self._obj: zlib._Decompress | None = None
        self._head = b""  # bytes seen before a member starts (magic or zlib header not yet known)
        self._members = 0
        self._ignoring = False

    def _start(self, data: bytes) -> bytes | None:
        """Start the next member from ``self._head + data``; None when more bytes are needed."""
        buf = self._head + data
        if len(buf) < 2:
            self._head = buf
            return None
        self._head = b""
        if self._gzip:
            if buf[:2] != b"\x1f\x8b":
                if self._members == 0:
                    raise BadEncoding("body is not gzip")
                self._ignoring = True  # trailing bytes after the last member, as browsers do
                return b""
            self._obj = _deflate.decompressobj(16 + _deflate.MAX_WBITS)
        else:
            if self._members:
                self._ignoring = True
                return b""
            cmf, flg = buf[0], buf[1]
            zlib_wrapped = cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf * 256 + flg) % 31 == 0
            self._obj = _deflate.decompressobj(_deflate.MAX_WBITS if zlib_wrapped else -_deflate.MAX_WBITS)
        self._members += 1
        return buf

    def iter_decompress(self, data: bytes) -> Iterator[bytes]:
        caps = self._caps
        while data and not self._ignoring:
            if self._obj is None:
                held = len(self._head)
                started = self._start(data)
                if started is None:
                    caps.consumed += len(data)
                    return
                caps.consumed -= held  # those bytes are counted again below, as part of the member
                data = started
                if self._obj is None:
                    caps.consumed += len(data)
                    return
            obj = self._obj
            try:
                while True:
                    budget = caps.budget()
                    piece = obj.decompress(data, budget)
                    # Count only the input zlib actually used, so the ratio is exact.
                    caps.consumed += len(data) - len(obj.unconsumed_tail) - len(obj.unused_data)
                    if piece:
                        caps.add(len(piece))
                        yield piece
                    data = obj.unconsumed_tail
                    # A full output buffer may leave output inside zlib even with no input left.
                    if obj.eof or (not data and len(piece) < budget):
                        break
            except _DEFLATE_ERRORS as exc:
                raise BadEncoding(f"corrupt {'gzip' if self._gzip else 'deflate'} body: {exc}") from None
            if obj.eof:
                data = obj.unused_data
                self._obj = None
            else:
                return
        if data:
            caps.consumed += len(data)  # ignored trailing bytes

    def flush(self) -> bytes:
        if self._ignoring:
            return b""
        if self._obj is None:
            if self._head and self._members == 0:
                raise BadEncoding("body ended inside the compression header")
            if self._members == 0 and self._caps.consumed:
                raise BadEncoding("body ended before any compressed data")
            return b""  # empty body, or ended cleanly after a member (a stray byte is ignored)
        raise BadEncoding("compressed body is truncated")


class _BrotliDecoder(_Base):
    def __init__(self, caps: _Caps) -> None:
        super().__init__(caps)
        self._obj = brotli.Decompressor()
        self._seen = False

    def iter_decompress(self, data: bytes) -> Iterator[bytes]:
        caps = self._caps
        if data:
            self._seen = True
        obj = self._obj
        try:
            # Small slices: brotli takes all input at once, so this is how the ratio cap gets
            # to see how much input a burst of output came from.
            for pos in range(0, len(data), _BROTLI_SLICE):
                part = data[pos : pos + _BROTLI_SLICE]
                caps.consumed += len(part)
                if obj.is_finished():
                    continue  # bytes after the end of the stream are ignored
                piece = obj.process(part, output_buffer_limit=caps.budget() // 2 + 1)
                # Output comes in pieces even below the limit: drain with empty input until
                # nothing more comes and brotli asks for input again.
                while piece or not (obj.can_accept_more_data() or obj.is_finished()):
                    if piece:
                        caps.add(len(piece))
                        yield from _pieces(piece)
                    elif obj.is_finished():
                        break
                    piece = obj.process(b"", output_buffer_limit=caps.budget() // 2 + 1)
        except brotli.error as exc:
            raise BadEncoding(f"corrupt br body: {exc}") from None

    def flush(self) -> bytes:
        if self._seen and not self._obj.is_finished():
            raise BadEncoding("br body is truncated")
        return b""


class _ZstdFrames:
    """Walks zstd frame and block headers (RFC 8878 section 3.1) without decoding.

    The decoder feeds ``zstandard`` one block at a time, because a block never decodes to more
    than 128 KiB while a whole buffer of blocks can decode to gigabytes in one call.
    """

    __slots__ = ("_checksum", "_last", "_need", "_remaining", "_state", "buffered")

    def __init__(self) -> None:
        self._state = "magic"
        self._need = 4
        self.buffered = bytearray()
        self._remaining = 0
        self._last = False
        self._checksum = False

    @property
    def between_frames(self) -> bool:
        return self._state == "magic" and not self.buffered

    def cuts(self, data: bytes) -> Iterator[int]:
        """Offsets in ``data`` just after each block (or skippable frame) ends."""
        pos = 0
        n = len(data)
        while pos < n:
            if self._remaining:
                step = min(self._remaining, n - pos)
                self._remaining -= step
                pos += step
                if not self._remaining:
                    self._body_done()
                    yield pos
                continue
            take = min(self._need - len(self.buffered), n - pos)
            self.buffered += data[pos : pos + take]
            pos += take
            if len(self.buffered) == self._need:
                header = bytes(self.buffered)
                self.buffered.clear()
                if self._header(header):
                    yield pos

    def _body_done(self) -> None:
        if self._state == "skip":
            self._state, self._need = "magic", 4
        elif self._last:
            self._state, self._need = ("checksum", 4) if self._checksum else ("magic", 4)
        else:
            self._state, self._need = "block", 3

    def _header(self, header: bytes) -> bool:
        """Consume one complete header; True when a block or frame ended with it."""
        state = self._state
        if state == "magic":
            magic = int.from_bytes(header, "little")
            if magic == 0xFD2FB528:
                self._state, self._need = "descriptor", 1
            elif magic & 0xFFFFFFF0 == 0x184D2A50:
                self._state, self._need = "skip-size", 4
            else:
                raise BadEncoding("body is not zstd")
            return False
        if state == "skip-size":
            self._state = "skip"
            self._remaining = int.from_bytes(header, "little")
            if not self._remaining:
                self._body_done()
                return True
            return False
        if state == "descriptor":
            d = header[0]
            if d & 0x08:
                raise BadEncoding("zstd frame header has a reserved bit set")
            single = (d >> 5) & 1
            self._checksum = bool((d >> 2) & 1)
            rest = (0 if single else 1) + (0, 1, 2, 4)[d & 3] + ((1 if single else 0), 2, 4, 8)[d >> 6]
            if rest:
                self._state, self._need = "frame-rest", rest
            else:
                self._state, self._need = "block", 3
            return False
        if state == "frame-rest":
            self._state, self._need = "block", 3
            return False
        if state == "block":
            value = int.from_bytes(header, "little")
            self._last = bool(value & 1)
            kind = (value >> 1) & 3
            size = value >> 3
            if kind == 3 or size > _ZSTD_BLOCK_MAX:
                raise BadEncoding("zstd block header is invalid")
            self._remaining = 1 if kind == 1 else size
            self._state = "body"
            if not self._remaining:
                self._body_done()
                return True
            return False
        # checksum
        self._state, self._need = "magic", 4
        return True


class _ZstdDecoder(_Base):
    def __init__(self, caps: _Caps) -> None:
        super().__init__(caps)
        # SECURITY: a frame may ask for a window of up to 3.75 TB; 8 MiB is what HTTP allows.
        self._obj = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).decompressobj(
            read_across_frames=True
        )
        self._frames = _ZstdFrames()

    def iter_decompress(self, data: bytes) -> Iterator[bytes]:
        caps = self._caps
        start = 0
        pieces: list[int] = []
        try:
            pieces.extend(self._frames.cuts(data))
            if not pieces or pieces[-1] != len(data):
                pieces.append(len(data))
            for end in pieces:
                # One block per call keeps each call's output at 128 KiB or less.
                caps.consumed += end - start
                piece = self._obj.decompress(data[start:end])
                start = end
                if piece:
                    caps.add(len(piece))
                    yield piece
        except zstandard.ZstdError as exc:
            raise BadEncoding(f"corrupt zstd body: {exc}") from None

    def flush(self) -> bytes:
        if not self._frames.between_frames:
            raise BadEncoding("zstd body is truncated")
        return b""


class _Identity(_Base):
    def iter_decompress(self, data: bytes) -> Iterator[bytes]:
        self._caps.consumed += len(data)
        if data:
            self._caps.add(len(data))
            yield from _pieces(data)

    def decompress(self, data: bytes) -> bytes:
        # Nothing to decode: the bytes as they came (cutting and joining them would copy twice).
        self._caps.consumed += len(data)
        if data:
            self._caps.add(len(data))
        return data

    def flush(self) -> bytes:
        return b""


class _Chain(_Base):
    """Several codings, e.g. ``gzip, br``: the last one applied is undone first."""

    def __init__(self, caps: _Caps, layers: list[_Base]) -> None:
        super().__init__(caps)
        self._layers = layers  # outermost (last applied) first

    def iter_decompress(self, data: bytes) -> Iterator[bytes]:
        yield from self._through(0, data)

    def _through(self, index: int, data: bytes) -> Iterator[bytes]:
        if index == len(self._layers):
            if data:
                yield data
            return
        for piece in self._layers[index].iter_decompress(data):
            yield from self._through(index + 1, piece)

    def flush(self) -> bytes:
        out: list[bytes] = []
        for index, layer in enumerate(self._layers):
            tail = layer.flush()  # validates that this layer's stream ended cleanly
            if tail:
                out.extend(self._through(index + 1, tail))
        return b"".join(out)


def parse_codings(content_encoding: str | None) -> list[str]:
    """The codings of a Content-Encoding value, in the order they were applied, lower-case."""
    if not content_encoding:
        return []
    return [c.strip().lower() for c in content_encoding.split(",") if c.strip()]


SUPPORTED: Final = frozenset({"gzip", "x-gzip", "deflate", "br", "zstd", "identity"})


def make_decoder(
    content_encoding: str | None,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_ratio: float = DEFAULT_MAX_RATIO,
    ratio_grace: int = DEFAULT_RATIO_GRACE,
) -> Decoder:
    """A decoder for a response's Content-Encoding; ``BadEncoding`` for a coding it cannot undo.

    ``max_size`` is typically the configured ``upstream.max_body``. The caps are shared by all
    layers of a chained coding and count the bytes received from the vendor.
    """
    caps = _Caps(max_size, max_ratio, ratio_grace)
    if content_encoding is None or content_encoding == "identity":
        return _Identity(caps)  # the common case, without parsing
    codings = [c for c in parse_codings(content_encoding) if c != "identity"]
    layers: list[_Base] = []
    for coding in reversed(codings):
        if coding in ("gzip", "x-gzip"):
            layers.append(_ZlibDecoder(caps, gzip=True))
        elif coding == "deflate":
            layers.append(_ZlibDecoder(caps, gzip=False))
        elif coding == "br":
            layers.append(_BrotliDecoder(caps))
        elif coding == "zstd":
            layers.append(_ZstdDecoder(caps))
        else:
            raise BadEncoding(f"unsupported content coding {coding!r}")
    if not layers:
        return _Identity(caps)
    if len(layers) == 1:
        return layers[0]
    # Inner layers read what the outer ones decoded: each has its own size count, and its ratio
    # is measured against what the vendor sent.
    for layer in layers[1:]:
        layer._caps = _Caps(max_size, max_ratio, ratio_grace, source=caps)
    return _Chain(caps, layers)


# ---------------------------------------------------------------------------------------------
# Encoders


class Encoder(Protocol):
    """A streaming encoder for the body sent to the browser."""

    name: str

    def compress(self, data: bytes) -> bytes:
        """Encoded bytes for ``data`` (may be empty while the encoder buffers)."""
        ...

    def flush(self) -> bytes:
        """Everything encoded so far, made decodable now (use before waiting on the vendor)."""
        ...

    def finish(self) -> bytes:
        """The end of the encoded stream."""
        ...


class GzipEncoder:
    name = "gzip"

    def __init__(self, level: int = 1) -> None:
        # ISA-L has levels 1-3 only (its 0 still compresses); any other is zlib's. The module
        # that makes the object also gives the flush modes it takes.
        if 1 <= level <= 3:
            self._obj = _deflate.compressobj(level, _deflate.DEFLATED, 16 + _deflate.MAX_WBITS)
            self._sync, self._finish = _deflate.Z_SYNC_FLUSH, _deflate.Z_FINISH
        else:
            self._obj = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            self._sync, self._finish = zlib.Z_SYNC_FLUSH, zlib.Z_FINISH

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush(self._sync)

    def finish(self) -> bytes:
        return self._obj.flush(self._finish)


class BrotliEncoder:
    name = "br"

    def __init__(self, quality: int = 1) -> None:
        self._obj = brotli.Compressor(quality=quality, mode=brotli.MODE_TEXT)

    def compress(self, data: bytes) -> bytes:
        return bytes(self._obj.process(data))

    def flush(self) -> bytes:
        return bytes(self._obj.flush())

    def finish(self) -> bytes:
        return bytes(self._obj.finish())


class ZstdEncoder:
    name = "zstd"

    def __init__(self, level: int = 1) -> None:
        # Low levels use windows far below the 8 MiB that browsers accept for HTTP (RFC 9659).
        self._obj = zstandard.ZstdCompressor(level=level).compressobj()

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        # A block flush: everything so far decodes now, and the frame goes on.
        return self._obj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def finish(self) -> bytes:
        return self._obj.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


class IdentityEncoder:
    name = "identity"

    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""

    def finish(self) -> bytes:
        return b""


def make_encoder(name: str, *, gzip_level: int = 1, br_quality: int = 1, zstd_level: int = 1) -> Encoder:
    """An encoder for ``name`` as returned by ``choose_encoding``.

    The defaults are the fast end. Measured on the real-world corpus (tests/corpus, files of
    about 138 KB; docs/rewriting.md): zstd 1 encodes at about 300 MB/s (0.45 ms a file) to 24% of
    the size, brotli 1 at about 135 MB/s (1 ms) to 25%, gzip 1 at about 100 MB/s with zlib (1.4
    ms) to 26% or about 410 MB/s with ISA-L (0.33 ms) to 25%; gzip 6 or brotli 4 cost 2-6 ms a
    file for 21%. So gzip is offered first with ISA-L, else zstd, then brotli (see OFFERED).
    """
    if name == "zstd":
        return ZstdEncoder(zstd_level)
    if name == "br":
        return BrotliEncoder(br_quality)
    if name == "gzip":
        return GzipEncoder(gzip_level)
    if name == "identity":
        return IdentityEncoder()
    raise ValueError(f"no encoder for {name!r}")


def _accepted(accept_encoding: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        name, *params = (p.strip() for p in item.split(";"))
        if not name:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        weights[name.lower()] = q
    return weights


# Browsers send a handful of distinct values; the cache is bounded, so odd values cannot grow it.
@functools.lru_cache(maxsize=256)
def choose_encoding(accept_encoding: str | None, offered: tuple[str, ...] = OFFERED) -> str:
    """The coding to send a rewritten body in: the browser's most preferred among ``offered``
    (ties go to the order of ``offered``), else ``identity``.

    Follows RFC 9110 section 12.5.3: ``q=0`` refuses a coding, ``*`` stands for codings not
    named, no header means any coding is fine (we still answer ``identity`` then, as many
    clients that send no header cannot decode). ``identity`` is returned even when the browser
    refuses it, because every other choice is refused too.
    """
    if accept_encoding is None:
        return "identity"
    weights = _accepted(accept_encoding)
    star = weights.get("*")
    best, best_q = "identity", 0.0
    for name in offered:
        q = weights.get(name, weights.get("x-gzip") if name == "gzip" else None)
        if q is None:
            q = star if star is not None else 0.0
        if q > best_q:
            best, best_q = name, q
    return best
