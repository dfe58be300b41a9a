"""Rewriting between vendor space and proxy space: pure functions and classes, no I/O.

Build once per vendor table (at start, and again on reload)::

    table = RewriteTable(vendor_map)
    headers = HeaderMapper(table)

Per vendor response (``origin`` is the vendor origin that was fetched)::

    if is_rewritable(content_type):
        decoder = make_decoder(content_encoding, max_size=config.upstream.max_body)
        rewriter = BodyRewriter(table.to_proxy(origin.scheme), rules=vendor_rules)
        encoder = make_encoder(choose_encoding(request_accept_encoding))
        for each chunk: encoder.compress(rewriter.feed(decoder.decompress(chunk)))
        at the end: decoder.flush(); encoder.compress(rewriter.flush()); encoder.finish()

Modules: ``hosts`` (the table and the host matcher), ``body`` (streaming rewriter, content
types), ``headers`` (URL-bearing headers, ETags), ``compression`` (codings).
"""

from proxy.rewrite.body import BodyRewriter, FindReplace, is_rewritable, media_type, rewrite_body
from proxy.rewrite.compression import (
    BadEncoding,
    DecodedTooLarge,
    Decoder,
    Encoder,
    choose_encoding,
    make_decoder,
    make_encoder,
)
from proxy.rewrite.headers import (
    REFERRER_POLICY,
    HeaderMapper,
    etag_for_rewritten,
    if_none_match_to_vendor,
)
from proxy.rewrite.hosts import Matcher, RewriteTable, Target, rewriting_loop

__all__ = [
    "REFERRER_POLICY",
    "BadEncoding",
    "BodyRewriter",
    "DecodedTooLarge",
    "Decoder",
    "Encoder",
    "FindReplace",
    "HeaderMapper",
    "Matcher",
    "RewriteTable",
    "Target",
    "choose_encoding",
    "etag_for_rewritten",
    "if_none_match_to_vendor",
    "is_rewritable",
    "make_decoder",
    "make_encoder",
    "media_type",
    "rewrite_body",
    "rewriting_loop",
]
