"""The ``stats`` and ``purge`` commands, ready for ``proxy/cli.py`` to call.

Wiring (in cli.py)::

    stats = sub.add_parser("stats", help="print usage statistics or export them as CSV")
    stats.add_argument("--config", required=True)
    add_stats_arguments(stats)
    # cmd_stats: cfg = config.load(...); return stats_from_args(cfg.records, args, titles=...)

    purge = sub.add_parser("purge", help="delete records past their retention now")
    purge.add_argument("--config", required=True)
    # cmd_purge: return run_purge_command(cfg.records)

Both work while the server runs: the file is in WAL mode, so readers and a second writer wait
for each other briefly instead of failing. Counts the server has not flushed yet (at most
``flush_interval`` old) are not in the file and so not in the output.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import TextIO

from proxy.records.options import RecordsOptions
from proxy.records.pgstats import errors as pg_errors
from proxy.records.report import Period, Report, build_report, render_table, write_csv
from proxy.records.retention import purge_now
from proxy.records.stats import day_of, open_stats_db

Clock = Callable[[], float]

_DB_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, *pg_errors())


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date like 2026-01-31: {text!r}") from None


def add_stats_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``stats`` options: --by, --from, --to, --vendor (repeatable), --csv, --no-totals."""
    parser.add_argument("--by", choices=("day", "month"), default="month", help="one row per day or per month")
    parser.add_argument("--from", dest="since", type=_iso_date, default=None,
                        help="first day (default: 11 months back for --by month, 30 days back for --by day)")
    parser.add_argument("--to", dest="until", type=_iso_date, default=None, help="last day (default: today)")
    parser.add_argument("--vendor", dest="vendors", action="append", default=[], help="only this vendor id")
    parser.add_argument("--csv", dest="csv_path", default=None, metavar="FILE",
                        help="write CSV to FILE instead of printing a table ('-' for standard output)")
    parser.add_argument("--no-totals", dest="totals", action="store_false", help="leave out the totals row")


def default_range(period: Period, today: date) -> tuple[date, date]:
    """The range shown when none is given: the last 12 months, or the last 31 days."""
    if period == "day":
        return today - timedelta(days=30), today
    month = today.month - 11
    year = today.year + (month - 1) // 12
    month = (month - 1) % 12 + 1
    return date(year, month, 1), today


def run_stats_command(options: RecordsOptions, *, period: Period = "month", since: date | None = None,
                      until: date | None = None, vendors: Sequence[str] = (), csv_path: str | None = None,
                      totals: bool = True, titles: Mapping[str, str] | None = None,
                      out: TextIO | None = None, clock: Clock = time.time) -> int:
    """Print the suppressed report as a table, or write it as CSV. Returns the exit status.

    A missing statistics file prints a note (or an empty CSV) and succeeds: no usage yet.
    """
    out = out if out is not None else sys.stdout
    today = day_of(clock(), options.tz)
    first, last = default_range(period, today)
    first, last = since or first, until or last
    if first > last:
        print("--from must not be after --to.", file=sys.stderr)
        return 2
    try:
        report = _read_report(options, first, last, period, vendors)
    except _DB_ERRORS as exc:
        print(f"Cannot read the statistics file {options.database}: {exc}", file=sys.stderr)
        return 1
    _emit(report, csv_path, totals, titles, out)
    return 0


def _read_report(options: RecordsOptions, first: date, last: date, period: Period,
                 vendors: Sequence[str]) -> Report:
    try:
        db = open_stats_db(options.database, options.database_url, create=False)
    except FileNotFoundError:
        return build_report([], [], period=period, first=first, last=last, threshold=options.threshold)
    try:
        return db.report(first, last, period, options.threshold, vendors)
    finally:
        db.close()


def _emit(report: Report, csv_path: str | None, totals: bool, titles: Mapping[str, str] | None,
          out: TextIO) -> None:
    if csv_path is None:
        out.write(render_table(report, titles, totals=totals))
    elif csv_path == "-":
        write_csv(report, out, totals=totals)
    else:
        with Path(csv_path).open("w", encoding="utf-8", newline="") as fh:
            write_csv(report, fh, totals=totals)
        out.write(f"Wrote {len(report.rows)} rows to {csv_path}.\n")


def stats_from_args(options: RecordsOptions, args: argparse.Namespace, *,
                    titles: Mapping[str, str] | None = None, out: TextIO | None = None) -> int:
    """``run_stats_command`` with the options ``add_stats_arguments`` defined."""
    return run_stats_command(
        options, period=args.by, since=args.since, until=args.until, vendors=args.vendors,
        csv_path=args.csv_path, totals=args.totals, titles=titles, out=out,
    )


def run_purge_command(options: RecordsOptions, *, out: TextIO | None = None, clock: Clock = time.time) -> int:
    """Purge the statistics file now and say what was removed. Returns the exit status."""
    out = out if out is not None else sys.stdout
    try:
        removed = purge_now(options, clock=clock)
    except _DB_ERRORS as exc:
        print(f"Cannot purge the statistics file {options.database}: {exc}", file=sys.stderr)
        return 1
    out.write(
        f"Statistics: removed {removed['statistics']} rows (daily rows older than "
        f"{options.detail_retention / 86400:g} days, monthly rows older than "
        f"{options.monthly_retention / 86400:g} days).\n"
        "Sessions and sign-in counters live in the running server's memory; it purges them itself.\n"
    )
    return 0
