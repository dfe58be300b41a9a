"""The console's own parts, kept on the staff application under one typed key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from proxy.staff.accounts import StaffAccounts
from proxy.staff.audit import AuditTrail
from proxy.staff.render import StaffPages
from proxy.staff.sessions import StaffSession, StaffSessions

if TYPE_CHECKING:
    from proxy.staff.directory import StaffDirectory


@dataclass
class Console:
    main: web.Application  # the public application: its parts are read, never changed here
    accounts: StaffAccounts
    sessions: StaffSessions
    audit: AuditTrail
    pages: StaffPages
    directory: StaffDirectory | None = None  # [staff.ldap]: staff from the library's directory
    # Failed staff sign-ins per name (name -> times), in memory: staff names are not patron data.
    failures: dict[str, list[float]] = field(default_factory=dict)


CONSOLE = web.AppKey("staff_console", Console)
STAFF_SESSION = web.RequestKey("libproxy.staff_session", StaffSession)


def current(request: web.Request) -> StaffSession:
    """The signed-in staff session (the middleware guarantees one on every guarded page)."""
    return request[STAFF_SESSION]
