"""The ``[records]`` table: where statistics live, how long each record is kept, suppression.

::

    [records]
    database = "var/stats.sqlite3"   # default: <state_dir>/stats.sqlite3
    database_url = "env:LIBPROXY_STATS_URL"  # PostgreSQL for several instances (pgstats.py)
    threshold = 5                    # counts 1..4 print as "<5" in every report
    detail_retention = "90d"         # per-day rows
    monthly_retention = "1100d"      # per-month rows (three years of annual reports)
    flush_interval = "5s"            # how often counts reach the store (a crash loses at most this)
    purge_interval = "1h"            # how often the retention task runs
    timezone = ""                    # IANA name for day boundaries; "" = the server's zone

    [records.security]               # see security.py
    rotate_keys = "1d"
    failure_window = "15m"
    max_failures = 10
    client_max_failures = 50
    global_max_failures = 0
    usage_limits = { download = "200/1h" }   # none by default
    max_entries = 100000

Why these retentions: the statistics hold no patron key, address, URL or time of day, so they
cannot be linked to anyone; they are still purged because the policy purges on a schedule. Daily
rows are kept 90 days (long enough to compare with a vendor's monthly COUNTER report and to
answer "what happened last week"), monthly rows 1100 days (three annual reports to the State
Library, CGS 11-25(a), and year-on-year comparison). What *is* linkable to a card for a while,
the security memory, lives in memory only and is unreachable within two key rotations (2 days).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from proxy.records.security import SecurityOptions, parse_security_options

if TYPE_CHECKING:
    from proxy.settings import Reader

DAY = 86400.0
MIN_THRESHOLD = 2  # 1 would switch suppression off, which promise 5 does not allow


@dataclass(frozen=True)
class RecordsOptions:
    """Parsed ``[records]`` table; see the module docstring for meanings and defaults."""

    database: Path
    threshold: int = 5
    # PostgreSQL instead of the file, for several instances ("env:NAME" or "file:PATH" holding
    # a postgresql:// URL); None: the SQLite file.
    database_url: str | None = None
    detail_retention: float = 90 * DAY
    monthly_retention: float = 1100 * DAY
    flush_interval: float = 5.0
    purge_interval: float = 3600.0
    timezone: str = ""
    security: SecurityOptions = field(default_factory=SecurityOptions)

    @property
    def tz(self) -> tzinfo | None:
        """The zone whose midnight ends a statistics day; None is the server's local zone."""
        return ZoneInfo(self.timezone) if self.timezone else None


def default_options(state_dir: Path) -> RecordsOptions:
    """The options used when the configuration has no ``[records]`` table."""
    return RecordsOptions(database=state_dir / "stats.sqlite3")


def parse_options(reader: Reader, *, state_dir: Path) -> RecordsOptions:
    """Read the ``[records]`` table (``root.sub("records")``) and its ``security`` sub-table.

    Problems are recorded on the reader, never raised. The caller calls
    ``reader.unknown_keys()`` afterwards, as for every other table (``security`` counts as seen).
    """
    database = reader.path("database", "") or state_dir / "stats.sqlite3"
    timezone = reader.str("timezone", "")
    if timezone:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            reader.bad("timezone", f"is not a known time zone name (like \"America/New_York\"): {timezone!r}")
            timezone = ""
    database_url = reader.secret("database_url")
    if database_url is not None:
        if not database_url.startswith(("postgresql://", "postgres://")):
            reader.bad("database_url", "must hold a postgresql:// URL")
        try:
            import psycopg  # noqa: F401
        except ImportError:
            reader.bad("database_url", 'needs the psycopg package: pip install "libproxy[postgres]"')
    options = RecordsOptions(
        database=database,
        database_url=database_url,
        threshold=reader.int("threshold", 5, minimum=MIN_THRESHOLD, maximum=100),
        detail_retention=reader.duration("detail_retention", "90d"),
        monthly_retention=reader.duration("monthly_retention", "1100d"),
        flush_interval=reader.duration("flush_interval", "5s"),
        purge_interval=reader.duration("purge_interval", "1h"),
        timezone=timezone,
        security=parse_security_options(reader.sub("security")),
    )
    if options.monthly_retention < options.detail_retention:
        reader.bad("monthly_retention", "must not be shorter than detail_retention")
    if options.flush_interval > options.purge_interval:
        reader.bad("flush_interval", "must not be longer than purge_interval")
    return options
