"""Statistics in PostgreSQL: one store for the counts of every instance.

The same two tables as the SQLite file (``stats.py``), the same rows (day or month, vendor,
kind, place, count, bytes: nothing about anyone), the same report with the same small-count
suppression (``report.build_report``). Only where the rows live differs: each instance adds its
batches with ``INSERT ... ON CONFLICT DO UPDATE`` (adding, never overwriting, so several
instances count into one row), in a fixed row order so two instances cannot deadlock.

Like ``StatsDB`` it is synchronous and owned by one worker thread (``UsageStats`` runs it off
the event loop). ``psycopg`` is an optional dependency: ``pip install "libproxy[postgres]"``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from datetime import date
from typing import Any

from proxy.records.report import Period, RawRow, Report, build_report, select_rows

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS daily (
        day TEXT NOT NULL, vendor TEXT NOT NULL, kind TEXT NOT NULL, place TEXT NOT NULL,
        count BIGINT NOT NULL DEFAULT 0, bytes BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (day, vendor, kind, place))""",
    """CREATE TABLE IF NOT EXISTS monthly (
        month TEXT NOT NULL, vendor TEXT NOT NULL, kind TEXT NOT NULL, place TEXT NOT NULL,
        count BIGINT NOT NULL DEFAULT 0, bytes BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (month, vendor, kind, place))""",
)

def errors() -> tuple[type[Exception], ...]:
    """The errors of PostgreSQL's driver, when it is installed (for the command line's messages)."""
    try:
        import psycopg
    except ImportError:
        return ()
    return (psycopg.Error,)


_UPSERT = ("INSERT INTO {t} VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT ({k}, vendor, kind, place) "
           "DO UPDATE SET count = {t}.count + excluded.count, bytes = {t}.bytes + excluded.bytes")


class PostgresStatsDB:
    """The statistics tables in PostgreSQL; the interface of ``StatsDB``."""

    def __init__(self, url: str, *, create: bool = True, connect_timeout: float = 10.0) -> None:
        import psycopg

        self.path = "PostgreSQL"  # what messages name (never the URL: it may hold a password)
        self._conn: Any = psycopg.connect(url, autocommit=True, connect_timeout=int(connect_timeout))
        if create:
            with self._conn.transaction():
                for statement in SCHEMA:
                    self._conn.execute(statement)

    def add(self, batch: Any) -> None:
        """Add a batch of counts (as ``StatsDB.add``) in one transaction."""
        daily = sorted((d, v, k, p, c, b) for (d, v, k, p), (c, b) in batch.items())
        monthly: dict[tuple[str, str, str, str], list[int]] = {}
        for d, v, k, p, c, b in daily:
            cell = monthly.setdefault((d[:7], v, k, p), [0, 0])
            cell[0] += c
            cell[1] += b
        with self._conn.transaction(), self._conn.cursor() as cur:
            cur.executemany(_UPSERT.format(t="daily", k="day"), daily)
            cur.executemany(_UPSERT.format(t="monthly", k="month"),
                            sorted((*key, c, b) for key, (c, b) in monthly.items()))

    def purge(self, first_day: str, first_month: str) -> int:
        with self._conn.transaction():
            removed = int(self._conn.execute("DELETE FROM daily WHERE day < %s", (first_day,)).rowcount)
            removed += int(self._conn.execute("DELETE FROM monthly WHERE month < %s", (first_month,)).rowcount)
        if removed:
            # SECURITY: deleted rows stay in the table's pages until vacuumed; purged should
            # mean gone from the server's files too, as far as PostgreSQL lets us.
            self._conn.execute("VACUUM daily")
            self._conn.execute("VACUUM monthly")
        return removed

    def rows(self, first: date, last: date, vendors: Collection[str] = ()) -> tuple[list[RawRow], list[RawRow]]:
        return select_rows(self._conn.execute, "%s", first, last, vendors)

    def report(self, first: date, last: date, period: Period, threshold: int,
               vendors: Collection[str] = ()) -> Report:
        daily, monthly = self.rows(first, last, vendors)
        return build_report(daily, monthly, period=period, first=first, last=last, threshold=threshold)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()
