"""The demo: a small vendor site on loopback and the proxy configured for it.

``libproxy demo`` is the "embedded defaults" run: a local patrons file with one demo card, the
demo vendor, in-memory sessions. The demo vendor shows what it receives, so a librarian can see
with their own eyes that no name, card number or address reaches a vendor.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path

import jwt
from aiohttp import web

from proxy import config as config_mod
from proxy.config import Config
from proxy.patrons.hashing import hash_pin
from proxy.patrons.local import add_patron

DEMO_CARD = "29000000000001"
DEMO_PIN = "2468"

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>
<style>body{{font-family:Georgia,serif;max-width:42rem;margin:2rem auto;padding:0 1rem}}
th{{text-align:left;vertical-align:top;padding-right:1rem;white-space:nowrap}} td{{overflow-wrap:anywhere}}
pre{{white-space:pre-wrap;overflow-wrap:anywhere}}
</style></head>
<body><h1>{title}</h1>{body}
<hr><p><a href="http://{host}/">Encyclopedia home</a> · <a href="/whoami">What this site received</a></p>
</body></html>"""


# What each claim of the membership assertion means, for the "What this site received" page.
_CLAIMS = {
    "iss": "who issued it: the library's proxy",
    "aud": "which database it is for (this one)",
    "iat": "when it was issued",
    "exp": "when it stops being valid (minutes later)",
    "jti": "a random number for this one statement, the same for every patron while it lasts",
    "eduPersonScopedAffiliation": "the reader is a member of this library",
    "eduPersonEntitlement": "the reader may use the database under the library's licence terms",
}
# Headers that would carry a reader's address if a proxy passed it on.
_ADDRESS_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip", "true-client-ip", "client-ip", "via")


def shown_as_received(value: str) -> str:
    """``value`` escaped for HTML with every dot written as ``&#46;``.

    The proxy rewrites the vendor's host names in the pages it relays (byte for byte), so a page
    that printed ``127.0.0.1:8081`` would reach the browser showing the proxied name instead of
    what the vendor really received. Browsers show ``&#46;`` as a dot; the rewriter, which looks
    for the host name's bytes, does not see it."""
    return html.escape(value).replace(".", "&#46;")


def received_page(request: web.Request) -> str:
    """The body of "What this site received": every header exactly as it arrived, the
    membership assertion decoded claim by claim, and what did not arrive, said plainly."""
    show = shown_as_received
    rows = "".join(f"<tr><th>{show(k)}</th><td><code>{show(v)}</code></td></tr>" for k, v in request.headers.items())
    token = request.headers.get("X-Library-Membership", "")
    try:
        claims = jwt.decode(token, options={"verify_signature": False}) if token else None
    except jwt.DecodeError:
        claims = {}  # not a JWT (sent by hand to the demo vendor): shown as it came, claimless
    if token and claims is not None:
        claim_rows = "".join(
            f"<tr><th>{show(name)}</th><td><code>{show(_claim_value(name, value))}</code>"
            f"<br>{show(_CLAIMS.get(name, 'not a claim the library sends'))}</td></tr>"
            for name, value in claims.items()
        )
        parts = token.split(".")
        assertion = (
            "<p>The header <code>X-Library-Membership</code> carried a signed statement (a JWT) in three "
            "parts: a header, the claims, and the library's signature.</p>"
            + "".join(f"<pre>{show(part)}{'.' if i < len(parts) - 1 else ''}</pre>" for i, part in enumerate(parts))
            + f"<h3>What it says</h3><table>{claim_rows}</table>"
        )
    else:
        claims = {}
        assertion = "<p>No membership assertion arrived with this request.</p>"
    return (
        f"<p>The address this site saw the visit come from: <code>{show(request.remote or '')}</code> "
        "(the library proxy's own address).</p>"
        f"<h2>What is not here</h2><p>{show(absent(request, claims))}</p>"
        f"<h2>Headers, exactly as they arrived</h2><table>{rows}</table>"
        f"<h2>Membership assertion</h2>{assertion}"
    )


def _claim_value(name: str, value: object) -> str:
    if name in ("iat", "exp") and isinstance(value, int | float):
        return f"{value} ({datetime.fromtimestamp(value, UTC):%Y-%m-%d %H:%M:%S} UTC)"
    return value if isinstance(value, str) else json.dumps(value)


def absent(request: web.Request, claims: dict[str, object]) -> str:
    """One plain paragraph on what did not reach this site, each sentence checked against the
    request (a sentence is only said when it is true)."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    everything = " ".join([request.raw_path, *headers.values(), json.dumps(claims)])
    said = []
    if not any(h in headers for h in _ADDRESS_HEADERS):
        said.append("No internet address of yours: no header names it, and the visit came from the proxy.")
    if DEMO_CARD not in everything and "sub" not in claims:
        said.append("No card number, and nothing that stands for you: the statement is the same for every "
                    "reader of the library.")
    if "from" not in headers and not {"name", "email", "given_name", "family_name"} & set(claims):
        said.append("No name and no e-mail address.")
    cookies = [c.split("=", 1)[0].strip() for c in headers.get("cookie", "").split(";") if c.strip()]
    if all(name.startswith("demo_") for name in cookies):
        own = (f"Only this site's own cookie ({', '.join(cookies)}), which the library's proxy kept for you on "
               "its server." if cookies else "No cookie at all.")
        said.append(f"No cookie of yours: none of your browser's cookies arrived. {own}")
    return " ".join(said)


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
        return page(request, "What this site received", received_page(request))

    app.router.add_get("/", home)
    app.router.add_get("/article/{name}", article)
    app.router.add_get("/search", search)
    app.router.add_get("/report.pdf", report)
    app.router.add_get("/whoami", whoami)
    return app


# The demo's staff console accounts (name: (role, password)); a real proxy's are made with
# `libproxy staff add`. These exist only in the demo's own state directory.
DEMO_STAFF = {"it-demo": ("it", "try-the-console"), "director-demo": ("director", "see-the-figures")}


def _demo_staff(state_dir: Path) -> None:
    from proxy.staff.accounts import add_account

    accounts = state_dir / "staff-accounts.toml"
    if not accounts.exists():
        for name, (role, password) in DEMO_STAFF.items():
            add_account(accounts, name, role, hash_pin(password))


def demo_config(state_dir: Path, proxy_port: int, vendor_port: int, language: str = "en",
                staff_port: int = 9080) -> Config:
    """The embedded defaults, with the demo vendor and a patrons file holding the demo card;
    ``language`` is offered first (the pages' default when the browser asks for none)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    patrons = state_dir / "demo-patrons.toml"
    if not patrons.exists():
        add_patron(patrons, DEMO_CARD, hash_pin(DEMO_PIN), ["wolcott", "bibliomation"], "wolcott")
    _demo_staff(state_dir)
    data = {
        "proxy": {"listen": f"127.0.0.1:{proxy_port}", "host": f"proxy.localhost:{proxy_port}",
                  "state_dir": str(state_dir)},
        "library": {
            "id": "wolcott.lib.ct.us", "name": "Wolcott Public Library (demo)",
            "languages": [language, *(code for code in ("en", "es") if code != language)],
            "contact": "ask at the circulation desk of the Wolcott Public Library",
            "es": {"name": "Biblioteca Pública de Wolcott (demostración)",
                   "contact": "pregunte en el mostrador de préstamos de la Biblioteca Pública de Wolcott"},
        },
        # Proper names, the same in every language ("bibliomation" reads "Bibliomation" unnamed).
        "groups": {"wolcott": "Wolcott Public Library"},
        "patrons": {"source": "local", "file": str(patrons)},
        "admin": {"listen": f"127.0.0.1:{staff_port}"},
        "sessions": {"store": "memory"},
        "vendor": [{
            "id": "demo", "title": "Demo Encyclopedia",
            # A vendor's description is the library's text in one language: the demo's language.
            "description": ("Un pequeño sitio en esta computadora que hace de proveedor." if language == "es"
                            else "A small site on this computer standing in for a vendor."),
            "start": f"http://127.0.0.1:{vendor_port}/",
            "hosts": [f"http://127.0.0.1:{vendor_port}"],
            "groups": ["wolcott", "bibliomation"],
            "counter": {"search": ["/search*"], "download": ["re:\\.pdf$"]},
        }],
    }
    return config_mod.from_dict(data, base=state_dir)


def what_to_try(config: Config, language: str = "en") -> str:
    """The demo's printed walk-through: where to sign in and what to look at, in order."""
    from proxy.vendors import VendorMap, parse_absolute_url

    origin = config.proxy.public_origin
    vendor = config.vendors[0]
    start = parse_absolute_url(vendor.start)
    proxied = VendorMap(config.vendors, config.proxy.host, config.proxy.scheme).proxied_origin(start.origin) \
        if start is not None else None
    # The language link sets the patron's choice, so the pages are in that language whatever
    # the browser asks for.
    open_url = f"{origin}/language/{language}?next=/databases" if language != "en" else f"{origin}/databases"
    return (
        f"  Open:     {open_url}\n"
        f"  Card:     {DEMO_CARD}\n"
        f"  PIN:      {DEMO_PIN}\n\n"
        "What to try:\n"
        f"  1. Sign in: open {vendor.title} from the list and type the card and PIN above\n"
        "     (mistype the PIN once: the card number stays filled in).\n"
        f"  2. The vendor's page \"What this site received\": {proxied}/whoami\n"
        "     (every header it got, the library's signed statement decoded, and what is absent).\n"
        f"  3. Your session page, everything the proxy holds about you: {origin}/session\n"
        f"  4. The privacy page: {origin}/privacy\n"
        f"  5. Sign out: {origin}/logout\n"
        f"  The language link at the top of every page switches between English and Spanish.\n"
    )
