"""A realistic multi-host vendor for the rewriting tests, all on one loopback port.

Host names (mapped to 127.0.0.1 by the proxy's ``[upstream] hosts``):

    www.vendor.test    pages: absolute, protocol-relative and relative links, srcset, a form,
                       inline style and script, a link to the sign-on host with a
                       percent-encoded return URL, a <base> page, a meta-refresh page
    cdn.vendor.test    a gzip-compressed script that builds the API's URL at run time, a
                       brotli-compressed stylesheet with @import and url(), an image, a PDF
                       served with Range support, a web font and a ``crossorigin`` script
                       (loaded in CORS mode without cookies, as browsers do)
    api.vendor.test    JSON with JSON-escaped URLs, CORS for the www origin
    login.vendor.test  sign-on: a cross-host redirect chain ending on www with a cookie set for
                       the parent domain (Domain=vendor.test)

The vendor knows only its own names: every URL it writes is a vendor URL, as a real one would.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import brotli
from aiohttp import web

HOSTS = ("www.vendor.test", "cdn.vendor.test", "api.vendor.test", "login.vendor.test")
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2274c"
    "5e0000000049454e44ae426082"
)


def multihost_app(port: int, pdf: Path) -> web.Application:
    """The vendor app; ``pdf`` is a file served (with Range) as the full-text download."""
    www, cdn, _api, login = (f"http://{h}:{port}" for h in HOSTS)
    seen: list[tuple[str, str]] = []  # (host, path) of every request, for the tests
    app = web.Application()
    app["seen"] = seen

    def html(body: str, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(text=f"<!doctype html><html><head><meta charset='utf-8'>{body}</html>",
                            content_type="text/html", status=status, headers=headers)

    async def dispatch(request: web.Request) -> web.StreamResponse:
        host = request.headers.get("Host", "").split(":")[0]
        path = request.path
        seen.append((host, request.path_qs))
        if host == "www.vendor.test":
            return await www_pages(request, path)
        if host == "cdn.vendor.test":
            return await cdn_files(request, path)
        if host == "api.vendor.test" and path == "/data.json":
            return web.json_response(
                {"message": "api says hello", "link": f"{www}/article/from-api", "escaped": "see below"},
                dumps=lambda o: json.dumps(o).replace("/", "\\/"),
                headers={"Access-Control-Allow-Origin": www, "Access-Control-Allow-Credentials": "true",
                         "Vary": "Origin"},
            )
        if host == "login.vendor.test" and path == "/sso":
            back = request.query.get("return", f"{www}/")
            return web.Response(status=302, headers={"Location": f"{login}/sso/step2?return={back}"})
        if host == "login.vendor.test" and path == "/sso/step2":
            back = request.query.get("return", f"{www}/")
            response = web.Response(status=302, headers={"Location": back})
            response.set_cookie("vendor_sso", "signed-on", domain="vendor.test", path="/")
            return response
        return web.Response(status=404, text="not found")

    async def www_pages(request: web.Request, path: str) -> web.StreamResponse:
        if path == "/":
            return html(f"""<title>Vendor home</title>
<link rel="stylesheet" href="{cdn}/site.css">
<style>.hero {{ background: url('{cdn}/logo.png'); }}</style>
<script src="{cdn}/app.js"></script>
<script crossorigin="anonymous" src="{cdn}/cors.js"></script>
<style>@font-face {{ font-family: VendorFont; src: url({cdn}/font.woff2) format('woff2'); }}
.f {{ font-family: VendorFont, serif; }}</style>
</head><body>
<p class="f" id="cors">the crossorigin script did not run</p>
<h1 class="hero">Vendor home</h1>
<p id="out">scripts did not run</p>
<p id="sso">{"signed on at the vendor" if request.cookies.get("vendor_sso") else "not signed on"}</p>
<img alt="logo" src="//cdn.vendor.test:{port}/logo.png" srcset="{cdn}/logo.png 1x, {cdn}/logo.png?2x 2x">
<ul>
<li><a id="article" href="{www}/article/owls">Owls (absolute link)</a></li>
<li><a id="relative" href="/article/relative">Relative link</a></li>
<li><a id="sso-link" href="{login}/sso?return=http%3A%2F%2Fwww.vendor.test%3A{port}%2Fwelcome">Sign on</a></li>
<li><a id="pdf" href="{cdn}/fulltext.pdf">Full text (PDF)</a></li>
<li><a id="base" href="/based/">A page with a base element</a></li>
</ul>
<form id="search" action="{www}/search" method="get"><input name="q" value="owls"></form>
<script>document.getElementById('out').dataset.inline = "{www}/inline";</script>
</body>""")
        if path.startswith("/article/"):
            return html(f"<title>Article</title></head><body><h1>Article {path[9:]}</h1>"
                        f"<p><a href='{www}/'>home</a></p></body>")
        if path == "/welcome":
            return html("<title>Welcome</title></head><body><h1>Welcome back</h1>"
                        f"<p id='sso'>{'signed on at the vendor' if request.cookies.get('vendor_sso') else 'no'}</p>"
                        "</body>")
        if path == "/search":
            q = request.query.get("q", "")
            return html(f"<title>Results</title></head><body><h1>Results for {len(q)} letters</h1></body>")
        if path == "/based/":
            return html(f"<base href='{www}/based/'><title>Based</title></head><body>"
                        "<a id='rel' href='page'>relative to base</a></body>")
        if path == "/refresh":
            return html(f"<meta http-equiv='refresh' content='0; url={www}/article/refreshed'>"
                        "<title>Moving</title></head><body>moving</body>")
        return web.Response(status=404, text="not found")

    async def cdn_files(request: web.Request, path: str) -> web.StreamResponse:
        if path == "/app.js":
            script = (
                "document.addEventListener('DOMContentLoaded', function () {\n"
                f"  var host = 'api.vendor.test:{port}';\n"
                "  var api = location.protocol + '//' + host + '/data.json';\n"
                "  fetch(api, {credentials: 'include'}).then(function (r) { return r.json(); })\n"
                "  .then(function (d) {\n"
                "    document.getElementById('out').textContent = d.message + ' ' + d.link;\n"
                "  });\n"
                "});\n"
            ).encode()
            return web.Response(body=gzip.compress(script), content_type="application/javascript",
                                headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
        if path == "/site.css":
            css = (f"@import url({cdn}/extra.css);\nbody {{ font-family: serif; }}\n"
                   f".logo {{ background-image: url(\"//cdn.vendor.test:{port}/logo.png\"); }}\n").encode()
            return web.Response(body=brotli.compress(css), content_type="text/css",
                                headers={"Content-Encoding": "br"})
        cors = {"Access-Control-Allow-Origin": "*"}  # a CDN's usual answer to CORS-mode loads
        if path == "/cors.js":
            script = ("document.addEventListener('DOMContentLoaded', function () {\n"
                      "  document.getElementById('cors').textContent = 'crossorigin script ran';\n});\n")
            return web.Response(text=script, content_type="application/javascript", headers=cors)
        if path == "/font.woff2":
            return web.Response(body=b"wOF2" + bytes(60), content_type="font/woff2", headers=cors)
        if path == "/extra.css":
            return web.Response(text="h1 { color: #333; }\n", content_type="text/css")
        if path == "/logo.png":
            return web.Response(body=PNG, content_type="image/png")
        if path == "/fulltext.pdf":
            return web.FileResponse(pdf, headers={"Content-Type": "application/pdf"})
        return web.Response(status=404, text="not found")

    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


def write_pdf(path: Path, size: int = 300_000) -> Path:
    """A stand-in PDF whose bytes include vendor host names, which must pass through untouched."""
    head = b"%PDF-1.4\n% http://www.vendor.test/ must not be rewritten inside a PDF\n"
    path.write_bytes(head + bytes(range(256)) * ((size - len(head)) // 256) + b"\n%%EOF\n")
    return path
