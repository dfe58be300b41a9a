"""Statistics charts drawn from printed figures only.

A bar shows the sum of the figures the table prints for that database and column. A figure
the table hides (``<5``, ``*``) is never drawn as 0 (that would print a number the table
refuses to print, and a wrong one): a column whose figures are all hidden gets no bar and the
words "suppressed"; one with some hidden gets the printed sum as a bar, labelled "at least".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from proxy.records.report import HEADINGS, PROXY_VENDOR, Report

CHART_COLUMNS = ("requests_remote", "requests_in_library", "searches", "downloads")
BAR_WIDTH = 300


@dataclass(frozen=True)
class Bar:
    label: str
    value: int  # the sum of printed figures
    text: str  # what is written beside the bar
    width: int  # 0 draws no bar
    hidden: bool  # every figure was suppressed


@dataclass(frozen=True)
class Chart:
    title: str
    bars: tuple[Bar, ...]


def charts(report: Report, titles: Mapping[str, str]) -> list[Chart]:
    """One chart per database (sign-ins are a proxy-wide row, not a database: left out)."""
    sums: dict[str, dict[str, tuple[int, int, int]]] = {}  # title -> column -> (sum, shown, hidden)
    for row in report.rows:
        if row.vendor == PROXY_VENDOR:
            continue
        bucket = sums.setdefault(titles.get(row.vendor, row.vendor), {})
        for column in CHART_COLUMNS:
            total, shown, hidden = bucket.get(column, (0, 0, 0))
            value = row.cells[column].value
            if value is None:
                bucket[column] = (total, shown, hidden + 1)
            else:
                bucket[column] = (total + value, shown + 1, hidden)
    peak = max((t for b in sums.values() for t, _, _ in b.values()), default=0) or 1
    out: list[Chart] = []
    for title, bucket in sorted(sums.items()):
        bars = []
        for column in CHART_COLUMNS:
            total, shown, hidden = bucket.get(column, (0, 0, 0))
            if hidden and not shown:
                text = "suppressed (small count)"
            elif hidden:
                text = f"at least {total} (some figures suppressed)"
            else:
                text = str(total)
            width = round(BAR_WIDTH * total / peak) if shown else 0
            bars.append(Bar(HEADINGS[column], total, text, width, hidden > 0 and not shown))
        out.append(Chart(title, tuple(bars)))
    return out
