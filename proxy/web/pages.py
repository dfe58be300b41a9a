"""Rendering the proxy's own pages: Jinja2 with autoescaping, and the headers every page gets.

Every page is plain HTML with no script, escapes everything it shows, and is sent with a strict
Content-Security-Policy (``frame-ancestors 'none'`` against clickjacking), ``nosniff`` and
``no-store`` so a shared library computer's cache keeps nothing of a patron's visit.

Pages speak the request's language (``i18n.py``): templates use Jinja2's i18n extension
(``{% trans %}``, ``_()``), messages are translated from ``texts.MESSAGES``. A library's own
templates (``[library] templates``) are looked up first, in the same environment: the same
autoescaping, the same translations, the same headers.
"""

from __future__ import annotations

import functools
import re
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from proxy.web import i18n
from proxy.web.texts import LEAVING_CONTINUE, MESSAGES

if TYPE_CHECKING:
    from proxy.config import Config, LibraryConfig

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
# Where the proxy serves the library's own look (routes.py).
THEME_PATH = "/library/theme.css"
LOGO_PATH = "/library/logo"
LANGUAGE_PATH = "/language/"

# A path of the proxy's own host that a language link may return to: a plain path and query
# of printable characters, never "//host" or a backslash (which browsers read as a host).
# SECURITY: \Z, not $: "$" also matches before a final newline, and "/x%0A" decoded would
# put a line break into the Location header (aiohttp then drops the connection).
_RETURN_PATH = re.compile(r"^/(?![/\\])[\x21-\x7e]{0,2000}\Z")
# The request being served, for its pages' language links (set by Pages.begin).
_REQUEST: ContextVar[web.Request | None] = ContextVar("libproxy_request", default=None)


def redirect(location: str, status: int = 303) -> web.Response:
    """A redirect as a plain response (aiohttp deprecates returning HTTPException objects)."""
    return web.Response(status=status, headers={"Location": location, "Cache-Control": "no-store"})


def safe_return_path(value: str | None) -> str:
    """``value`` if it is a path of the proxy's own host, else the database list."""
    # SECURITY: no open redirect through the language link: only local paths come back.
    if value and _RETURN_PATH.match(value) and "\\" not in value:
        return value
    return "/databases"


class Pages:
    def __init__(self, library_name: str, proxy_origin: str, proxy_host: str, scheme: str, *,
                 library: LibraryConfig | None = None) -> None:
        self._library = library
        loaders: list[jinja2.BaseLoader] = []
        if library is not None and library.templates is not None:
            # The library's overrides first; "builtin/<name>" reaches the proxy's own template
            # even where an override of the same name exists (to extend it).
            loaders.append(jinja2.FileSystemLoader(library.templates))
        loaders += [jinja2.FileSystemLoader(TEMPLATES),
                    jinja2.PrefixLoader({"builtin": jinja2.FileSystemLoader(TEMPLATES)})]
        self._env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            extensions=["jinja2.ext.i18n"],
        )
        # newstyle: translated strings are escaped like any other value and take %(name)s fields.
        self._env.install_gettext_callables(  # type: ignore[attr-defined]  # added by the i18n extension
            i18n.gettext, i18n.ngettext, newstyle=True, pgettext=i18n.pgettext)
        self._library_name = library_name
        self._proxy_origin = proxy_origin
        self._proxy_host = proxy_host
        self._secure_cookie = scheme == "https"
        self.languages: tuple[str, ...] = library.languages if library is not None else tuple(i18n.SUPPORTED)
        # Sign-in forms redirect on to proxied hosts; browsers apply form-action to that redirect.
        # Pages shown on proxied hosts load the stylesheet, logo and icon from the proxy's host.
        self.csp = (
            f"default-src 'none'; style-src {proxy_origin}; img-src 'self' {proxy_origin}; "
            f"form-action 'self' {scheme}://*.{proxy_host}; "
            "frame-ancestors 'none'; base-uri 'none'"
        )

    @classmethod
    def from_config(cls, config: Config) -> Pages:
        return cls(config.library.name, config.proxy.public_origin, config.proxy.host, config.proxy.scheme,
                   library=config.library)

    # -- the request's language -------------------------------------------------------------

    def begin(self, request: web.Request) -> None:
        """Start a request: its pages will speak the patron's chosen language (the cookie), else
        the browser's (Accept-Language), else the library's first; chosen only if a page or a
        text is needed (most requests are forwarded to a vendor and need neither)."""
        i18n.choose_later(functools.partial(self._negotiate, request))
        _REQUEST.set(request)

    def _negotiate(self, request: web.Request) -> str:
        return i18n.negotiate(request.cookies.get(i18n.COOKIE), request.headers.get("Accept-Language"),
                              self.languages)

    def _here(self) -> str:
        """Where a language link on this page returns: the same page (its path, without the
        query), when it is a page of the proxy's own host that a GET shows again; the database
        list otherwise. Message pages always return to the list (message())."""
        request = _REQUEST.get()
        if request is None or request.method != "GET" or request.headers.get("Host", "").lower() != self._proxy_host:
            return "/databases"
        return safe_return_path(request.raw_path.partition("?")[0])

    def language_response(self, request: web.Request, code: str) -> web.Response:
        """The language link: remember the choice and go back to the page it was made on."""
        back = safe_return_path(request.query.get("next"))
        response = redirect(f"{self._proxy_origin}{back}")
        if code in self.languages:
            # The cookie holds the language code and nothing else; it is set for the proxy's
            # domain so that pages shown on proxied hosts speak it too (the proxy never
            # forwards a libproxy* cookie to a vendor, see forward/headers.py).
            response.set_cookie(i18n.COOKIE, code, domain=self._proxy_host.split(":")[0], path="/",
                                max_age=i18n.COOKIE_MAX_AGE, samesite="Lax", httponly=True,
                                secure=self._secure_cookie)
        self.secure(response)
        return response

    # -- pages -------------------------------------------------------------------------------

    def _globals(self, here: str | None) -> dict[str, Any]:
        language = i18n.current()
        library = self._library
        back = here or self._here()
        return {
            "lang": language,
            "library_name": library.text("name", language) if library else self._library_name,
            "library_contact": library.text("contact", language) if library else "",
            "proxy_origin": self._proxy_origin,
            "other_languages": [
                {"code": code, "name": i18n.SUPPORTED[code],
                 "href": f"{self._proxy_origin}{LANGUAGE_PATH}{code}?next={quote(back, safe='/')}"}
                for code in self.languages if code != language
            ],
            "theme_url": f"{self._proxy_origin}{THEME_PATH}" if library and library.accent else None,
            "logo_url": f"{self._proxy_origin}{LOGO_PATH}" if library and library.logo else None,
        }

    def render(self, template: str, status: int = 200, *, here: str | None = None, **context: Any) -> web.Response:
        """``template`` in the request's language; ``here`` is where its language links return
        (by default the page itself, when it is a GET of the proxy's host)."""
        body = self._env.get_template(template).render(**self._globals(here), **context)
        response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
        response.headers["Content-Language"] = i18n.current()
        self.secure(response)
        return response

    def to_databases(self, label: str = "Back to the databases") -> list[tuple[str, str]]:
        """The link most messages end with: back to the list of databases (``label`` in English,
        translated here)."""
        return [(f"{self._proxy_origin}/databases", i18n.gettext(label))]

    def message(self, reason: str, *, status: int | None = None, links: list[tuple[str, str]] | None = None,
                **fields: object) -> web.Response:
        """The page that explains ``reason`` (a code of ``texts.MESSAGES``) in plain words, in the
        request's language.

        ``fields`` fill the text's ``{name}`` places (a ``count`` chooses the plural form);
        ``links`` come before the "back to the databases" link the message ends with, if it has
        one (their labels are translated here)."""
        words = MESSAGES[reason]
        if words.plural is not None:
            count = fields.get("count", 1)
            text = i18n.ngettext(words.text, words.plural, count if isinstance(count, int) else 1)
        else:
            text = i18n.gettext(words.text)
        all_links = [(url, i18n.gettext(label)) for url, label in links or []]
        if words.back is not None:
            all_links += self.to_databases(words.back)
        # SECURITY: a message's language link returns to the database list, never to the
        # address asked for: a refused link (an unknown vendor URL) is not echoed into the page.
        response = self.render(
            "message.html", status=status or words.status, here="/databases",
            title=i18n.gettext(words.title).format(**fields), text=text.format(**fields), links=all_links,
        )
        response.headers["X-Libproxy-Reason"] = words.code or reason
        return response

    def leaving(self, target: str | None) -> web.Response:
        """Instead of a redirect to a site the proxy does not serve: a page saying so, with a
        link to go on (``target`` is already checked to be a plain http(s) URL, or None)."""
        return self.message("leaving", links=[(target, LEAVING_CONTINUE)] if target else [])

    # -- the library's look --------------------------------------------------------------------

    def theme_css(self) -> web.Response:
        """The accent colour as a stylesheet (the pages' CSP allows no inline style)."""
        accent = self._library.accent if self._library else None
        css = f":root {{ --accent: {accent}; }}\n" if accent else ""
        response = web.Response(text=css, content_type="text/css", charset="utf-8")
        response.headers["Cache-Control"] = "public, max-age=300"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def logo_response(self) -> web.StreamResponse:
        from proxy.config import LOGO_TYPES

        logo = self._library.logo if self._library else None
        if logo is None:
            raise web.HTTPNotFound()
        # FileResponse reads the file off the event loop.
        response = web.FileResponse(logo, headers={"Content-Type": LOGO_TYPES[logo.suffix.lower()]})
        response.headers["Cache-Control"] = "public, max-age=300"
        response.headers["X-Content-Type-Options"] = "nosniff"
        # SECURITY: an SVG logo opened on its own must not run script in the proxy's origin.
        response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
        return response

    def secure(self, response: web.StreamResponse) -> None:
        response.headers["Content-Security-Policy"] = self.csp
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on our own
        # forms, and the login form's cross-site check needs the real origin.
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"


def sign_in_link(public_origin: str, target: str) -> str:
    """The proxy's starting-point link for a vendor URL: ``/login?url=<target>``."""
    return f"{public_origin}/login?url={quote(target, safe='')}"
