"""check-vendor: a vendor's start page fetched through the proxy's own client, in plain words."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from proxy.vendorcheck import check_vendor, referenced_hosts
from tests.support import EchoVendor, base_config, free_port


def test_referenced_hosts_of_a_page() -> None:
    page = b"""<html><head><link rel=stylesheet href="https://cdn.vendor.com/a.css">
    <script src='//static.vendor.com/app.js'></script><style>body{background:url(http://img.vendor.com/b.png)}</style>
    </head><body><img srcset="https://i1.vendor.com/x.jpg 1x, https://i2.vendor.com/x.jpg 2x">
    <a href="/relative">r</a><a href="mailto:x@y">m</a><img src="data:image/png;base64,AA">
    <iframe src="https://ads.tracker.example/f"></iframe></body></html>"""
    assert referenced_hosts(page, "https://www.vendor.com/start") == [
        ("http", "img.vendor.com"), ("https", "ads.tracker.example"), ("https", "cdn.vendor.com"),
        ("https", "i1.vendor.com"), ("https", "i2.vendor.com"), ("https", "static.vendor.com"),
        ("https", "www.vendor.com"),
    ]


async def test_redirects_to_unlisted_hosts_are_the_problem(tmp_path: Path, echo: EchoVendor) -> None:
    sso = quote("https://login.elsewhere.example/sso", safe="")
    vendors = [
        {"id": "good", "title": "Good", "start": f"{echo.origin}/page", "hosts": [echo.origin], "groups": ["g"]},
        # A second vendor on the same server, under another name (the test resolves it to loopback).
        {"id": "away", "title": "Away", "start": f"http://localhost:{echo.port}/redirect?to={sso}",
         "hosts": [f"http://localhost:{echo.port}"], "groups": ["g"]},
    ]
    config = base_config(tmp_path, vendors, upstream={"hosts": {"localhost": "127.0.0.1"}})
    good = await check_vendor(config, "good")
    assert good.ok, good.lines
    assert any("answered 200" in line for line in good.lines)
    bad = await check_vendor(config, "away")
    assert not bad.ok
    assert any("login.elsewhere.example" in line and "does not list" in line for line in bad.lines)
    missing = await check_vendor(config, "nosuch")
    assert not missing.ok and "no vendor" in missing.lines[0] and "good" in missing.lines[0]


def test_check_vendor_command(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = tmp_path / "c.toml"
    config.write_text(f"""
[patrons]
file = "{tmp_path / 'p.toml'}"
[upstream]
connect_timeout = "2s"
[[vendor]]
id = "down"
start = "{down}/"
hosts = ["{down}"]
groups = ["g"]
""")
    result = subprocess.run([sys.executable, "-m", "proxy", "check-vendor", "down", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "could not be reached" in result.stdout and "Traceback" not in result.stderr
