"""Statistics reports with small counts suppressed, as a table for people and as CSV.

Rules (the same for every output: the staff page, the ``stats`` command's table and its CSV):

1. **Small counts.** A count from 1 to ``threshold - 1`` is printed as ``<5`` (for threshold 5).
   Zero is printed as ``0``: that nobody did something identifies nobody.
2. **Data volume.** ``megabytes`` is withheld (``*``) when the row has 1 to ``threshold - 1``
   requests: the size of one download can tell which document it was.
3. **No subtraction.** The only published relation between cells is "a month is the sum of its
   days" (a monthly report beside a daily one). Within each (vendor, month, column), if the
   hidden days could be worked out exactly from the month's figure (checked with the bounds a
   reader knows: ``<5`` is 1..4, ``*`` is at least 5 for counts and anything for megabytes), the
   smallest further day is withheld as ``*`` until none can. If no day is left to withhold, the
   month's own figure is withheld as ``*`` in monthly reports instead.
4. **Totals are made of printed numbers.** The totals row adds up only the figures printed above
   it for databases (the sign-ins row, ``PROXY_VENDOR``, is not a database and is left out), so
   it cannot reveal anything they do not; when some are hidden it reads ``123+`` ("at
   least 123"). This is deliberate: a total computed from exact values would give away a hidden
   cell by subtraction from another report over a slightly different range.

Left alone, and documented rather than engineered away: comparing a daily report saved before
part of a month's detail was purged with one made after may narrow (not pin down) a hidden
value; and interval reasoning can narrow a hidden ``<5`` to, say, 3-4. For publication use
monthly reports. Every cell printed is still either a count of at least ``threshold``, zero, a
marker, or a sum of printed counts.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal, TextIO

Period = Literal["day", "month"]
# (day "YYYY-MM-DD" or month "YYYY-MM", vendor, kind, place, count, bytes)
RawRow = tuple[str, str, str, str, int, int]

COLUMNS = (
    "sessions_remote", "sessions_in_library", "requests_remote", "requests_in_library",
    "searches", "downloads", "megabytes",
)
COUNT_COLUMNS = COLUMNS[:-1]
HEADINGS = {
    "sessions_remote": "Sessions (remote)",
    "sessions_in_library": "Sessions (library)",
    "requests_remote": "Requests (remote)",
    "requests_in_library": "Requests (library)",
    "searches": "Searches",
    "downloads": "Downloads",
    "megabytes": "MB",
}
WITHHELD = "*"
# Proxy-wide events (sign-ins) are counted under this pseudo-vendor. Vendor ids cannot start
# with "_", so it never collides with a configured vendor.
PROXY_VENDOR = "_proxy"
_BYTES = "bytes"
_REQUESTS = "requests"
_PLACE_COLUMNS = {
    ("session", "remote"): "sessions_remote", ("session", "library"): "sessions_in_library",
    ("request", "remote"): "requests_remote", ("request", "library"): "requests_in_library",
    ("search", "remote"): "searches", ("search", "library"): "searches",
    ("download", "remote"): "downloads", ("download", "library"): "downloads",
}


@dataclass(frozen=True)
class Cell:
    """One printed figure. ``value`` is None when hidden; for a total with hidden parts it is
    the sum of the printed parts and ``partial`` is True. ``text`` is what every output shows."""

    text: str
    value: int | None
    partial: bool = False

    @property
    def hidden(self) -> bool:
        return self.value is None


@dataclass(frozen=True)
class ReportRow:
    period: str  # "YYYY-MM-DD" or "YYYY-MM"
    vendor: str
    cells: Mapping[str, Cell]


@dataclass(frozen=True)
class Report:
    period: Period
    first: date
    last: date
    threshold: int
    rows: tuple[ReportRow, ...]
    totals: Mapping[str, Cell] = field(default_factory=dict)

    @property
    def legend(self) -> tuple[str, ...]:
        t = self.threshold
        return (
            f"<{t}: between 1 and {t - 1}, not shown so that nobody can be picked out.",
            f"{WITHHELD}: withheld so that a small figure cannot be worked out from the others.",
            "123+: a total of the figures shown; some parts are hidden, so the real total is higher.",
        )


def _pivot(rows: Sequence[RawRow]) -> dict[tuple[str, str], dict[str, int]]:
    table: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for key, vendor, kind, place, count, size in rows:
        values = table[(key, vendor)]
        column = _PLACE_COLUMNS.get((kind, place))
        if column is not None:
            values[column] += count
        if kind == "request":
            values[_REQUESTS] += count
        values[_BYTES] += size
    return table


def _value(values: Mapping[str, int], column: str) -> int:
    return values.get(_BYTES, 0) if column == "megabytes" else values.get(column, 0)


def _small(values: Mapping[str, int], column: str, threshold: int) -> bool:
    """Primary suppression: rules 1 and 2."""
    if column == "megabytes":
        return 0 < values.get(_REQUESTS, 0) < threshold
    return 0 < values.get(column, 0) < threshold


def _pinned(bounds: Sequence[tuple[float, float]], total: float) -> bool:
    """Whether any hidden value is exactly determined by its bounds and the hidden total.

    For one equation ``x1 + ... + xn = total`` with ``lo_i <= x_i <= hi_i``, the tightest
    bounds a reader can derive for ``x_i`` are ``max(lo_i, total - sum of the others' hi)`` and
    ``min(hi_i, total - sum of the others' lo)``; the value is pinned when they meet.
    """
    sum_lo = sum(lo for lo, _ in bounds)
    finite_hi = sum(hi for _, hi in bounds if hi != math.inf)
    unbounded = sum(1 for _, hi in bounds if hi == math.inf)
    for lo, hi in bounds:
        others_lo = sum_lo - lo
        own_unbounded = hi == math.inf
        others_hi = math.inf if unbounded - own_unbounded else finite_hi - (0.0 if own_unbounded else hi)
        if max(lo, total - others_hi) >= min(hi, total - others_lo):
            return True
    return False


def plan_month(days: Mapping[str, int], small: set[str], *, month_printed: bool, column: str,
               threshold: int) -> tuple[set[str], bool]:
    """Rule 3 for one (vendor, month, column): (days withheld besides ``small``, whether the
    month's own figure must be withheld). ``days`` holds exact values; ``small`` the days
    suppressed by rules 1-2."""
    if not small or not month_printed:
        return set(), False
    bytes_column = column == "megabytes"
    withheld: set[str] = set()

    def bounds(day: str) -> tuple[float, float]:
        if bytes_column:
            return (0.0, math.inf)
        return (1.0, threshold - 1.0) if day in small else (float(threshold), math.inf)

    while True:
        hidden = sorted(small | withheld)
        if not _pinned([bounds(d) for d in hidden], float(sum(days[d] for d in hidden))):
            return withheld, False
        candidates = [(days[d], d) for d in days if d not in small and d not in withheld
                      and (bytes_column or days[d] >= threshold)]
        if not candidates:
            return set(), True
        withheld.add(min(candidates)[1])


def _text(column: str, values: Mapping[str, int]) -> str:
    if column == "megabytes":
        return str(round(values.get(_BYTES, 0) / 1_000_000))
    return str(values.get(column, 0))


_SELECT = "SELECT {key}, vendor, kind, place, count, bytes FROM {table} WHERE {key} BETWEEN {p} AND {p}"


def select_rows(execute: Callable[[str, tuple[str, str]], Iterable[Sequence[Any]]], placeholder: str,
                first: date, last: date, vendors: Collection[str] = ()) -> tuple[list[RawRow], list[RawRow]]:
    """Exact daily rows for the whole months spanning ``first``..``last``, and the monthly rows
    of those months, from the ``daily`` and ``monthly`` tables every store has: what
    ``build_report`` needs, never for display. ``execute`` is the store's DB-API
    ``connection.execute`` and ``placeholder`` its parameter marker ("?" or "%s").

    The bounds are text: "2026-11-31" sorts after every real November day."""
    wanted = set(vendors)

    def read(table: str, key: str, lo: str, hi: str) -> list[RawRow]:
        sql = _SELECT.format(key=key, table=table, p=placeholder)
        rows = [(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5])) for r in execute(sql, (lo, hi))]
        return [r for r in rows if r[1] in wanted] if wanted else rows

    lo, hi = first.isoformat()[:7], last.isoformat()[:7]
    return read("daily", "day", f"{lo}-01", f"{hi}-31"), read("monthly", "month", lo, hi)


def build_report(daily: Sequence[RawRow], monthly: Sequence[RawRow], *, period: Period, first: date,
                 last: date, threshold: int = 5) -> Report:
    """The suppressed report for ``first``..``last`` by ``period``.

    ``daily`` must hold every daily row of the whole months spanning the range and ``monthly``
    those months' rows (``StatsDB.rows`` gives exactly that): rule 3 looks at whole months, so
    the same figure is hidden whatever range a report asks for.
    """
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    days = _pivot(daily)
    months = _pivot(monthly)
    by_month: dict[tuple[str, str], dict[str, dict[str, int]]] = defaultdict(dict)
    for (day, vendor), values in days.items():
        by_month[(day[:7], vendor)][day] = values
    # A month whose monthly rows are missing (never expected) is taken as the sum of its days.
    for month_vendor, in_month in by_month.items():
        if month_vendor not in months:
            summed: dict[str, int] = defaultdict(int)
            for values in in_month.values():
                for name, n in values.items():
                    summed[name] += n
            months[month_vendor] = summed

    withheld_days: set[tuple[str, str, str]] = set()
    withheld_months: set[tuple[str, str, str]] = set()
    for (month, vendor), month_values in months.items():
        in_month = by_month.get((month, vendor), {})
        for column in COLUMNS:
            exact = {d: _value(v, column) for d, v in in_month.items()}
            small = {d for d, v in in_month.items() if _small(v, column, threshold)}
            extra, hide_month = plan_month(
                exact, small, month_printed=not _small(month_values, column, threshold),
                column=column, threshold=threshold,
            )
            withheld_days.update((d, vendor, column) for d in extra)
            if hide_month:
                withheld_months.add((month, vendor, column))

    if period == "day":
        source, withheld = days, withheld_days
        lo, hi = first.isoformat(), last.isoformat()
    else:
        source, withheld = months, withheld_months
        lo, hi = first.isoformat()[:7], last.isoformat()[:7]

    rows: list[ReportRow] = []
    for (key, vendor) in sorted(k for k in source if lo <= k[0] <= hi):
        values = source[(key, vendor)]
        cells: dict[str, Cell] = {}
        for column in COLUMNS:
            if _small(values, column, threshold):
                text = WITHHELD if column == "megabytes" else f"<{threshold}"
                cells[column] = Cell(text, None)
            elif (key, vendor, column) in withheld:
                cells[column] = Cell(WITHHELD, None)
            else:
                text = _text(column, values)
                cells[column] = Cell(text, int(text))
        rows.append(ReportRow(key, vendor, cells))

    totals: dict[str, Cell] = {}
    # The sign-ins row counts sessions of the proxy as a whole, not of a database: adding it
    # would count every session twice (once at sign-in, once per database opened).
    database_rows = [row for row in rows if row.vendor != PROXY_VENDOR]
    for column in COLUMNS:
        shown = [row.cells[column].value for row in database_rows]
        total = sum(v for v in shown if v is not None)
        partial = any(v is None for v in shown)
        totals[column] = Cell(f"{total}+" if partial else str(total), total, partial)
    return Report(period=period, first=first, last=last, threshold=threshold, rows=tuple(rows), totals=totals)


# ----------------------------------------------------------------------------------------------
# Output


def _label(vendor: str, titles: Mapping[str, str] | None) -> str:
    if vendor == PROXY_VENDOR:
        return "All databases (sign-ins)"
    return titles.get(vendor, vendor) if titles else vendor


def render_table(report: Report, titles: Mapping[str, str] | None = None, *, totals: bool = True) -> str:
    """A plain-text table with a legend, for a terminal or a ``<pre>``."""
    first_heading = "Day" if report.period == "day" else "Month"
    header = [first_heading, "Database", *(HEADINGS[c] for c in COLUMNS)]
    body = [[row.period, _label(row.vendor, titles), *(row.cells[c].text for c in COLUMNS)] for row in report.rows]
    if totals and report.rows:
        body.append(["Total", "", *(report.totals[c].text for c in COLUMNS)])
    if not body:
        return f"No usage recorded from {report.first.isoformat()} to {report.last.isoformat()}.\n"
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        left = [cells[i].ljust(widths[i]) for i in range(2)]
        right = [cells[i].rjust(widths[i]) for i in range(2, len(cells))]
        return "  ".join(left + right).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in body]
    out += ["", *report.legend]
    return "\n".join(out) + "\n"


def write_csv(report: Report, stream: TextIO, *, totals: bool = True) -> None:
    """CSV with the same suppression as the table: ``period,vendor,<columns>`` then a ``total``
    row. Hidden figures are written as their markers (``<5``, ``*``, ``123+``), never as numbers.
    Vendor ids are identifier-shaped (checked when counted), so no cell can start a formula."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(["period", "vendor", *COLUMNS])
    for row in report.rows:
        writer.writerow([row.period, row.vendor, *(row.cells[c].text for c in COLUMNS)])
    if totals and report.rows:
        writer.writerow(["total", "all", *(report.totals[c].text for c in COLUMNS)])


def report_csv(report: Report, *, totals: bool = True) -> str:
    """``write_csv`` into a string (for a download response)."""
    buffer = io.StringIO()
    write_csv(report, buffer, totals=totals)
    return buffer.getvalue()
