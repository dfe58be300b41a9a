"""Rendering the proxy's own pages: Jinja2 with autoescaping, and the headers every page gets.

Every page is plain HTML with no script, escapes everything it shows, and is sent with a strict
Content-Security-Policy (``frame-ancestors 'none'`` against clickjacking), ``nosniff`` and
``no-store`` so a shared library computer's cache keeps nothing of a patron's visit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from proxy.web.texts import LEAVING_CONTINUE, MESSAGES

TEMPLATES = Path(__file__).parent / "templates"


def redirect(location: str, status: int = 303) -> web.Response:
    """A redirect as a plain response (aiohttp deprecates returning HTTPException objects)."""
    return web.Response(status=status, headers={"Location": location, "Cache-Control": "no-store"})


class Pages:
    def __init__(self, library_name: str, proxy_origin: str, proxy_host: str, scheme: str) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self._globals = {"library_name": library_name, "proxy_origin": proxy_origin}
        # Sign-in forms redirect on to proxied hosts; browsers apply form-action to that redirect.
        self.csp = (
            f"default-src 'none'; style-src {proxy_origin}; img-src 'self'; "
            f"form-action 'self' {scheme}://*.{proxy_host}; "
            "frame-ancestors 'none'; base-uri 'none'"
        )

    def render(self, template: str, status: int = 200, **context: Any) -> web.Response:
        body = self._env.get_template(template).render(**self._globals, **context)
        response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
        self.secure(response)
        return response

    def to_databases(self, label: str = "Back to the databases") -> list[tuple[str, str]]:
        """The link most messages end with: back to the list of databases."""
        return [(f"{self._globals['proxy_origin']}/databases", label)]

    def message(self, reason: str, *, status: int | None = None, links: list[tuple[str, str]] | None = None,
                **fields: object) -> web.Response:
        """The page that explains ``reason`` (a code of ``texts.MESSAGES``) in plain words.

        ``fields`` fill the text's ``{name}`` places; ``links`` come before the "back to the
        databases" link the message ends with, if it has one."""
        words = MESSAGES[reason]
        all_links = list(links or [])
        if words.back is not None:
            all_links += self.to_databases(words.back)
        response = self.render(
            "message.html", status=status or words.status, title=words.title.format(**fields),
            text=words.text.format(**fields), links=all_links,
        )
        response.headers["X-Libproxy-Reason"] = words.code or reason
        return response

    def leaving(self, target: str | None) -> web.Response:
        """Instead of a redirect to a site the proxy does not serve: a page saying so, with a
        link to go on (``target`` is already checked to be a plain http(s) URL, or None)."""
        return self.message("leaving", links=[(target, LEAVING_CONTINUE)] if target else [])

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
