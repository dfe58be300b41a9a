"""The vendor table: host <-> label mapping, domains and aliases, strict URL parsing."""

from __future__ import annotations

import random

import pytest

from proxy.rewrite import HeaderMapper, RewriteTable
from proxy.vendors import (
    Origin,
    VendorConfig,
    VendorMap,
    decode_label,
    encode_label,
    parse_absolute_url,
)


@pytest.mark.parametrize(
    ("origin", "label"),
    [
        (Origin("https", "www.vendor.com", 443), "www-vendor-com"),
        (Origin("http", "www.vendor.com", 80), "www-vendor-com---h"),
        (Origin("http", "127.0.0.1", 8081), "127-0-0-1---h8081"),
        (Origin("https", "my-vendor.com", 8443), "my--vendor-com---s8443"),
        (Origin("https", "a--b.example", 443), "a----b-example"),
        (Origin("https", "xn--bcher-kva.example", 443), "xn----bcher--kva-example"),
    ],
)
def test_label_encoding_examples(origin: Origin, label: str) -> None:
    assert encode_label(origin) == label
    decoded = decode_label(label)
    assert decoded is not None
    assert (decoded.scheme, decoded.host, decoded.port) == (origin.scheme, origin.host, origin.port)


def test_label_encoding_is_reversible_and_unambiguous() -> None:
    rng = random.Random(7)
    alphabet = "abc0-"
    seen: dict[str, Origin] = {}
    for _ in range(5000):
        labels = []
        for _ in range(rng.randint(1, 4)):
            core = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))).strip("-") or "a"
            labels.append(core)
        host = ".".join(labels)
        scheme = rng.choice(["http", "https"])
        port = rng.choice([80, 443, 8080, 1])
        origin = Origin(scheme, host, port)
        label = encode_label(origin)
        assert seen.setdefault(label, origin) == origin, (label, origin, seen[label])
        decoded = decode_label(label)
        assert decoded is not None and (decoded.scheme, decoded.host, decoded.port) == (scheme, host, port)


@pytest.mark.parametrize("label", ["", "-a", "a-", "a---", "a---x", "a---h080", "a---s443", "a---h80",
                                   "a-----b", "a---h1---h2", "a_b", "a---s99999"])
def test_labels_encode_label_cannot_produce_are_refused(label: str) -> None:
    assert decode_label(label) is None


def _vendor(**kw: object) -> VendorConfig:
    base: dict[str, object] = {"id": "v", "title": "V", "start": "https://www.vendor.com/",
                               "hosts": ("www.vendor.com",), "domains": (), "groups": frozenset({"g"})}
    base.update(kw)
    return VendorConfig(**base)  # type: ignore[arg-type]


def test_vendor_map_domains_and_aliases() -> None:
    long_host = "a" * 30 + "." + "b" * 30 + ".vendor.com"
    vmap = VendorMap([_vendor(domains=("vendor.com",), hosts=("www.vendor.com", long_host))],
                     "proxy.lib.example", "https")
    assert vmap.match(Origin("https", "cdn.vendor.com", 443)) is not None
    assert vmap.match(Origin("https", "vendor.com", 443)) is not None
    assert vmap.match(Origin("https", "evilvendor.com", 443)) is None
    assert vmap.match(Origin("https", "vendor.com.evil.example", 443)) is None
    assert vmap.match(Origin("https", "cdn.vendor.com", 8443)) is None  # domains: default ports only
    netloc = vmap.proxied_netloc(Origin("https", long_host, 443))
    assert netloc is not None and len(netloc.split(".")[0]) <= 63 and "---a" in netloc
    assert vmap.origin_for_host(netloc) == Origin("https", long_host, 443)
    assert vmap.origin_for_host("www-vendor-com.proxy.lib.example") == Origin("https", "www.vendor.com", 443)
    assert vmap.origin_for_host("www-evil-com.proxy.lib.example") is None
    assert vmap.origin_for_host("x.www-vendor-com.proxy.lib.example") is None
    mapper = HeaderMapper(RewriteTable(vmap))
    assert mapper.location("https://WWW.Vendor.COM./a?b=c") == "https://www-vendor-com.proxy.lib.example/a?b=c"


@pytest.mark.parametrize("url", [
    "https://vendor.example@evil.example/", "https://vendor.example:443@evil.example",
    "https://evil.example\\@vendor.example/", "https://vendor.example%2eevil.example/",
    "https://vendor.example%00.evil.example/", "//evil.example", "///evil.example", "/\\evil.example",
    "http:evil.example", "java\tscript:alert(1)", "javascript:alert(1)", "ftp://vendor.example/",
    " https://vendor.example/", "https://vendor.example:99999/", "https://vendor.example:/",
    "https://[::1]/", "https:///", "",
])
def test_parse_absolute_url_refuses_ambiguous_input(url: str) -> None:
    assert parse_absolute_url(url) is None


def test_parse_absolute_url_normalises_hosts() -> None:
    parsed = parse_absolute_url("https://vendor\u3002example/a b?q=\u00e9")
    assert parsed is not None
    assert parsed.origin == Origin("https", "vendor.example", 443)
    assert parsed.rest == "/a%20b?q=%C3%A9"
    upper = parse_absolute_url("HTTPS://VENDOR.EXAMPLE./")
    assert upper is not None and upper.origin == Origin("https", "vendor.example", 443)
