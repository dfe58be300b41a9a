"""Retention: every store is purged on a schedule, and on demand.

``Retention`` is a background task that runs each registered purge function at start and then
every ``interval``: statistics detail and monthly rows past their retention, security counters
past their window and key rotation, and whatever else registers (the session store's expiry,
for one). Each function gets the current time from the injected clock and returns how many
items it removed; one failing does not stop the others.

``purge_now(options)`` is the on-demand part for ``python -m proxy purge``: it purges the
statistics file directly. The in-memory stores (sessions in memory, security memory) belong to
the running server; they are purged by its own ``Retention`` and vanish when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable

from proxy.records.options import RecordsOptions
from proxy.records.stats import cutoffs, open_stats_db

log = logging.getLogger("libproxy.records")

Clock = Callable[[], float]
PurgeFn = Callable[[float], "Awaitable[int] | int"]


class Retention:
    """Runs purge functions on a schedule. ``start`` at application start, ``close`` at shutdown."""

    def __init__(self, *, interval: float = 3600.0, clock: Clock = time.time) -> None:
        self.interval = interval
        self._clock = clock
        self._purges: dict[str, PurgeFn] = {}
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.last_run: dict[str, int] = {}

    def add(self, name: str, purge: PurgeFn) -> None:
        """Register ``purge(now) -> removed`` (sync or async) under a name used in the log."""
        self._purges[name] = purge

    async def run_once(self) -> dict[str, int]:
        """Run every purge now; returns removed counts by name (failed purges are left out and
        logged by name and exception type)."""
        now = self._clock()
        removed: dict[str, int] = {}
        for name, purge in self._purges.items():
            try:
                result = purge(now)
                removed[name] = int(await result) if inspect.isawaitable(result) else int(result)
            except Exception as exc:
                log.error("purge of %s failed: %s", name, type(exc).__name__, extra={"event": "purge-failed"})
        self.last_run = removed
        if any(removed.values()):
            summary = ", ".join(f"{name} {count}" for name, count in removed.items())
            log.info("purged: %s", summary, extra={"event": "purge"})
        return removed

    async def start(self) -> None:
        """Purge once now (anything that expired while the proxy was down), then on schedule."""
        if self._task is None:
            await self.run_once()
            self._stop = asyncio.Event()
            self._task = asyncio.create_task(self._loop(self._stop), name="libproxy-retention")

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
            if not stop.is_set():
                await self.run_once()

    async def close(self) -> None:
        if self._task is not None:
            self._stop.set()
            await self._task
            self._task = None


def purge_now(options: RecordsOptions, *, clock: Clock = time.time) -> dict[str, int]:
    """Purge the statistics file now (synchronous, for the command line); returns removed counts.

    A missing file is not an error: there is nothing to purge.
    """
    try:
        db = open_stats_db(options.database, options.database_url, create=False)
    except FileNotFoundError:
        return {"statistics": 0}
    try:
        first_day, first_month = cutoffs(clock(), options.detail_retention, options.monthly_retention, options.tz)
        return {"statistics": db.purge(first_day, first_month)}
    finally:
        db.close()
