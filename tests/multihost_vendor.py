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
from typing import Any

import brotli
from aiohttp import web

HOSTS = ("www.vendor.test", "cdn.vendor.test", "api.vendor.test", "login.vendor.test")


def vendor_config(tmp: Path, vendor_port: int, proxy_port: int, hosts: tuple[str, ...] = HOSTS) -> Any:
    """A proxy on ``proxy.localhost:proxy_port`` in front of this vendor's ``hosts`` (all on
    ``vendor_port`` of loopback, as split DNS would send them), for the browser tests."""
    from tests.support import base_config

    return base_config(
        tmp,
        [{"id": "vendor", "title": "Vendor", "start": f"http://www.vendor.test:{vendor_port}/",
          "hosts": [f"http://{h}:{vendor_port}" for h in hosts], "groups": ["wolcott"]}],
        proxy={"host": f"proxy.localhost:{proxy_port}", "listen": f"127.0.0.1:{proxy_port}"},
        upstream={"hosts": dict.fromkeys(hosts, "127.0.0.1")},
    )
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


# -- the rewriting corpus, served as a vendor's site ---------------------------------------------

# Where the corpus bundles live on the vendor's cdn host, and how each is loaded by every page:
# (path, corpus file, the tag's attributes). Plain tags are loaded with cookies; ``crossorigin``
# tags, module scripts, and the fonts that stylesheets name are loaded in CORS mode without them.
CORPUS_BUNDLES = (
    ("/bundles/bootstrap.min.css", "bootstrap.min.css", 'rel="stylesheet"'),
    ("/bundles/pdfjs-pdf_viewer.css", "pdfjs-pdf_viewer.css", 'rel="stylesheet"'),
    ("/bundles/katex.min.css", "katex.min.css", 'rel="stylesheet" crossorigin="anonymous"'),
    ("/bundles/jquery.min.js", "jquery.min.js", ""),
    ("/bundles/bootstrap.bundle.min.js", "bootstrap.bundle.min.js", 'crossorigin="anonymous"'),
    ("/bundles/vue.global.prod.js", "vue.global.prod.js", 'crossorigin="anonymous"'),
    ("/bundles/katex.min.js", "katex.min.js", "defer"),
    ("/bundles/lunr.min.js", "lunr.min.js", 'defer crossorigin="anonymous"'),
    ("/bundles/instantsearch.production.min.js", "instantsearch.production.min.js", "defer"),
    # MathJax's latest.js loads startup.js from its own directory, by script, at run time.
    ("/npm/mathjax@3/es5/latest.js", "mathjax-latest.js", 'async id="MathJax-script"'),
    ("/bundles/pdfjs-pdf.min.mjs", "pdfjs-pdf.min.mjs", 'type="module"'),
    ("/bundles/pdfjs-pdf_viewer.mjs", "pdfjs-pdf_viewer.mjs", 'type="module"'),
)
CORPUS_FILES_ON_CDN = {path: name for path, name, _ in CORPUS_BUNDLES} | {
    "/npm/mathjax@3/es5/startup.js": "mathjax-startup.js",
}
CORPUS_API_JSON = "/search/glossary.json"  # python-glossary.json, from the api host (CORS)
CORPUS_SEEN = web.AppKey("corpus_seen", list[tuple[str, str]])  # (host, path and query) of every request
# What the probe script leaves in ``window.__corpusProbe`` once everything it asked for is in:
# which bundles ran, what the api host answered, and whether the fonts loaded.
_PROBE = """<script>
window.addEventListener('load', function () {
  var api = fetch('%(api)s%(json)s', {credentials: 'include'})
    .then(function (r) { return r.ok ? r.json() : {status: r.status}; })
    .then(function (d) { return Object.keys(d).length; }, function (e) { return String(e); });
  var xml = fetch('%(www)s/pages/python-opensearch.xml')
    .then(function (r) { return r.text(); })
    .then(function (t) { return (t.match(/template="([^"]*)"/) || [])[1] || t.slice(0, 80); });
  var fonts = Promise.all(['16px KaTeX_Main', 'italic 16px KaTeX_Math'].map(function (f) {
    return document.fonts.load(f).then(function (l) { return l.length; }, function () { return -1; });
  }));
  var modules = new Promise(function (resolve) {
    var tries = 0;
    (function check() {
      if (globalThis.pdfjsLib || ++tries > 100) { resolve(!!globalThis.pdfjsLib); } else { setTimeout(check, 50); }
    })();
  });
  Promise.all([api, xml, fonts, modules]).then(function (r) {
    window.__corpusProbe = {
      glossaryEntries: r[0], opensearchTemplate: r[1], fontFaces: r[2], pdfjs: r[3],
      jquery: !!window.jQuery && jQuery.fn.jquery, vue: !!window.Vue && Vue.version,
      katex: !!window.katex && katex.version, lunr: !!window.lunr && lunr.version,
      bootstrap: !!window.bootstrap && bootstrap.Tooltip.VERSION,
      instantsearch: typeof window.instantsearch
    };
  });
});
</script>"""
_STAND_INS = {  # the vendor's own images, styles and scripts that the corpus pages name
    ".css": ("text/css", b"/* stand-in */\n"),
    ".js": ("text/javascript", b"/* stand-in */\n"),
    ".png": ("image/png", PNG),
    ".gif": ("image/png", PNG),
    ".ico": ("image/png", PNG),
    ".svg": ("image/svg+xml", b"<svg xmlns='http://www.w3.org/2000/svg' width='1' height='1'/>"),
}
_FONT_TYPES = {".woff2": "font/woff2", ".woff": "font/woff", ".ttf": "font/ttf"}


def a_real_font() -> bytes | None:
    """A TrueType or OpenType font of this machine (Chromium's fontconfig brings one), served
    for every web font of the corpus: browsers sniff the format, so it loads under any of
    KaTeX's names and formats, and a test can check that the bytes arrived whole (the browser
    decoded them). None when the machine has none: a stand-in that no browser can decode."""
    for pattern in ("**/*.ttf", "**/*.otf"):
        for path in sorted(Path("/usr/share/fonts").glob(pattern)):
            return path.read_bytes()
    return None


def corpus_app(port: int, files: dict[str, bytes], third_party: str) -> web.Application:
    """The vendorized corpus (``files``, from ``tests/corpus/vendorize.vendor_files(port)``) as
    the vendor's site: each HTML page at ``www.vendor.test/pages/NAME``, loading every JS and CSS
    bundle of the corpus from the cdn host, a JSON file from the api host, KaTeX's web fonts
    from the cdn host, and a script and an image from ``third_party`` (an origin that is no host
    of the vendor: the proxy's CSP must stop both). The images, styles and scripts the pages name
    by relative URL are answered with small stand-ins of their type; anything else is a 404.

    The bundles and the page additions are written with the vendor's own URLs, as a vendor
    would write them; the corpus bytes themselves are served as vendorized, unchanged.
    """
    www, cdn, api = (f"http://{h}:{port}" for h in HOSTS[:3])
    font = a_real_font()
    head = "\n".join(
        f'<link {attrs} href="{cdn}{path}">' if name.endswith(".css")
        else f'<script {attrs} src="{cdn}{path}"></script>'
        for path, name, attrs in CORPUS_BUNDLES
    )
    head += (f'\n<img src="{third_party}/pixel.gif" alt="" width="1" height="1">'
             f'\n<script src="{third_party}/analytics.js"></script>\n')
    head += _PROBE % {"api": api, "www": www, "json": CORPUS_API_JSON}
    addition = head.encode()
    seen: list[tuple[str, str]] = []
    app = web.Application()
    app[CORPUS_SEEN] = seen
    cors = {"Access-Control-Allow-Origin": "*"}  # a CDN's usual answer to CORS-mode loads

    def stand_in(path: str, headers: dict[str, str] | None = None) -> web.Response:
        for ext, ctype in _FONT_TYPES.items():
            if path.endswith(ext):
                return web.Response(body=font or b"wOF2" + bytes(60), content_type=ctype, headers=headers)
        for ext, (ctype, body) in _STAND_INS.items():
            if path.endswith(ext):
                return web.Response(body=body, content_type=ctype, headers=headers)
        return web.Response(status=404, text="not found")

    async def dispatch(request: web.Request) -> web.StreamResponse:
        host = request.headers.get("Host", "").split(":")[0]
        path = request.path
        seen.append((host, request.path_qs))
        if host == "www.vendor.test" and path.startswith("/pages/") and path[7:] in files:
            name = path[7:]
            body = files[name]
            if name.endswith(".html"):
                at = body.lower().find(b"</head>")
                body = body[:at] + addition + body[at:]
                return web.Response(body=body, content_type="text/html", charset="utf-8")
            ctype = "application/opensearchdescription+xml" if name.endswith(".xml") else "application/json"
            return web.Response(body=body, content_type=ctype)
        if host == "www.vendor.test":
            return stand_in(path)
        if host == "cdn.vendor.test" and path in CORPUS_FILES_ON_CDN:
            name = CORPUS_FILES_ON_CDN[path]
            ctype = "text/css" if name.endswith(".css") else "text/javascript"
            return web.Response(body=files[name], content_type=ctype, charset="utf-8", headers=cors)
        if host == "cdn.vendor.test":
            return stand_in(path, cors)
        if host == "api.vendor.test" and path == CORPUS_API_JSON:
            return web.Response(body=files["python-glossary.json"], content_type="application/json",
                                headers={"Access-Control-Allow-Origin": www,
                                         "Access-Control-Allow-Credentials": "true", "Vary": "Origin"})
        return web.Response(status=404, text="not found")

    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app
