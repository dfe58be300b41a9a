"""``python -m proxy.web.locale``: extract, merge and compile the catalogues (see __init__)."""

from __future__ import annotations

import sys

from proxy.web.locale.catalogues import LANGUAGES, compile_catalogue, extract, merged, write_po


def main() -> int:
    template = extract()
    write_po(None, template)
    for language in LANGUAGES:
        catalogue = merged(language, template)
        write_po(language, catalogue)
        compile_catalogue(language)
        missing = [m.id for m in catalogue if m.id and (not m.string or m.fuzzy)]
        print(f"{language}: {len(catalogue)} texts, {len(missing)} to translate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
