"""Usage statistics, aggregated at the source: per vendor, per day, counts only.

The request path calls ``UsageStats.record`` (or ``count_request``): a dictionary increment, no
I/O, no lock (the event loop is the only writer). A background task flushes the accumulated
counts every ``flush_interval`` into an embedded SQLite file, and ``close`` flushes the rest.
All SQLite work runs on one dedicated worker thread that owns the only connection, so the event
loop never waits on the disk and the connection is never shared between threads.

What is stored, and nothing else::

    daily(day, vendor, kind, place, count, bytes)      kept ``detail_retention`` (90 days)
    monthly(month, vendor, kind, place, count, bytes)  kept ``monthly_retention`` (1100 days)

``kind`` is one of ``KINDS``; ``place`` is "remote" or "library". No patron key, session, card,
address, URL, path, query or time of day is ever stored: a row cannot be linked to anyone, only
counted. Vendor ids are checked against the configuration's id syntax before they are accepted,
so a path or host passed by mistake can never reach the file.

Searches and full-text downloads are recognised by per-vendor URL patterns, in the spirit of
COUNTER's Searches_Regular and Total_Item_Requests: ``classify(path_and_query, patterns)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TypeVar

from proxy.counters import NO_PATTERNS as NO_PATTERNS  # re-exported for the statistics' callers
from proxy.counters import CounterPatterns as CounterPatterns
from proxy.counters import Kind as Kind
from proxy.counters import classify as classify
from proxy.counters import compile_pattern as compile_pattern
from proxy.counters import compile_patterns as compile_patterns
from proxy.counters import parse_counter_patterns as parse_counter_patterns
from proxy.records.pgstats import PostgresStatsDB
from proxy.records.report import PROXY_VENDOR as PROXY_VENDOR  # re-exported: callers count sign-ins with it
from proxy.records.report import Period, RawRow, Report, build_report, select_rows

log = logging.getLogger("libproxy.records")

T = TypeVar("T")
Clock = Callable[[], float]
KINDS: tuple[Kind, ...] = ("session", "request", "search", "download")
_KIND_SET = frozenset(KINDS)
PLACES = ("remote", "library")

_VENDOR_ID = re.compile(rf"\A(?:[a-z0-9][a-z0-9_-]{{0,39}}|{PROXY_VENDOR})\Z")


SCHEMA = """
CREATE TABLE IF NOT EXISTS daily (
    day TEXT NOT NULL, vendor TEXT NOT NULL, kind TEXT NOT NULL, place TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, vendor, kind, place)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS monthly (
    month TEXT NOT NULL, vendor TEXT NOT NULL, kind TEXT NOT NULL, place TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (month, vendor, kind, place)
) WITHOUT ROWID;
"""
SCHEMA_VERSION = 1

# (day, vendor, kind, place) -> [count, bytes]
Batch = Mapping[tuple[str, str, str, str], list[int]]


# ----------------------------------------------------------------------------------------------
# Classification


# ----------------------------------------------------------------------------------------------
# Days


def day_of(ts: float, tz: tzinfo | None = None) -> date:
    """The calendar day of ``ts`` in ``tz`` (None: the server's local time zone)."""
    return datetime.fromtimestamp(ts, tz).date()


def _day_start(day: date, tz: tzinfo | None) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()


def month_key(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def cutoffs(now: float, detail_retention: float, monthly_retention: float,
            tz: tzinfo | None = None) -> tuple[str, str]:
    """(first day kept, first month kept): daily rows of earlier days and monthly rows of
    earlier months are purged. A day is kept until all of it is older than the retention."""
    return (day_of(now - detail_retention, tz).isoformat(), month_key(day_of(now - monthly_retention, tz)))


# ----------------------------------------------------------------------------------------------
# The SQLite file (synchronous; one instance per thread)


class StatsDB:
    """The statistics file. Not thread-safe: create, use and close it on one thread.

    ``create=False`` refuses to create a missing file (the ``stats`` command must not leave an
    empty database behind a typo).
    """

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, timeout=10.0)
        else:
            if not path.is_file():
                raise FileNotFoundError(path)
            self._conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=10.0)
        conn = self._conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        # SECURITY: purged rows are overwritten with zeros in the file, not merely unlinked
        # from the b-tree, so "purged" means gone from the bytes on disk too.
        conn.execute("PRAGMA secure_delete=ON")
        if create:
            with conn:
                conn.executescript(SCHEMA)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def add(self, batch: Batch) -> None:
        """Add a batch of counts to the daily and monthly tables in one transaction."""
        daily = [(d, v, k, p, c, b) for (d, v, k, p), (c, b) in batch.items()]
        monthly = [(d[:7], v, k, p, c, b) for (d, v, k, p, c, b) in daily]
        upsert = (
            "INSERT INTO {t} VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
            "count = count + excluded.count, bytes = bytes + excluded.bytes"
        )
        with self._conn:
            self._conn.executemany(upsert.format(t="daily"), daily)
            self._conn.executemany(upsert.format(t="monthly"), monthly)

    def purge(self, first_day: str, first_month: str) -> int:
        """Delete daily rows before ``first_day`` and monthly rows before ``first_month``;
        returns the number of rows deleted."""
        with self._conn:
            removed = self._conn.execute("DELETE FROM daily WHERE day < ?", (first_day,)).rowcount
            removed += self._conn.execute("DELETE FROM monthly WHERE month < ?", (first_month,)).rowcount
        # SECURITY: the write-ahead log still holds the deleted pages until a checkpoint;
        # TRUNCATE copies them back (zeroed) and empties the -wal file.
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def rows(self, first: date, last: date, vendors: Collection[str] = ()) -> tuple[list[RawRow], list[RawRow]]:
        """See ``report.select_rows``."""
        return select_rows(self._conn.execute, "?", first, last, vendors)

    def report(self, first: date, last: date, period: Period, threshold: int,
               vendors: Collection[str] = ()) -> Report:
        """The suppressed report for ``first``..``last`` (see ``report.build_report``)."""
        daily, monthly = self.rows(first, last, vendors)
        return build_report(daily, monthly, period=period, first=first, last=last, threshold=threshold)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._conn.close()


def open_stats_db(path: Path, url: str | None, *, create: bool = True) -> StatsDB | PostgresStatsDB:
    """The statistics store: PostgreSQL when a URL is configured, else the SQLite file."""
    if url:
        return PostgresStatsDB(url, create=create)
    return StatsDB(path, create=create)


# ----------------------------------------------------------------------------------------------
# The accumulator (event loop) and its worker thread


class UsageStats:
    """Counts on the hot path, flushed to ``StatsDB`` on a worker thread.

    Lifecycle: ``await start()`` at application start (opens the file, starts the flush task),
    ``record``/``count_request`` per request, ``await close()`` at shutdown (final flush).
    ``record`` works before ``start`` too; what is recorded after ``close`` is dropped.
    If a flush fails (disk full), the counts are put back and retried at the next flush.
    """

    def __init__(self, database: Path, *, flush_interval: float = 60.0, clock: Clock = time.time,
                 tz: tzinfo | None = None, database_url: str | None = None) -> None:
        self.database = database
        self.database_url = database_url
        self.flush_interval = flush_interval
        self.tz = tz
        self._clock = clock
        self._pending: dict[tuple[str, str, str, str], list[int]] = {}
        self._vendors: set[str] = set()
        self._day = ""
        self._day_from = 0.0
        self._day_until = 0.0
        self._executor: ThreadPoolExecutor | None = None
        self._db: StatsDB | PostgresStatsDB | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._closed = False

    # -- hot path -----------------------------------------------------------------------------

    def record(self, vendor_id: str, *, kind: Kind, n: int = 1, bytes: int = 0, in_library: bool) -> None:
        """Count ``n`` events of ``kind`` (and ``bytes`` transferred) for ``vendor_id`` today.

        Raises ValueError for an unknown kind, a negative count or a vendor id that is not a
        configured id's syntax. Constant time: a clock read and a dictionary update.
        """
        if vendor_id not in self._vendors:
            # SECURITY: only identifier-shaped ids reach the file, never a path or a host.
            if not _VENDOR_ID.match(vendor_id):
                raise ValueError("vendor id must be a configured vendor id")
            self._vendors.add(vendor_id)
        if kind not in _KIND_SET or n < 0 or bytes < 0:
            raise ValueError("kind must be one of session/request/search/download; counts are not negative")
        if self._closed:
            return
        now = self._clock()
        if not self._day_from <= now < self._day_until:
            self._roll_day(now)
        key = (self._day, vendor_id, kind, "library" if in_library else "remote")
        cell = self._pending.get(key)
        if cell is None:
            self._pending[key] = [n, bytes]
        else:
            cell[0] += n
            cell[1] += bytes

    def count_request(self, vendor_id: str, path_and_query: str, *, patterns: CounterPatterns,
                      bytes: int = 0, in_library: bool, kinds: frozenset[Kind] | None = None) -> frozenset[Kind]:
        """Count one proxied request, plus a search and/or download when ``patterns`` say so.

        Returns the kinds recognised (for usage limits). ``kinds``, when the caller classified
        the request already (to check a usage limit before forwarding), skips classifying it
        again. The path is only classified, never kept.
        """
        if kinds is None:
            kinds = classify(path_and_query, patterns)
        self.record(vendor_id, kind="request", bytes=bytes, in_library=in_library)
        for kind in kinds:
            self.record(vendor_id, kind=kind, in_library=in_library)
        return kinds

    def _roll_day(self, now: float) -> None:
        today = day_of(now, self.tz)
        self._day = today.isoformat()
        self._day_from = _day_start(today, self.tz)
        self._day_until = _day_start(today + timedelta(days=1), self.tz)

    # -- worker thread ------------------------------------------------------------------------

    def _submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        if self._executor is None:
            # One thread, one connection: SQLite's connections are not for sharing, and a
            # single writer never contends with itself.
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="libproxy-stats")
        return asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await self._submit(fn)

    async def _open(self) -> StatsDB | PostgresStatsDB:
        if self._db is None:
            self._db = await self._run(lambda: open_stats_db(self.database, self.database_url))
        return self._db

    async def start(self) -> None:
        """Open (or create) the file and start the periodic flush."""
        await self._open()
        if self._task is None:
            self._stop = asyncio.Event()
            self._task = asyncio.create_task(self._flush_loop(self._stop), name="libproxy-stats-flush")

    async def _flush_loop(self, stop: asyncio.Event) -> None:
        # Stopped by an event rather than cancelled, so a flush in progress always completes.
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.flush_interval)
            try:
                await self.flush()
            except Exception as exc:
                log.error("statistics flush failed, will retry: %s", type(exc).__name__)

    async def flush(self) -> int:
        """Write the accumulated counts; returns how many (day, vendor, kind, place) cells."""
        if not self._pending:
            return 0
        db = await self._open()
        # Swapped on the loop thread: records made while the worker writes go to the new dict.
        batch, self._pending = self._pending, {}
        future = self._submit(lambda: db.add(batch))
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            # The worker carries on regardless: wait for its verdict so that the batch is
            # counted exactly once, then let the cancellation proceed.
            try:
                await future
            except Exception:
                self._restore(batch)
            raise
        except Exception:
            self._restore(batch)
            raise
        return len(batch)

    def _restore(self, batch: Batch) -> None:
        # Promise 6: no data lost. The counts go back for the next attempt.
        for key, (count, size) in batch.items():
            cell = self._pending.setdefault(key, [0, 0])
            cell[0] += count
            cell[1] += size

    async def purge(self, now: float, *, detail_retention: float, monthly_retention: float) -> int:
        """Flush, then delete rows older than the retentions; returns rows deleted."""
        await self.flush()
        first_day, first_month = cutoffs(now, detail_retention, monthly_retention, self.tz)
        db = await self._open()
        return await self._run(lambda: db.purge(first_day, first_month))

    async def report(self, first: date, last: date, *, period: Period = "month", threshold: int = 5,
                     vendors: Collection[str] = ()) -> Report:
        """Flush, then build the suppressed report for ``first``..``last`` (for the staff page)."""
        await self.flush()
        db = await self._open()
        return await self._run(lambda: db.report(first, last, period, threshold, vendors))

    async def close(self) -> None:
        """Stop the flush task, write what is left, close the file and the worker."""
        if self._task is not None:
            self._stop.set()
            await self._task
            self._task = None
        try:
            await self.flush()
        finally:
            self._closed = True
            if self._db is not None:
                db, self._db = self._db, None
                await self._run(db.close)
            if self._executor is not None:
                executor, self._executor = self._executor, None
                await asyncio.to_thread(executor.shutdown, True)
