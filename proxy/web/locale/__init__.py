"""The patron pages' translation catalogues, and the command that keeps them up to date.

``python -m proxy.web.locale`` extracts every marked text (templates, ``texts.py``, the privacy
summary) into ``messages.pot``, merges it into each language's ``messages.po`` (new texts
appear untranslated, removed ones are dropped), and compiles each ``messages.mo``. Translate
the new entries in the ``.po`` files, then run it again: ``tests/test_i18n.py`` fails while a
text is untranslated or a ``.mo`` is out of date.
"""
