"""The ``[staff]`` table: staff accounts, staff sessions and the audit trail's retention.

::

    [staff]
    accounts = "staff.toml"        # default: <state_dir>/staff-accounts.toml
    idle = "20m"                   # a staff session ends after this without use
    lifetime = "8h"                # ...and after this at most (one working day)
    audit_retention = "365d"       # audit lines older than this are purged
    ldap_roles = { it = "libproxy-it", director = "libproxy-director" }

    [staff.ldap]                   # optional: staff sign in with the directory too
    # the same keys as [patrons.ldap] (proxy/patrons/ldap.py); group_rule (or memberOf)
    # gives the groups named in ldap_roles

Local accounts keep working when a directory is configured (a way in when it is down). A
directory entry signs in only when exactly one role's group is among its groups.

Why these defaults: staff sessions open a console that can clear locks and reload the
configuration, so they end sooner than a patron's (20 minutes idle). The audit trail holds no
patron data (only staff names and actions), so a year is kept: long enough to answer "who
changed what" at the annual review, short enough that it is still purged on a schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.settings import Reader

DAY = 86400.0
ROLE_NAMES = ("it", "director")


@dataclass(frozen=True)
class StaffOptions:
    """Parsed ``[staff]`` table. ``accounts`` None means ``<state_dir>/staff-accounts.toml``."""

    accounts: Path | None = None
    idle: float = 20 * 60.0
    lifetime: float = 8 * 3600.0
    audit_retention: float = 365 * DAY
    ldap: Any = None  # LdapOptions of [staff.ldap], or None: local accounts only
    ldap_roles: Mapping[str, str] = field(default_factory=dict)  # role -> group from the directory

    def accounts_path(self, state_dir: Path) -> Path:
        return self.accounts if self.accounts is not None else state_dir / "staff-accounts.toml"


def parse_staff_options(reader: Reader) -> StaffOptions:
    """Read ``root.sub("staff")``; problems go to the reader. Calls ``unknown_keys`` itself."""
    ldap = None
    ldap_roles = reader.str_map("ldap_roles")
    if reader.has("ldap"):
        # Loaded only when used: ldap3 is not needed by a proxy without a directory.
        from proxy.patrons.ldap import parse_options as parse_ldap_options

        ldap = parse_ldap_options(reader)
        if not ldap_roles:
            reader.bad("ldap_roles", 'must name the directory group of each role, like { it = "libproxy-it" }')
    elif ldap_roles:
        reader.bad("ldap_roles", "is set but there is no [staff.ldap] table")
    for role in ldap_roles:
        if role not in ROLE_NAMES:
            reader.bad("ldap_roles", f"{role!r} is not a role (roles: {', '.join(ROLE_NAMES)})")
    options = StaffOptions(
        accounts=reader.path("accounts", ""),
        idle=reader.duration("idle", "20m"),
        lifetime=reader.duration("lifetime", "8h"),
        audit_retention=reader.duration("audit_retention", "365d"),
        ldap=ldap,
        ldap_roles=dict(ldap_roles),
    )
    if options.idle > options.lifetime:
        reader.bad("idle", "must not be longer than lifetime")
    if options.lifetime > 7 * DAY:
        reader.bad("lifetime", "must be at most 7 days (a staff session is a working session)")
    reader.unknown_keys(("ldap",))
    return options
