"""The patron pages' translations (issue 16): every text of every template goes through
gettext, the Spanish catalogue is complete and compiled, and the language is chosen as promised.

The untranslated-string test renders every template with a catalogue that wraps each translated
text in markers and every value the page shows (library name, vendor titles...) in others;
whatever text is left outside both was written into a template without ``_()``/``{% trans %}``.
"""

from __future__ import annotations

import gettext
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2
import pytest
from babel.messages.catalog import Catalog

from proxy.records.options import default_options
from proxy.records.privacy import PrivacyFacts, privacy_summary
from proxy.web import i18n
from proxy.web.locale.catalogues import LANGUAGES, compiled, extract, read
from proxy.web.pages import TEMPLATES
from proxy.web.texts import MESSAGES
from tests.support import base_config

PLACEHOLDER = re.compile(r"\{[a-z_]+\}|%\([a-z_]+\)s")


@pytest.fixture(scope="module")
def template() -> Catalog:
    return extract()


def _ids(catalogue: Catalog) -> set[Any]:
    return {m.id for m in catalogue if m.id}


@pytest.mark.parametrize("language", LANGUAGES)
def test_catalogue_has_every_text_translated(template: Catalog, language: str) -> None:
    catalogue = read(language)
    missing = _ids(template) - _ids(catalogue)
    assert not missing, f"not in {language}/messages.po (run python -m proxy.web.locale): {sorted(map(str, missing))}"
    stale = _ids(catalogue) - _ids(template)
    assert not stale, f"no longer used, still in {language}/messages.po: {sorted(map(str, stale))}"
    for message in catalogue:
        if not message.id:
            continue
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(strings), f"untranslated in {language}: {message.id!r}"
        assert not message.fuzzy, f"fuzzy (needs checking) in {language}: {message.id!r}"
        # The same fields in the translation as in the original, or formatting breaks the page.
        originals = message.id if isinstance(message.id, tuple) else (message.id,)
        wanted = set(PLACEHOLDER.findall(originals[-1]))
        for text in strings:
            found = set(PLACEHOLDER.findall(text))
            assert found <= wanted and (found == wanted or len(originals) > 1), (message.id, text)


@pytest.mark.parametrize("language", LANGUAGES)
def test_compiled_catalogue_is_up_to_date(language: str) -> None:
    mo = i18n.LOCALE_DIR / language / "LC_MESSAGES" / "messages.mo"
    with mo.open("rb") as fh:
        committed = gettext.GNUTranslations(fh)
    import io

    fresh = gettext.GNUTranslations(io.BytesIO(compiled(language)))
    assert committed._catalog == fresh._catalog, (  # type: ignore[attr-defined]
        f"{mo} is older than its .po: run python -m proxy.web.locale")


class _Text(HTMLParser):
    """Visible text and the attributes people read (labels, alternatives), from a page."""

    READ_ATTRIBUTES = ("aria-label", "alt", "title", "placeholder")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script"):
            self._skip += 1
        for name, value in attrs:
            if name in self.READ_ATTRIBUTES and value:
                self.pieces.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.pieces.append(data)


class _Marking(gettext.NullTranslations):
    def gettext(self, message: str) -> str:
        return f"⟦{message}⟧"

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return f"⟦{singular if n == 1 else plural}⟧"

    def pgettext(self, context: str, message: str) -> str:
        return f"⟦{message}⟧"


def _data(value: str) -> str:
    return f"⟪{value}⟫"


# Every variable the templates read, as marked data; lists hold one item so loops run.
_CONTEXT: dict[str, Any] = {
    "lang": "xx", "library_name": _data("Library"), "library_contact": _data("contact"),
    "proxy_origin": "http://proxy", "title": _data("title"), "text": _data("text"),
    "other_languages": [{"code": "es", "name": _data("Español"), "href": "http://proxy/language/es"}],
    "theme_url": "http://proxy/theme.css", "logo_url": "http://proxy/logo",
    "links": [("http://proxy/databases", _data("label"))],
    "vendors": [{"title": _data("Vendor"), "description": _data("about"), "licensed": False, "link": "http://x"}],
    "signed_in": True, "in_library": True, "vendor_title": _data("Vendor"), "error": _data("error"),
    "csrf": "token", "url": "http://v", "card": "1234",
    "sections": [(_data("heading"), _data("paragraph"))],
    "groups": [_data("Group")], "home": _data("Home"), "signed_in_at": _data("when"), "ends_at": _data("when"),
    "visited": [_data("Vendor")], "kept": [(_data("Vendor"), 2), (_data("Vendor"), 1)],
}


@pytest.mark.parametrize("name", sorted(p.name for p in TEMPLATES.glob("*.html")))
def test_templates_have_no_untranslated_text(name: str) -> None:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, extensions=["jinja2.ext.i18n"])
    env.install_gettext_translations(_Marking(), newstyle=True)  # type: ignore[attr-defined]
    for variant in ({}, {"in_library": False, "error": None, "card": "", "signed_in": False}):
        page = env.get_template(name).render(**{**_CONTEXT, **variant})
        parser = _Text()
        parser.feed(page)
        text = " ".join(parser.pieces)
        left = re.sub(r"⟦[^⟧]*⟧|⟪[^⟫]*⟫", " ", text)
        # Punctuation and the separators between links are not words to translate.
        words = re.findall(r"[A-Za-zÀ-ÿ]{2,}", left)
        assert not words, f"{name}: text outside gettext: {words} in {left.split()!r}"


def test_every_message_is_translated_into_spanish() -> None:
    spanish = i18n.translations("es")
    for reason, words in MESSAGES.items():
        for text in (words.title, words.text, words.back):
            if text:
                assert spanish.gettext(text) != text, (reason, text)
        if words.plural:
            assert spanish.ngettext(words.text, words.plural, 3) != words.plural


def test_privacy_summary_in_spanish(tmp_path: Path) -> None:
    config = base_config(tmp_path, [])
    facts = PrivacyFacts.from_config(config, default_options(tmp_path), pairwise_vendors=["JSTOR"])
    english = privacy_summary(facts)
    spanish = privacy_summary(facts, translate=i18n.translations("es"), language="es",
                              library_name="Biblioteca Pública de Wolcott")
    assert len(english) == len(spanish)
    for (eh, et), (sh, st) in zip(english, spanish, strict=True):
        assert eh != sh and et != st
    text = " ".join(p for _, p in spanish)
    assert "Biblioteca Pública de Wolcott" in text and "cada hora" in text and "1.100 días (unos 3 años)" in text
    for english_word in (" the ", " every ", " days", " hour", " and "):
        assert english_word not in text, english_word


@pytest.mark.parametrize(("cookie", "header", "offered", "chosen"), [
    (None, None, ("en", "es"), "en"),
    (None, "es-MX,es;q=0.9,en;q=0.8", ("en", "es"), "es"),
    (None, "fr-CA, fr;q=0.9, es;q=0.5, en;q=0.4", ("en", "es"), "es"),
    (None, "en;q=0.2, es;q=0.8", ("en", "es"), "es"),
    (None, "es;q=0", ("en", "es"), "en"),
    (None, "de", ("es", "en"), "es"),  # nothing the browser asks for: the library's first
    ("es", "en-US,en", ("en", "es"), "es"),  # the patron's own choice wins
    ("es", "es", ("en",), "en"),  # [library] languages limits what is offered
    ("fr", None, ("en", "es"), "en"),
    (None, "garbage;;q=x, *;q=1", ("en", "es"), "en"),
])
def test_language_choice(cookie: str | None, header: str | None, offered: tuple[str, ...], chosen: str) -> None:
    assert i18n.negotiate(cookie, header, offered) == chosen


def test_languages_and_library_texts_from_the_configuration(tmp_path: Path) -> None:
    from proxy import config as config_mod
    from proxy.errors import ConfigError

    config = base_config(tmp_path, [], library={"languages": ["es"], "contact": "desk",
                                                "es": {"name": "Biblioteca", "contact": "mostrador"}})
    assert config.library.languages == ("es",)
    assert config.library.text("name", "es") == "Biblioteca"
    assert config.library.text("name", "en") == config.library.name
    assert config.library.text("contact", "es") == "mostrador" and config.library.text("contact", "en") == "desk"
    with pytest.raises(ConfigError) as refused:
        base_config(tmp_path, [], library={"languages": ["en", "fr"], "es": {"nom": "x"}})
    text = "\n".join(refused.value.problems)
    assert '"fr" is not a language the pages are written in' in text
    del config_mod
