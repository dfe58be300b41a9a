"""In-memory sessions on cachetools: one proxy instance, lost on restart (by design: nothing
about patrons is written to disk)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from cachetools import TTLCache

from proxy.membership import Membership
from proxy.sessions.base import Lifetimes, Session, Ticket, new_session_id
from proxy.sessions.jar import Cookie, Jar


class MemorySessionStore:
    def __init__(self, idle: float, lifetime: float, max_sessions: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.lifetimes = Lifetimes(idle, lifetime)
        self._clock = clock
        # The TTL cache drops sessions idle for longer than ``idle`` (each touch re-inserts);
        # the absolute lifetime is checked on read. ``maxsize`` bounds memory under a flood of
        # sign-ins: the least recently used session goes first.
        self._sessions: TTLCache[str, Session] = TTLCache(max_sessions, idle, timer=clock)
        # Tickets live a minute at most; each also carries its own deadline.
        self._tickets: TTLCache[str, tuple[Ticket, float]] = TTLCache(max_sessions, 60, timer=clock)

    async def create(self, membership: Membership) -> Session:
        now = self._clock()
        session = Session(new_session_id(), membership, created=now, last_seen=now)
        self._sessions[session.id] = session
        return session

    async def get(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if self.lifetimes.expired(session.created, session.last_seen, self._clock()):
            self._sessions.pop(session_id, None)
            return None
        return session

    async def set_cookies(self, session: Session, vendor_id: str, cookies: Sequence[Cookie], now: float) -> None:
        # The session object is the stored one: changing it is storing it.
        jar = session.jars.get(vendor_id)
        if jar is None:
            jar = session.jars[vendor_id] = Jar()
        for cookie in cookies:
            jar.apply(cookie, now)

    async def mark_visited(self, session: Session, vendor_id: str) -> bool:
        # No await between the test and the change: atomic on the event loop. The session may
        # be a copy (a caller's own): the stored one decides.
        stored = self._sessions.get(session.id, session)
        first = vendor_id not in stored.visited
        stored.visited.add(vendor_id)
        session.visited.add(vendor_id)
        return first

    async def touch(self, session: Session) -> None:
        now = self._clock()
        # Re-inserting refreshes the idle TTL; skip it when the last touch was very recent so
        # the hot path does not re-hash the cache on every request of a page load.
        if now - session.last_seen >= 1.0 and session.id in self._sessions:
            session.last_seen = now
            self._sessions[session.id] = session

    async def delete(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    async def delete_patron(self, patron_key: str) -> int:
        doomed = [sid for sid, s in self._sessions.items() if s.membership.key == patron_key]
        for sid in doomed:
            self._sessions.pop(sid, None)
        return len(doomed)

    async def add_ticket(self, ticket_id: str, ticket: Ticket, ttl: float) -> None:
        self._tickets[ticket_id] = (ticket, self._clock() + ttl)

    async def take_ticket(self, ticket_id: str) -> Ticket | None:
        found = self._tickets.pop(ticket_id, None)
        if found is None or found[1] < self._clock():
            return None
        return found[0]

    def purge(self, now: float | None = None) -> int:
        """Forget expired sessions and tickets now (reads forget them too; this is the schedule)."""
        now = self._clock() if now is None else now
        doomed = [sid for sid, s in self._sessions.items() if self.lifetimes.expired(s.created, s.last_seen, now)]
        for sid in doomed:
            self._sessions.pop(sid, None)
        idle = self._sessions.expire()  # the cache's own idle expiry, hidden from iteration
        self._tickets.expire()
        return len(doomed) + len(idle)

    async def count(self) -> int:
        self._sessions.expire()
        return len(self._sessions)

    async def close(self) -> None:
        self._sessions.clear()
        self._tickets.clear()
