"""Links that already exist keep working: EZproxy starting points and old proxied host names."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from proxy.migration import old_link
from proxy.vendors import VendorConfig, VendorMap
from tests.support import PROXY_HOST, Browser, EchoVendor, base_config, run_proxy

OLD = "ezproxy.library.org"


def _vendors() -> VendorMap:
    configs = [
        VendorConfig(id="a", title="A", start="https://www.vendor-a.com/", hosts=("www.vendor-a.com",), domains=(),
                     groups=frozenset({"g"})),
        VendorConfig(id="b", title="B", start="http://old.vendor-b.org/", hosts=("http://old.vendor-b.org",),
                     domains=("vendor-b.org",), groups=frozenset({"g"})),
    ]
    return VendorMap(configs, "proxy.lib.example", "https")


@pytest.mark.parametrize(("host", "path", "expected"), [
    ("www-vendor--a-com.ezproxy.library.org", "/s?q=1", "https://www-vendor--a-com.proxy.lib.example/s?q=1"),
    ("www.vendor-a.com.ezproxy.library.org", "/s", "https://www-vendor--a-com.proxy.lib.example/s"),
    ("www-vendor--a-com.ezproxy.library.org:443", "/", "https://www-vendor--a-com.proxy.lib.example/"),
    ("old-vendor--b-org.ezproxy.library.org", "/x", "https://old-vendor--b-org---h.proxy.lib.example/x"),
    ("cdn-vendor--b-org.ezproxy.library.org", "/x", "https://cdn-vendor--b-org.proxy.lib.example/x"),
    ("ezproxy.library.org", "/login?url=https://www.vendor-a.com/", "https://proxy.lib.example/login?url=https://www.vendor-a.com/"),
    ("ezproxy.library.org", "/menu", "https://proxy.lib.example/databases"),
])
def test_old_links_map_to_the_same_page(host: str, path: str, expected: str) -> None:
    assert old_link(host, path, (OLD,), _vendors(), "https://proxy.lib.example") == expected


@pytest.mark.parametrize("host", [
    "www-evil-com.ezproxy.library.org",            # not a configured vendor
    "www.evil.com.ezproxy.library.org",
    "evilezproxy.library.org",                     # not under the old name
    "www-vendor--a-com.ezproxy.library.org.evil.example",
    "a---b.ezproxy.library.org",                   # not a decodable label
    "www-vendor--a-com.other.library.org",
])
def test_anything_else_is_not_an_old_link(host: str) -> None:
    assert old_link(host, "/", (OLD,), _vendors(), "https://proxy.lib.example") is None


async def test_old_names_and_ezproxy_starting_points_through_the_proxy(tmp_path: Path, echo: EchoVendor) -> None:
    vendor = {"id": "echo", "title": "Echo", "start": f"{echo.origin}/", "hosts": [echo.origin, "www.vendor-a.com"],
              "groups": ["wolcott"]}
    config = base_config(tmp_path, [vendor], migration={"old_hosts": [OLD]})
    async with run_proxy(config) as proxy:
        b = Browser(proxy)
        moved = await b.get(f"http://www-vendor--a-com.{OLD}/search?q=owls", follow=False)
        assert moved.status == 301
        assert moved.header("Location") == f"http://www-vendor--a-com.{PROXY_HOST}/search?q=owls"
        unknown = await b.get(f"http://www-evil-com.{OLD}/", follow=False)
        assert unknown.status == 404 and unknown.header("X-Libproxy-Reason") == "not-configured"
        # EZproxy's raw starting point: the rest of the query is the target, as typed.
        raw = await b.get(f"http://{PROXY_HOST}/login?url={echo.origin}/echo?a=1&b=2", follow=False)
        assert raw.status == 200 and f'value="{echo.origin}/echo?a=1&amp;b=2"' in raw.text
        qurl = await b.get(f"http://{PROXY_HOST}/login?qurl={quote(echo.origin + '/echo?a=1&b=2', safe='')}",
                           follow=False)
        assert qurl.status == 200 and f'value="{echo.origin}/echo?a=1&amp;b=2"' in qurl.text
        signed = await b.sign_in("1000", "1111", f"{echo.origin}/echo?a=1&b=2")
        assert signed.status == 200 and signed.json()["path"] == "/echo?a=1&b=2"
        # Every safety rule for starting points still applies to the raw form.
        evil = await b.get(f"http://{PROXY_HOST}/login?url=https://evil.example/?x={echo.origin}", follow=False)
        assert evil.status == 404 and evil.header("Location") is None
        userinfo = await b.get(f"http://{PROXY_HOST}/login?url=http://evil.example@127.0.0.1:{echo.port}/",
                               follow=False)
        assert userinfo.status == 404
        await b.close()


def test_old_hosts_are_checked(tmp_path: Path) -> None:
    from proxy.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        base_config(tmp_path, [], migration={"old_hosts": ["localhost", "proxy.localhost", "ok.example"]})
    text = "\n".join(info.value.problems)
    assert '"localhost" is not a host name' in text and "covers this proxy's own host name" in text
    assert "ok.example" not in text
