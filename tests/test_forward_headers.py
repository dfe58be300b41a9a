"""Which request headers may leave for a vendor, and which response headers reach a browser."""

from __future__ import annotations

from proxy.forward.headers import OutboundPolicy, outbound_headers, response_headers


def test_outbound_headers_allow_list_and_connection() -> None:
    policy = OutboundPolicy(map_origin=lambda v: None, map_referer=lambda v: None)
    inbound = [("Accept", "text/html"), ("X-Forwarded-For", "1.2.3.4"), ("x_forwarded_for", "1.2.3.4"),
               ("Cookie", "libproxy=abc"), ("Connection", "keep-alive, Accept"), ("Range", "bytes=0-1"),
               ("Range", "bytes=5-9"), ("Accept-Encoding", "gzip, compress, br;q=0.5, sdch"),
               ("Origin", "https://evil.example"), ("Sec-CH-UA", "x"), ("User-Agent", "UA")]
    out = outbound_headers(inbound, policy)
    assert out == [("Range", "bytes=0-1"), ("Accept-Encoding", "gzip, br;q=0.5"), ("User-Agent", "UA")]


def test_cookie_passthrough_never_forwards_the_proxy_cookie() -> None:
    policy = OutboundPolicy(map_origin=lambda v: None, map_referer=lambda v: None, cookie_passthrough=True,
                            proxy_cookie_names=frozenset({"libproxy"}))
    out = outbound_headers([("Cookie", "libproxy=sess; consent=yes; __Host-libproxy=x; libproxy_csrf=t")], policy)
    assert out == [("Cookie", "consent=yes")]


def test_response_headers_drop_cookies_and_pins() -> None:
    out = response_headers([("Set-Cookie", "a=b"), ("Content-Type", "text/html"), ("Strict-Transport-Security", "x"),
                            ("Alt-Svc", "h3=\":443\""), ("Connection", "X-Secret"), ("X-Secret", "1"),
                            ("Report-To", "{}"), ("Content-Length", "5"), ("ETag", '"e"')])
    assert out == [("Content-Type", "text/html"), ("ETag", '"e"')]


def test_no_spelling_of_a_proxy_cookie_leaves() -> None:
    """Found by the security fuzz run: a pair named "0 __host-libproxy" passed the name check."""
    policy = OutboundPolicy(map_origin=lambda v: None, map_referer=lambda v: None, cookie_passthrough=True,
                            proxy_cookie_names=frozenset({"libproxy"}))
    sent = "0 __host-libproxy=leak; __SECURE-LibProxy_bind=x; a libproxy=y; ok=1; x=libproxy"
    assert outbound_headers([("Cookie", sent)], policy) == [("Cookie", "ok=1; x=libproxy")]
