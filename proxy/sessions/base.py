"""What a session is, and the interface every session store implements.

A ``Session`` holds what the proxy needs to serve a patron and nothing that names them: their
``Membership`` (groups, home library, keyed-hash key), timestamps, the vendor cookies kept for
them on the server (so vendor cookies never reach the browser) and which vendors they opened
(for the per-vendor session count and the patron's own session page).

Stores change a session only through explicit operations (``touch``, ``set_cookies``,
``mark_visited``): a store shared by several instances writes each change on its own, never the
whole session, so concurrent requests of one patron cannot undo each other's changes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import MutableMapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from proxy.membership import Membership
from proxy.sessions.jar import Cookie, Jar

# 256 bits from the OS generator, URL-safe: not guessable, not derived from anything.
SESSION_ID_BYTES = 32


def new_session_id() -> str:
    return secrets.token_urlsafe(SESSION_ID_BYTES)


@dataclass(frozen=True, slots=True)
class Lifetimes:
    """The one expiry rule of sessions: ``idle`` seconds without use, or ``lifetime`` seconds
    after sign-in however active, whichever comes first."""

    idle: float
    lifetime: float

    def ends_at(self, created: float, last_seen: float) -> float:
        return min(created + self.lifetime, last_seen + self.idle)

    def expired(self, created: float, last_seen: float, now: float) -> bool:
        return now >= self.ends_at(created, last_seen)


@dataclass
class Session:
    id: str
    membership: Membership
    created: float
    last_seen: float
    # Vendor cookies, by vendor id. Read freely; changed only through the store (which may
    # hand out a mapping that reads each vendor's jar only when it is asked for).
    jars: MutableMapping[str, Jar] = field(default_factory=dict)
    # Vendors opened in this session, by id.
    visited: set[str] = field(default_factory=set)

    def jar(self, vendor_id: str) -> Jar | None:
        return self.jars.get(vendor_id)

    def to_dict(self) -> dict[str, Any]:
        """Everything the session holds, as plain data (for the privacy tests and dumps)."""
        return {
            "id": self.id,
            "membership": self.membership.to_dict(),
            "created": self.created,
            "last_seen": self.last_seen,
            "visited": sorted(self.visited),
            "jars": {vendor: [asdict(c) for c in jar] for vendor, jar in self.jars.items()},
        }


@dataclass(frozen=True, slots=True)
class Ticket:
    """A one-time sign-on ticket: lets the proxied hosts of ``chain`` adopt a session in turn,
    ending at ``final``, in the browser holding the binding cookie ``bind``.

    Everything in it is built by the proxy from its own vendor table: no URL in it ever comes
    from a request."""

    session_id: str
    final: str
    chain: tuple[str, ...]
    bind: str

    def to_json(self) -> str:
        return json.dumps([self.session_id, self.final, list(self.chain), self.bind])

    @classmethod
    def from_json(cls, text: str) -> Ticket | None:
        try:
            session_id, final, chain, bind = json.loads(text)
            return cls(str(session_id), str(final), tuple(str(c) for c in chain), str(bind))
        except (ValueError, TypeError):
            return None


class SessionStore(Protocol):
    """Where sessions live. Implementations enforce ``Lifetimes`` themselves.

    ``get`` returns None for unknown *and* expired sessions (and forgets expired ones);
    ``touch`` records activity. Errors reaching a remote store raise ``StoreUnavailable``.
    """

    lifetimes: Lifetimes

    async def create(self, membership: Membership) -> Session: ...

    async def get(self, session_id: str) -> Session | None: ...

    async def touch(self, session: Session) -> None: ...

    async def set_cookies(self, session: Session, vendor_id: str, cookies: Sequence[Cookie], now: float) -> None:
        """Apply cookies a vendor set (an expired one removes its namesake) to the session's jar
        for that vendor, in ``session`` and in the store, one cookie at a time."""

    async def mark_visited(self, session: Session, vendor_id: str) -> bool:
        """Remember that the session opened this vendor; True only for the call that recorded it
        first. Atomic in the store: of concurrent calls for one session and vendor (each with
        its own copy of the session, on one instance or several) exactly one returns True, so
        the statistics count a session's first visit once."""

    async def delete(self, session_id: str) -> None: ...

    async def delete_patron(self, patron_key: str) -> int:
        """End every session of one patron ("sign out everywhere"); returns how many ended."""

    async def add_ticket(self, ticket_id: str, ticket: Ticket, ttl: float) -> None:
        """Remember a one-time sign-on ticket for ``ttl`` seconds."""

    async def take_ticket(self, ticket_id: str) -> Ticket | None:
        """Consume a ticket: the ticket once, None ever after or when expired."""

    def purge(self, now: float | None = None) -> int:
        """Forget expired sessions and tickets now; returns how many (the retention schedule
        calls it; a store whose entries expire by themselves returns 0)."""

    async def count(self) -> int: ...

    async def close(self) -> None: ...
