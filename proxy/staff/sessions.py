"""Staff sessions: in memory only, random ids, an idle timeout and a ceiling, a CSRF token each.

A staff session is never stored with the patrons' sessions (a different store, a different
cookie), so nothing a staff member does can be mixed with a patron's state, and a restart
signs every staff member out.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_SESSIONS = 200  # a library has a handful of staff; a flood of sign-ins evicts the oldest


@dataclass(slots=True)
class StaffSession:
    id: str
    user: str
    role: str
    created: float
    last_seen: float
    # SECURITY: one random token per session, sent in every form; a POST without it is refused.
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))


class StaffSessions:
    def __init__(self, idle: float, lifetime: float, clock: Callable[[], float] = time.time) -> None:
        self.idle = idle
        self.lifetime = lifetime
        self._clock = clock
        self._sessions: dict[str, StaffSession] = {}

    def create(self, user: str, role: str) -> StaffSession:
        now = self._clock()
        self.purge(now)
        while len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
            del self._sessions[oldest.id]
        # SECURITY: 256 random bits; a new id at every sign-in, so a planted id is worth nothing.
        session = StaffSession(secrets.token_urlsafe(32), user, role, now, now)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> StaffSession | None:
        """The live session, its idle clock renewed; None when unknown or expired."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if self._expired(session, now):
            del self._sessions[session_id]
            return None
        session.last_seen = now
        return session

    def _expired(self, session: StaffSession, now: float) -> bool:
        return now - session.last_seen >= self.idle or now - session.created >= self.lifetime

    def delete(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def purge(self, now: float | None = None) -> int:
        current = self._clock() if now is None else now
        gone = [s.id for s in self._sessions.values() if self._expired(s, current)]
        for session_id in gone:
            del self._sessions[session_id]
        return len(gone)

    def __len__(self) -> int:
        return len(self._sessions)
