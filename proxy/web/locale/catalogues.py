"""Extraction and compilation of the patron pages' catalogues with Babel (a build-time tool:
the running proxy only reads the compiled ``.mo`` files, see ``i18n.py``)."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_file
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.messages.pofile import write_po as babel_write_po

LOCALE = Path(__file__).parent
PACKAGE = LOCALE.parents[1]  # proxy/
LANGUAGES = ("es",)  # English is the source language: it needs no catalogue
# Where the patron-facing texts are: Python files that mark them, and the templates.
PYTHON_SOURCES = ("web/texts.py", "web/pages.py", "web/routes.py", "records/privacy.py")
TEMPLATES = "web/templates"
KEYWORDS = {**DEFAULT_KEYWORDS, "N_": None, "Nn_": (1, 2), "_n": (1, 2)}
PROJECT = "libproxy"


def _sources() -> list[tuple[str, Path]]:
    files = [("python", PACKAGE / name) for name in PYTHON_SOURCES]
    files += [("jinja2", path) for path in sorted((PACKAGE / TEMPLATES).glob("*.html"))]
    return files


def extract() -> Catalog:
    """Every marked text of the sources, as a template catalogue (``messages.pot``)."""
    catalogue = Catalog(project=PROJECT, fuzzy=False)
    for method, path in _sources():
        options = {"extensions": "jinja2.ext.i18n", "trimmed": "false"} if method == "jinja2" else {}
        # A text with no literal (``_(variable)``) is not a message: it is translated elsewhere.
        for lineno, message, comments, context in extract_from_file(
                method if method == "python" else "jinja2.ext:babel_extract", path,
                keywords=KEYWORDS, options=options, strip_comment_tags=True):
            if isinstance(message, tuple) and not all(message):
                continue
            location = (str(path.relative_to(PACKAGE.parent)), lineno)
            catalogue.add(message, locations=[location], auto_comments=comments, context=context)
    return catalogue


def po_path(language: str | None) -> Path:
    if language is None:
        return LOCALE / "messages.pot"
    return LOCALE / language / "LC_MESSAGES" / "messages.po"


def read(language: str) -> Catalog:
    with po_path(language).open("rb") as fh:
        return read_po(fh, locale=language)


def merged(language: str, template: Catalog) -> Catalog:
    """The language's catalogue brought up to ``template``: new texts empty, old ones dropped."""
    path = po_path(language)
    if path.exists():
        catalogue = read(language)
    else:
        catalogue = Catalog(locale=language, project=PROJECT)
    catalogue.update(template, no_fuzzy_matching=True)
    catalogue.obsolete.clear()
    return catalogue


def write_po(language: str | None, catalogue: Catalog) -> None:
    path = po_path(language)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        babel_write_po(fh, catalogue, width=100, omit_header=False, sort_output=False,
                       include_previous=False)


def compiled(language: str) -> bytes:
    """The ``.mo`` that the language's ``.po`` compiles to."""
    buffer = BytesIO()
    write_mo(buffer, read(language), use_fuzzy=False)
    return buffer.getvalue()


def compile_catalogue(language: str) -> None:
    (LOCALE / language / "LC_MESSAGES" / "messages.mo").write_bytes(compiled(language))
