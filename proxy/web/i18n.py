"""The patron pages' languages: gettext catalogues and the choice of language per request.

English is the language the source is written in; every other language has a catalogue in
``locale/<code>/LC_MESSAGES/messages.po``, compiled to ``messages.mo`` beside it (both are
committed; ``tests/test_i18n.py`` fails when a text is missing from a catalogue or a ``.mo``
is older than its ``.po``). ``docs/patron-pages.md`` says how to extract and compile them.

The language of a request is chosen once, when it arrives (``choose``): the patron's own
choice (the ``libproxy_lang`` cookie, set by the language link every page carries), else the
browser's ``Accept-Language``, else the first language of ``[library] languages``. It is kept
in a context variable for the request's task, so every page rendered for that request (also
those rendered by the forwarding code, which never sees the language) uses it.

A leaf module: it imports nothing of the proxy.
"""

from __future__ import annotations

import functools
import gettext as _gettext
import re
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TypedDict

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "messages"
# Each language's name in its own language: that is how a patron recognises it in the link.
SUPPORTED: dict[str, str] = {"en": "English", "es": "Español"}
SOURCE_LANGUAGE = "en"
COOKIE = "libproxy_lang"
COOKIE_MAX_AGE = 365 * 86400

_language: ContextVar[str | None] = ContextVar("libproxy_language", default=None)
# How to choose the language, when a page first needs it: most requests are proxied to a vendor
# and never render a page, so they never pay for reading Accept-Language.
_chooser: ContextVar[Callable[[], str] | None] = ContextVar("libproxy_language_chooser", default=None)
_RANGE = re.compile(r"^\s*([A-Za-z]{1,8})(?:-[A-Za-z0-9]{1,8})*\s*(?:;\s*q\s*=\s*([01](?:\.\d{0,3})?))?\s*$")


def N_(message: str) -> str:  # the conventional name, which extraction looks for
    """Marks a text for translation where it is defined; it is translated where it is shown."""
    return message


class Plural(TypedDict):
    text: str
    plural: str


def Nn_(singular: str, plural: str) -> Plural:  # named like N_, for extraction
    """Marks a text with a plural form (``{count}`` in it) for translation with ngettext."""
    return {"text": singular, "plural": plural}


@functools.cache
def translations(language: str) -> _gettext.NullTranslations:
    """The catalogue of ``language`` (the source language needs none)."""
    if language == SOURCE_LANGUAGE:
        return _gettext.NullTranslations()
    with (LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.mo").open("rb") as fh:
        return _gettext.GNUTranslations(fh)


def current() -> str:
    """The language of the request being served (chosen on first use, see ``choose_later``)."""
    language = _language.get()
    if language is None:
        chooser = _chooser.get()
        language = chooser() if chooser is not None else SOURCE_LANGUAGE
        use(language)
        return current()
    return language


def use(language: str) -> None:
    """Serve the rest of this request (this task) in ``language``."""
    _language.set(language if language in SUPPORTED else SOURCE_LANGUAGE)


def choose_later(chooser: Callable[[], str]) -> None:
    """Serve this request in the language ``chooser`` returns, asked when a text first needs it."""
    _chooser.set(chooser)
    _language.set(None)


def gettext(message: str) -> str:
    return translations(current()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(current()).ngettext(singular, plural, n)


def pgettext(context: str, message: str) -> str:
    return translations(current()).pgettext(context, message)


def negotiate(cookie: str | None, accept_language: str | None, offered: Sequence[str]) -> str:
    """The language to answer in: the patron's choice if offered, else the best of the browser's
    ``Accept-Language`` (by q-value, ties in the browser's order), else the first offered."""
    if cookie in offered:
        return cookie  # type: ignore[return-value]  # checked: one of the offered strings
    ranked: list[tuple[float, int, str]] = []
    # SECURITY: a bounded header: a long Accept-Language costs no more than its first 32 ranges.
    for index, part in enumerate((accept_language or "")[:1024].split(",")[:32]):
        match = _RANGE.match(part)
        if match is None:
            continue
        quality = float(match.group(2)) if match.group(2) else 1.0
        if quality > 0:
            ranked.append((-quality, index, match.group(1).lower()))
    for _, _, code in sorted(ranked):
        if code in offered:
            return code
    return offered[0] if offered else SOURCE_LANGUAGE
