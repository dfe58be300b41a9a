"""The console's pages: the patron pages' look (the same stylesheet) without the patron footer.

Every page is plain HTML with no script, autoescaped, and sent with a Content-Security-Policy
that allows only the staff listener's own stylesheet and forms; ``no-store`` keeps staff pages
out of a shared computer's cache.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

TEMPLATES = Path(__file__).parent / "templates"
PATRON_STYLE = Path(__file__).parent.parent / "web" / "static" / "style.css"
STAFF_STYLE = TEMPLATES / "staff.css"

# SECURITY: no script at all, styles and forms of this listener only, never framed.
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


def secure(response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"


class StaffPages:
    def __init__(self, library_name: str) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self._globals = {"library_name": library_name}

    def render(self, template: str, status: int = 200, **context: Any) -> web.Response:
        staff = context.setdefault("staff", None)
        # The sign-out form in the header needs the session's token on every page.
        context.setdefault("csrf", getattr(staff, "csrf", ""))
        body = self._env.get_template(template).render(**self._globals, **context)
        response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
        secure(response)
        return response

    def message(self, title: str, text: str, *, status: int = 200, **context: Any) -> web.Response:
        return self.render("message.html", status=status, title=title, text=text, **context)


@functools.cache
def _stylesheet_text() -> str:
    # Files of the package: read once, not on the event loop at every page of the console.
    return PATRON_STYLE.read_text(encoding="utf-8") + "\n" + STAFF_STYLE.read_text(encoding="utf-8")


async def stylesheet(request: web.Request) -> web.StreamResponse:
    """The patron stylesheet followed by the console's own few rules (tables, forms, bars)."""
    text = await asyncio.to_thread(_stylesheet_text)
    response = web.Response(text=text, content_type="text/css", charset="utf-8")
    secure(response)
    response.headers["Cache-Control"] = "no-cache"
    return response
