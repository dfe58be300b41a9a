"""Session storage behind one interface (``base.py``), chosen by ``[sessions] store``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.sessions.base import Lifetimes, Session, SessionStore, Ticket, new_session_id
from proxy.sessions.jar import Cookie, Jar, parse_set_cookie

if TYPE_CHECKING:
    from proxy.config import SessionsConfig

__all__ = ["Cookie", "Jar", "Lifetimes", "Session", "SessionStore", "Ticket", "make_store", "new_session_id",
           "parse_set_cookie"]


def make_store(config: SessionsConfig) -> SessionStore:
    """The one factory for session stores."""
    if config.store == "memory":
        from proxy.sessions.memory import MemorySessionStore

        return MemorySessionStore(config.idle, config.lifetime, config.max_sessions)
    if config.store == "redis":
        from proxy.sessions.redis import RedisSessionStore

        assert config.redis_url is not None
        return RedisSessionStore(config.redis_url, config.idle, config.lifetime, timeout=config.redis_timeout,
                                 pool_size=config.redis_pool, pool_wait=config.redis_wait)
    raise ValueError(f"session store {config.store!r} is not available in this version")
