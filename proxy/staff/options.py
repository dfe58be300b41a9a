"""The ``[staff]`` table: staff accounts, staff sessions and the audit trail's retention.

::

    [staff]
    accounts = "staff.toml"        # default: <state_dir>/staff-accounts.toml
    idle = "20m"                   # a staff session ends after this without use
    lifetime = "8h"                # ...and after this at most (one working day)
    audit_retention = "365d"       # audit lines older than this are purged

Why these defaults: staff sessions open a console that can clear locks and reload the
configuration, so they end sooner than a patron's (20 minutes idle). The audit trail holds no
patron data (only staff names and actions), so a year is kept: long enough to answer "who
changed what" at the annual review, short enough that it is still purged on a schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.settings import Reader

DAY = 86400.0


@dataclass(frozen=True)
class StaffOptions:
    """Parsed ``[staff]`` table. ``accounts`` None means ``<state_dir>/staff-accounts.toml``."""

    accounts: Path | None = None
    idle: float = 20 * 60.0
    lifetime: float = 8 * 3600.0
    audit_retention: float = 365 * DAY

    def accounts_path(self, state_dir: Path) -> Path:
        return self.accounts if self.accounts is not None else state_dir / "staff-accounts.toml"


def parse_staff_options(reader: Reader) -> StaffOptions:
    """Read ``root.sub("staff")``; problems go to the reader. Calls ``unknown_keys`` itself."""
    options = StaffOptions(
        accounts=reader.path("accounts", ""),
        idle=reader.duration("idle", "20m"),
        lifetime=reader.duration("lifetime", "8h"),
        audit_retention=reader.duration("audit_retention", "365d"),
    )
    if options.idle > options.lifetime:
        reader.bad("idle", "must not be longer than lifetime")
    if options.lifetime > 7 * DAY:
        reader.bad("lifetime", "must be at most 7 days (a staff session is a working session)")
    reader.unknown_keys()
    return options
