"""Which requests of a vendor count as searches and full-text downloads.

A vendor option (``[vendor.counter]``) read by the vendor table and used by the statistics, in
the spirit of COUNTER's Searches_Regular and Total_Item_Requests. Pure: nothing about a path is
kept; callers count the kinds ``classify`` returns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from proxy.settings import Reader

Kind = Literal["session", "request", "search", "download"]
# SECURITY: patterns come from the administrator but the text they run on comes from the
# patron; capping it bounds the cost of a pattern that backtracks badly.
MAX_CLASSIFY = 4096


@dataclass(frozen=True)
class CounterPatterns:
    """Compiled per-vendor patterns recognising searches and full-text downloads."""

    search: tuple[re.Pattern[str], ...] = ()
    download: tuple[re.Pattern[str], ...] = ()

    @property
    def empty(self) -> bool:
        return not self.search and not self.download


NO_PATTERNS = CounterPatterns()


def compile_pattern(text: str) -> re.Pattern[str]:
    """One pattern: ``"re:<regex>"`` is searched anywhere in the path and query; anything else
    is a glob matched against the whole path and query, where only ``*`` is special (any run of
    characters, ``/`` and ``?`` included). Raises ``re.error`` for a bad regex."""
    if text.startswith("re:"):
        return re.compile(text[3:])
    return re.compile(r"\A" + ".*".join(re.escape(part) for part in text.split("*")) + r"\Z", re.S)


def compile_patterns(search: Iterable[str] = (), download: Iterable[str] = ()) -> CounterPatterns:
    """``CounterPatterns`` from pattern strings (see ``compile_pattern``); raises ``re.error``."""
    return CounterPatterns(tuple(compile_pattern(p) for p in search), tuple(compile_pattern(p) for p in download))


def parse_counter_patterns(reader: Reader) -> CounterPatterns:
    """Read a vendor's ``counter`` table (``vendor_reader.sub("counter")``)::

        [vendor.counter]
        search = ["/search*", "re:^/ehost/results\\?"]
        download = ["re:\\.pdf($|\\?)", "/stable/pdf/*"]

    Bad patterns are recorded as problems; calls ``reader.unknown_keys()`` itself.
    """
    compiled: dict[str, tuple[re.Pattern[str], ...]] = {}
    for key in ("search", "download"):
        good: list[re.Pattern[str]] = []
        for text in reader.str_list(key):
            try:
                good.append(compile_pattern(text))
            except re.error as exc:
                reader.bad(key, f"{text!r} is not a valid regular expression: {exc}")
        compiled[key] = tuple(good)
    reader.unknown_keys()
    return CounterPatterns(compiled["search"], compiled["download"])


def classify(path_and_query: str, patterns: CounterPatterns) -> frozenset[Kind]:
    """Which of "search" and "download" the request ``path_and_query`` (e.g. ``/s?q=x``) is.

    Pure: nothing about the path is kept; the caller counts the returned kinds.
    """
    if patterns.empty:
        return frozenset()
    text = path_and_query[:MAX_CLASSIFY]
    kinds: set[Kind] = set()
    if any(p.search(text) for p in patterns.search):
        kinds.add("search")
    if any(p.search(text) for p in patterns.download):
        kinds.add("download")
    return frozenset(kinds)
