"""The demo: a small vendor site on loopback and the proxy configured for it.

``libproxy demo`` is the "embedded defaults" run: a local patrons file with one demo card, the
demo vendor, in-memory sessions. The demo vendor shows what it receives, so a librarian can see
with their own eyes that no name, card number or address reaches a vendor.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import jwt
from aiohttp import web

from proxy import config as config_mod
from proxy.config import Config
from proxy.patrons.hashing import hash_pin
from proxy.patrons.local import add_patron

DEMO_CARD = "29000000000001"
DEMO_PIN = "2468"

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:Georgia,serif;max-width:42rem;margin:2rem auto;padding:0 1rem}}</style></head>
<body><h1>{title}</h1>{body}
<hr><p><a href="http://{host}/">Encyclopedia home</a> · <a href="/whoami">What this site received</a></p>
</body></html>"""


def demo_vendor_app() -> web.Application:
    """A tiny encyclopedia: articles, a search form, a PDF, and a page showing what it received."""
    app = web.Application()

    def page(request: web.Request, title: str, body: str) -> web.Response:
        return web.Response(text=_PAGE.format(title=html.escape(title), body=body, host=request.host),
                            content_type="text/html")

    async def home(request: web.Request) -> web.Response:
        response = page(request, "Demo Encyclopedia", (
            "<p>Welcome. Only library members can read this.</p>"
            f'<ul><li><a href="http://{request.host}/article/owls">Owls</a> (an absolute link)</li>'
            '<li><a href="/article/libraries">Libraries</a> (a relative link)</li>'
            '<li><a href="/report.pdf">A PDF report</a></li></ul>'
            '<form action="/search" method="get"><label>Search <input name="q"></label> '
            "<button>Go</button></form>"
        ))
        response.set_cookie("demo_visitor", "seen", httponly=True)
        return response

    async def article(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return page(request, name.title(), f"<p>An article about {html.escape(name)}.</p>")

    async def search(request: web.Request) -> web.Response:
        q = request.query.get("q", "")
        return page(request, "Search results", f"<p>No results for <em>{html.escape(q)}</em> in the demo.</p>")

    async def report(request: web.Request) -> web.Response:
        body = b"%PDF-1.4\n% demo report\n" + b"0" * 4096 + b"\n%%EOF\n"
        return web.Response(body=body, content_type="application/pdf")

    async def whoami(request: web.Request) -> web.Response:
        rows = "".join(
            f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(v)}</code></td></tr>"
            for k, v in request.headers.items()
        )
        token = request.headers.get("X-Library-Membership", "")
        claims = "(no assertion)"
        if token:
            claims = json.dumps(jwt.decode(token, options={"verify_signature": False}), indent=2)
        cookies = html.escape(request.headers.get("Cookie", "(none)"))
        return page(request, "What this site received", (
            f"<p>Your address as this site sees it: <code>{html.escape(request.remote or '')}</code> "
            "(the proxy's, not yours).</p>"
            f"<h2>Headers</h2><table>{rows}</table><h2>Membership assertion</h2>"
            f"<pre>{html.escape(claims)}</pre><h2>Cookies</h2><p><code>{cookies}</code></p>"
        ))

    app.router.add_get("/", home)
    app.router.add_get("/article/{name}", article)
    app.router.add_get("/search", search)
    app.router.add_get("/report.pdf", report)
    app.router.add_get("/whoami", whoami)
    return app


def demo_config(state_dir: Path, proxy_port: int, vendor_port: int) -> Config:
    """The embedded defaults, with the demo vendor and a patrons file holding the demo card."""
    state_dir.mkdir(parents=True, exist_ok=True)
    patrons = state_dir / "demo-patrons.toml"
    if not patrons.exists():
        add_patron(patrons, DEMO_CARD, hash_pin(DEMO_PIN), ["wolcott", "bibliomation"], "wolcott")
    data = {
        "proxy": {"listen": f"127.0.0.1:{proxy_port}", "host": f"proxy.localhost:{proxy_port}",
                  "state_dir": str(state_dir)},
        "library": {"id": "wolcott.lib.ct.us", "name": "Wolcott Public Library (demo)"},
        "patrons": {"source": "local", "file": str(patrons)},
        "sessions": {"store": "memory"},
        "vendor": [{
            "id": "demo", "title": "Demo Encyclopedia",
            "description": "A small site on this computer standing in for a vendor.",
            "start": f"http://127.0.0.1:{vendor_port}/",
            "hosts": [f"http://127.0.0.1:{vendor_port}"],
            "groups": ["wolcott", "bibliomation"],
            "counter": {"search": ["/search*"], "download": ["re:\\.pdf$"]},
        }],
    }
    return config_mod.from_dict(data, base=state_dir)
