"""``Records``: statistics, security memory and retention, opened and closed with the app.

Wiring (in app.py's lifecycle)::

    records = Records(config.records)          # clock injectable for tests
    records.retention.add("sessions", store_purge)   # optional: any store's purge(now) -> int
    await records.start()                      # after the state directory exists
    ...                                        # Services(..., records=records)
    await records.close()                      # in the finally block, before the store closes
"""

from __future__ import annotations

import time
from collections.abc import Callable

from proxy.records.guard import SignInGuard
from proxy.records.options import RecordsOptions
from proxy.records.retention import Retention
from proxy.records.security import SecurityMemory
from proxy.records.stats import UsageStats


class Records:
    """The three record keepers of one running proxy, sharing one clock."""

    def __init__(self, options: RecordsOptions, *, clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self.stats = UsageStats(options.database, flush_interval=options.flush_interval, clock=clock,
                                tz=options.tz, database_url=options.database_url)
        self.security = SecurityMemory(clock, options.security)
        self.guard = SignInGuard(self.security)
        self.retention = Retention(interval=options.purge_interval, clock=clock)
        self.retention.add("statistics", self._purge_statistics)
        self.retention.add("security", self.security.purge)

    async def _purge_statistics(self, now: float) -> int:
        return await self.stats.purge(now, detail_retention=self.options.detail_retention,
                                      monthly_retention=self.options.monthly_retention)

    async def start(self) -> None:
        """Open the statistics file, start flushing, purge once and start the schedule."""
        await self.stats.start()
        await self.retention.start()

    async def close(self) -> None:
        """Stop the schedule, then write the last counts and close the file."""
        await self.retention.close()
        await self.stats.close()
