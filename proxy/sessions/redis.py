"""Sessions in Redis, for several proxy instances behind one load balancer.

Keys hold a hash of the session id, never the id itself, so a copy of the Redis data does not
hand out working sessions. Every key carries a TTL (idle timeout, capped by the remaining
absolute lifetime), so Redis purges abandoned sessions by itself.

    libproxy:s:<sha256(session id)>   the session as JSON (groups, keyed-hash key, jar)
    libproxy:p:<patron key>           set of that patron's session hashes ("sign out everywhere")
    libproxy:t:<sha256(ticket)>       one-time sign-on tickets
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from proxy.errors import StoreUnavailable
from proxy.membership import Membership
from proxy.sessions import Session, new_session_id

PREFIX = "libproxy:"
# Activity is written back at most this often: a page load makes dozens of requests.
TOUCH_EVERY = 10.0


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class RedisSessionStore:
    def __init__(self, url: str, idle: float, lifetime: float, clock: Callable[[], float] = time.time,
                 timeout: float = 2.0) -> None:
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True,
        )
        self._idle = idle
        self._lifetime = lifetime
        self._clock = clock

    def _ttl(self, session: Session, now: float) -> int:
        remaining = session.created + self._lifetime - now
        return max(1, int(min(self._idle, remaining)))

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from None

    async def _write(self, session: Session, now: float) -> None:
        ttl = self._ttl(session, now)
        async with self._redis.pipeline(transaction=True) as pipe:
            record = session.to_dict()
            del record["id"]  # SECURITY: the store holds a hash of the id, never the id
            pipe.set(PREFIX + "s:" + _digest(session.id), json.dumps(record), ex=ttl)
            if session.membership.key:
                index = PREFIX + "p:" + session.membership.key
                pipe.sadd(index, _digest(session.id))
                pipe.expire(index, int(self._lifetime))
            await self._call(pipe.execute())

    async def create(self, membership: Membership) -> Session:
        now = self._clock()
        session = Session(new_session_id(), membership, created=now, last_seen=now)
        await self._write(session, now)
        return session

    async def get(self, session_id: str) -> Session | None:
        raw = await self._call(self._redis.get(PREFIX + "s:" + _digest(session_id)))
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            data["id"] = session_id  # stored hashed; the caller holds the real id
            session = Session.from_dict(data)
        except (ValueError, KeyError, TypeError):
            return None
        now = self._clock()
        if now - session.created >= self._lifetime or now - session.last_seen >= self._idle:
            await self.delete(session_id)
            return None
        return session

    async def save(self, session: Session) -> None:
        await self._write(session, self._clock())

    async def touch(self, session: Session) -> None:
        now = self._clock()
        if now - session.last_seen >= TOUCH_EVERY:
            session.last_seen = now
            await self._write(session, now)

    async def delete(self, session_id: str) -> None:
        await self._call(self._redis.delete(PREFIX + "s:" + _digest(session_id)))

    async def delete_patron(self, patron_key: str) -> int:
        index = PREFIX + "p:" + patron_key
        members = await self._call(self._redis.smembers(index))
        if not members:
            return 0
        removed = await self._call(self._redis.delete(*(PREFIX + "s:" + m for m in members), index))
        return max(0, int(removed) - 1)

    async def add_ticket(self, ticket: str, session_id: str, target: str, ttl: float) -> None:
        value = json.dumps([session_id, target])
        await self._call(self._redis.set(PREFIX + "t:" + _digest(ticket), value, ex=max(1, int(ttl))))

    async def take_ticket(self, ticket: str) -> tuple[str, str] | None:
        raw = await self._call(self._redis.getdel(PREFIX + "t:" + _digest(ticket)))
        if raw is None:
            return None
        session_id, target = json.loads(raw)
        return str(session_id), str(target)

    async def count(self) -> int:
        total = 0
        async for _ in self._redis.scan_iter(match=PREFIX + "s:*", count=1000):
            total += 1
        return total

    async def close(self) -> None:
        await self._redis.aclose()
