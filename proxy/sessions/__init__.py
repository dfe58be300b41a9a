"""Session storage behind one interface, chosen by ``[sessions] store``.

A ``Session`` holds what the proxy needs to serve a patron and nothing that names them: their
``Membership`` (groups, home library, keyed-hash key), timestamps, and the vendor cookies kept
for them on the server (so vendor cookies never reach the browser).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from proxy.membership import Membership

if TYPE_CHECKING:
    from proxy.config import SessionsConfig

# 256 bits from the OS generator, URL-safe: not guessable, not derived from anything.
SESSION_ID_BYTES = 32


def new_session_id() -> str:
    return secrets.token_urlsafe(SESSION_ID_BYTES)


@dataclass
class Session:
    id: str
    membership: Membership
    created: float
    last_seen: float
    # Vendor cookies, by vendor id: a list of cookie records (see proxy/forward/cookies.py).
    jars: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "membership": self.membership.to_dict(),
            "created": self.created,
            "last_seen": self.last_seen,
            "jars": self.jars,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Session:
        return cls(
            id=str(data["id"]),
            membership=Membership.from_dict(data["membership"]),
            created=float(data["created"]),
            last_seen=float(data["last_seen"]),
            jars={str(k): list(v) for k, v in dict(data.get("jars", {})).items()},
        )


class SessionStore(Protocol):
    """Where sessions live. Implementations enforce idle and absolute expiry themselves.

    ``get`` returns None for unknown *and* expired sessions (and forgets expired ones);
    ``touch`` records activity; ``save`` writes a changed session (e.g. its cookie jar).
    Errors reaching a remote store raise ``StoreUnavailable``.
    """

    async def create(self, membership: Membership) -> Session: ...

    async def get(self, session_id: str) -> Session | None: ...

    async def save(self, session: Session) -> None: ...

    async def touch(self, session: Session) -> None: ...

    async def delete(self, session_id: str) -> None: ...

    async def delete_patron(self, patron_key: str) -> int:
        """End every session of one patron ("sign out everywhere"); returns how many ended."""

    async def add_ticket(self, ticket: str, session_id: str, target: str, ttl: float) -> None:
        """Remember a one-time sign-on ticket that lets a proxied host adopt the session."""

    async def take_ticket(self, ticket: str) -> tuple[str, str] | None:
        """Consume a ticket: (session id, target) once, None ever after or when expired."""

    async def count(self) -> int: ...

    async def close(self) -> None: ...


def make_store(config: SessionsConfig) -> SessionStore:
    """The one factory for session stores."""
    if config.store == "memory":
        from proxy.sessions.memory import MemorySessionStore

        return MemorySessionStore(config.idle, config.lifetime, config.max_sessions)
    if config.store == "redis":
        from proxy.sessions.redis import RedisSessionStore

        assert config.redis_url is not None
        return RedisSessionStore(config.redis_url, config.idle, config.lifetime)
    raise ValueError(f"session store {config.store!r} is not available in this version")
