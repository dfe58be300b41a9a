"""URL-bearing headers (proxy/rewrite/headers.py): golden cases both ways, CSP, validators."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.config import VendorConfig
from proxy.rewrite.headers import HeaderMapper, etag_for_rewritten, if_none_match_to_vendor
from proxy.rewrite.hosts import RewriteTable
from proxy.vendors import Origin, VendorMap

GOLDEN = Path(__file__).parent / "golden" / "rewrite"
SPEC = json.loads((GOLDEN / "vendors.json").read_text())
CASES = json.loads((GOLDEN / "headers.json").read_text())
TARGET = Origin("https", "api.vendor.test", 443)


def make_mapper(production: bool = False) -> HeaderMapper:
    proxy = SPEC["production_proxy" if production else "proxy"]
    configs = [
        VendorConfig(id=v["id"], title=v["id"], start="", hosts=tuple(v["hosts"]),
                     domains=tuple(v["domains"]), groups=frozenset({"members"}))
        for v in SPEC["vendors"]
    ]
    return HeaderMapper(RewriteTable(VendorMap(configs, proxy["host"], proxy["scheme"])))


MAPPER = make_mapper()
FUNCTIONS = {
    "location": MAPPER.location,
    "refresh": MAPPER.refresh,
    "link": MAPPER.link,
    "access_control_allow_origin": MAPPER.access_control_allow_origin,
    "content_security_policy": MAPPER.content_security_policy,
    "origin_to_vendor": MAPPER.origin_to_vendor,
    "referer_to_vendor": lambda value: MAPPER.referer_to_vendor(value, TARGET),
}
GOLDEN_CASES = [
    pytest.param(name, source, expected, id=f"{name}:{source[:60]}")
    for name, items in CASES.items() if name != "comment"
    for source, expected in items
]


@pytest.mark.parametrize(("header", "source", "expected"), GOLDEN_CASES)
def test_golden_headers(header, source, expected):
    assert FUNCTIONS[header](source) == expected


def test_every_header_is_covered():
    assert set(FUNCTIONS) == {name for name in CASES if name != "comment"}


@pytest.mark.parametrize("source", [case[0] for case in CASES["location"]])
def test_location_never_emits_a_url_outside_the_proxy(source):
    out = MAPPER.location(source)
    if out is None:
        return
    if "://" in out:
        scheme, rest = out.split("://", 1)
        assert scheme == "http"
        assert rest.split("/", 1)[0].endswith(".proxy.localhost:8080")
    else:
        assert not out.startswith(("//", "\\", "/\\")) and ":" not in out.split("/", 1)[0]


def test_location_relative_to_an_http_page():
    assert MAPPER.location("//api.vendor.test/x", context_scheme="http") == (
        "http://api-vendor-test---h.proxy.localhost:8080/x"
    )


def test_production_proxy_keeps_upgrade_insecure_requests():
    mapper = make_mapper(production=True)
    assert mapper.content_security_policy("upgrade-insecure-requests; img-src https://cdn.vendor.test") == (
        "upgrade-insecure-requests; img-src https://cdn-vendor-test.proxy.lib.example"
    )
    assert mapper.location("http://127.0.0.1:8081/a") == "https://127-0-0-1---h8081.proxy.lib.example/a"
    assert mapper.origin_to_vendor("https://www-vendor-test.proxy.lib.example") == "https://www.vendor.test"


def test_proxy_policy_names_only_the_proxy():
    policy = MAPPER.proxy_policy()
    assert "default-src 'self' http://*.proxy.localhost:8080" in policy
    assert "connect-src 'self' http://*.proxy.localhost:8080 ws://*.proxy.localhost:8080" in policy
    for directive in policy.split(";"):
        for source in directive.split()[1:]:
            assert source.startswith("'") or source in ("data:", "blob:") or source.endswith(
                "://*.proxy.localhost:8080"), source


@pytest.mark.parametrize("source", [case[0] for case in CASES["content_security_policy"]])
def test_csp_sources_are_all_in_proxy_space(source):
    mapped = MAPPER.content_security_policy(source)
    if mapped is None:
        return
    for policy in mapped.split(","):
        for directive in policy.split(";"):
            name, *sources = directive.split()
            if name in ("sandbox", "plugin-types"):
                continue
            for item in sources:
                assert item.startswith("'") or item in ("data:", "blob:") or (
                    item.split("://", 1)[1].split("/", 1)[0].endswith(".proxy.localhost:8080")), item


def test_referer_of_the_same_vendor_only():
    other = Origin("https", "www.othervendor.example", 443)
    referer = "http://www-vendor-test.proxy.localhost:8080/a?b=1"
    assert MAPPER.referer_to_vendor(referer, TARGET) == "https://www.vendor.test/a?b=1"
    assert MAPPER.referer_to_vendor(referer, other) is None


# --- validators of rewritten bodies ---------------------------------------------------------


def test_etag_of_a_rewritten_body():
    assert etag_for_rewritten('"abc"', "f00") == 'W/"abc.rw-f00"'
    assert etag_for_rewritten('W/"abc"', "f00") == 'W/"abc.rw-f00"'
    assert etag_for_rewritten(None, "f00") is None
    assert etag_for_rewritten("abc", "f00") is None  # not a quoted entity-tag
    assert etag_for_rewritten('"a"b"', "f00") is None


def test_if_none_match_back_to_the_vendor():
    assert if_none_match_to_vendor('W/"abc.rw-f00"', "f00") == 'W/"abc"'
    assert if_none_match_to_vendor('W/"abc.rw-old"', "f00") is None  # configuration changed
    assert if_none_match_to_vendor('"plain", W/"abc.rw-f00"', "f00") == '"plain", W/"abc"'
    assert if_none_match_to_vendor("*", "f00") == "*"
    assert if_none_match_to_vendor("garbage", "f00") is None
