"""Credentialless subresources: fonts and crossorigin scripts of a vendor's pages load from its
other hosts without cookies (issue 14); a forged request for licensed content gets nothing."""

from __future__ import annotations

from pathlib import Path

from tests.support import Browser, EchoVendor, base_config, run_proxy


async def test_same_vendor_static_assets_load_without_a_session(tmp_path: Path, echo: EchoVendor) -> None:
    cdn = f"http://localhost:{echo.port}"  # the vendor's second host, on the same loopback server
    vendor = {"id": "echo", "title": "Echo", "start": f"{echo.origin}/", "hosts": [echo.origin, cdn],
              "groups": ["wolcott"]}
    other = {"id": "other", "title": "Other", "start": "https://other.example/", "hosts": ["other.example"],
             "groups": ["wolcott"]}
    config = base_config(tmp_path, [vendor, other], upstream={"hosts": {"localhost": "127.0.0.1"}})
    async with run_proxy(config) as proxy:
        www = f"http://{proxy.proxied_host(echo.origin)}"
        cdn_host = proxy.proxied_host(cdn)
        anonymous = Browser(proxy)

        def fetch(dest: str, origin: str) -> dict[str, str]:
            return {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": dest, "Sec-Fetch-Site": "same-site", "Origin": origin}

        for name, dest in (("f.woff2", "font"), ("app.js", "script"), ("s.css", "style"), ("i.png", "image")):
            echo.received.clear()
            reply = await anonymous.get(f"http://{cdn_host}/static/{name}", headers=fetch(dest, www), follow=False)
            assert reply.status == 200 and reply.body.startswith(b"static:"), (name, reply.status)
            # Without the membership assertion: nobody signed in.
            assert echo.last.header("X-Library-Membership") is None
        # Licensed content asked for the same way: a CORS-readable 401, nothing relayed.
        for path in ("/static/article.pdf", "/echo", "/big?size=100"):
            reply = await anonymous.get(f"http://{cdn_host}{path}", headers=fetch("empty", www), follow=False)
            assert reply.status == 401 and reply.header("Access-Control-Allow-Origin") == www
            assert b"static" not in reply.body and b"headers" not in reply.body
        # From another vendor's page, or without the browser's markings: the usual sign-in.
        other_page = f"http://{proxy.proxied_host('https://other.example')}"
        for headers in (fetch("font", other_page), {"Origin": www}, fetch("document", www)):
            reply = await anonymous.get(f"http://{cdn_host}/static/f.woff2", headers=headers, follow=False)
            assert reply.status == 302 and "/login?url=" in (reply.header("Location") or "")
        # A POST is never a credentialless subresource.
        post = await anonymous.post(f"http://{cdn_host}/static/f.woff2", headers=fetch("empty", www))
        assert post.status == 401 and post.header("X-Libproxy-Reason") == "signed-out"
        await anonymous.close()
