"""The audit trail: which staff member did what, and when. Never any patron data.

One JSON object per line in ``<state_dir>/staff-audit.log`` (mode 0600), appended and never
edited in place: ``{"at": "2026-11-30T09:12:03Z", "who": "maria", "what": "vendor-check",
"detail": "ebsco"}``. ``detail`` only ever holds what a staff member chose among the
configuration's own names (a vendor id, a role, a count); callers never pass patron data, URL
paths or addresses, and ``record`` refuses details that do not look like a configuration name.
Cleared locks are recorded by kind only, not by their pseudonym: the pseudonym names nobody
today, but a year-long file is no place for anything derived from a card.

Purged by the retention schedule: lines older than ``[staff] audit_retention`` are dropped by
rewriting the file (to a temporary file, then renamed over it).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proxy.files import write_private

ACTIONS = {
    "sign-in": "signed in",
    "sign-in-refused": "a sign-in was refused",
    "sign-out": "signed out",
    "role-refused": "opened a page of the other role (refused)",
    "vendors-view": "viewed the vendors",
    "vendor-check": "tested a vendor",
    "vendor-lookup": "looked up which vendor covers a URL",
    "needed-hosts": "viewed needed hosts",
    "config-view": "viewed the configuration in force",
    "config-check": "checked a candidate configuration",
    "config-reload": "asked for a configuration reload",
    "health": "viewed health",
    "locks-view": "viewed sign-in locks and usage suspensions",
    "lock-clear": "cleared a lock or suspension",
    "stats-view": "viewed statistics",
    "stats-csv": "downloaded statistics as CSV",
    "privacy-view": "viewed the privacy page",
    "retention-view": "viewed retention in force",
    "records-request": "prepared a records-request statement",
    "audit-view": "viewed the audit trail",
}
# A vendor id, a role, a kind of lock, "ok"/"problems", a number: never free text.
_DETAIL = re.compile(r"^[A-Za-z0-9_.:-]{0,64}\Z")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: str
    who: str
    what: str
    detail: str

    @property
    def description(self) -> str:
        return ACTIONS.get(self.what, self.what)


class AuditTrail:
    def __init__(self, path: Path, retention: float, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.retention = retention
        self._clock = clock
        self._lock = asyncio.Lock()

    def _stamp(self, when: float) -> str:
        return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    async def record(self, who: str, what: str, detail: str = "") -> None:
        """Append one line. ``what`` must be one of ``ACTIONS``; ``detail`` a plain name."""
        if what not in ACTIONS:
            raise ValueError(f"unknown audit action {what!r}")
        # SECURITY: the trail must never become a record of patrons: anything that is not a
        # short configuration-style name (a URL, an address, a card) is dropped, not written.
        if not _DETAIL.match(detail):
            detail = "(withheld)"
        line = json.dumps({"at": self._stamp(self._clock()), "who": who, "what": what, "detail": detail},
                          ensure_ascii=True)
        async with self._lock:
            await asyncio.to_thread(self._append, line)

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # SECURITY: 0600 at creation; O_APPEND so no line overwrites another.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    async def recent(self, limit: int = 200) -> list[AuditEntry]:
        """The newest ``limit`` entries, newest first."""
        async with self._lock:
            lines = await asyncio.to_thread(self._read)
        entries: list[AuditEntry] = []
        for line in reversed(lines):
            entry = _parse(line)
            if entry is not None:
                entries.append(entry)
            if len(entries) >= limit:
                break
        return entries

    def _read(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []

    async def purge(self, now: float | None = None) -> int:
        """Drop lines older than the retention; returns how many went (for the retention log)."""
        cutoff = self._stamp((self._clock() if now is None else now) - self.retention)
        async with self._lock:
            return await asyncio.to_thread(self._purge, cutoff)

    def _purge(self, cutoff: str) -> int:
        lines = self._read()
        # ISO timestamps in UTC with a fixed width compare correctly as text.
        kept = [line for line in lines if (entry := _parse(line)) is not None and entry.at >= cutoff]
        if len(kept) == len(lines):
            return 0
        write_private(self.path, "".join(line + "\n" for line in kept))
        return len(lines) - len(kept)


def _parse(line: str) -> AuditEntry | None:
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    fields = [data.get(k) for k in ("at", "who", "what", "detail")]
    if not all(isinstance(f, str) for f in fields):
        return None
    at, who, what, detail = (str(f) for f in fields)
    return AuditEntry(at, who, what, detail)
