"""Sessions in Redis, for several proxy instances behind one load balancer.

Keys hold a hash of the session id, never the id itself, so a copy of the Redis data does not
hand out working sessions. Every key carries a TTL (idle timeout, capped by the remaining
absolute lifetime), so Redis purges abandoned sessions by itself.

    libproxy:s:<sha256(session id)>   the session as JSON (groups, keyed-hash key, times)
    libproxy:j:<sha256(session id)>   hash: one field per vendor cookie ("c", vendor, name,
                                      domain, path) and per vendor opened ("v", vendor)
    libproxy:p:<patron key>           set of that patron's session hashes ("sign out everywhere")
    libproxy:t:<sha256(ticket)>       one-time sign-on tickets

Each vendor cookie is its own field of the jar hash, written with HSET/HDEL: two responses
arriving at once for one patron (on one instance or two) each add their cookie, and neither
overwrites the other's, which a read-change-write of the whole session would.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from proxy.errors import StoreUnavailable
from proxy.membership import Membership
from proxy.sessions.base import Lifetimes, Session, Ticket, new_session_id
from proxy.sessions.jar import Cookie, Jar

PREFIX = "libproxy:"
_SEP = "\t"  # vendor ids, cookie names and domains never contain a tab
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
        self.lifetimes = Lifetimes(idle, lifetime)
        self._clock = clock

    def _ttl(self, session: Session, now: float) -> int:
        return max(1, int(self.lifetimes.ends_at(session.created, now) - now))

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(type(exc).__name__) from None

    async def _write(self, session: Session, now: float) -> None:
        ttl = self._ttl(session, now)
        digest = _digest(session.id)
        async with self._redis.pipeline(transaction=True) as pipe:
            # SECURITY: the store holds a hash of the id, never the id.
            record = {"membership": session.membership.to_dict(), "created": session.created,
                      "last_seen": session.last_seen}
            pipe.set(PREFIX + "s:" + digest, json.dumps(record), ex=ttl)
            pipe.expire(PREFIX + "j:" + digest, ttl)
            if session.membership.key:
                index = PREFIX + "p:" + session.membership.key
                pipe.sadd(index, digest)
                pipe.expire(index, int(self.lifetimes.lifetime))
            await self._call(pipe.execute())

    async def create(self, membership: Membership) -> Session:
        now = self._clock()
        session = Session(new_session_id(), membership, created=now, last_seen=now)
        await self._write(session, now)
        return session

    async def get(self, session_id: str) -> Session | None:
        digest = _digest(session_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(PREFIX + "s:" + digest)
            pipe.hgetall(PREFIX + "j:" + digest)
            raw, fields = await self._call(pipe.execute())
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            session = Session(
                id=session_id,  # stored hashed; the caller holds the real id
                membership=Membership.from_dict(data["membership"]),
                created=float(data["created"]), last_seen=float(data["last_seen"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        if self.lifetimes.expired(session.created, session.last_seen, self._clock()):
            await self.delete(session_id)
            return None
        _load_jars(session, fields)
        return session

    async def set_cookies(self, session: Session, vendor_id: str, cookies: Sequence[Cookie], now: float) -> None:
        jar = session.jars.get(vendor_id)
        if jar is None:
            jar = session.jars[vendor_id] = Jar()
        key = PREFIX + "j:" + _digest(session.id)
        async with self._redis.pipeline(transaction=True) as pipe:
            for cookie in cookies:
                if cookie.expired(now):
                    pipe.hdel(key, _cookie_field(vendor_id, cookie.key))
                else:
                    pipe.hset(key, _cookie_field(vendor_id, cookie.key), cookie.to_json())
                for dropped in jar.apply(cookie, now):
                    pipe.hdel(key, _cookie_field(vendor_id, dropped))
            pipe.expire(key, self._ttl(session, now))
            await self._call(pipe.execute())

    async def mark_visited(self, session: Session, vendor_id: str) -> None:
        session.visited.add(vendor_id)
        key = PREFIX + "j:" + _digest(session.id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, "v" + _SEP + vendor_id, "1")
            pipe.expire(key, self._ttl(session, self._clock()))
            await self._call(pipe.execute())

    async def touch(self, session: Session) -> None:
        now = self._clock()
        if now - session.last_seen >= TOUCH_EVERY:
            session.last_seen = now
            await self._write(session, now)

    async def delete(self, session_id: str) -> None:
        digest = _digest(session_id)
        await self._call(self._redis.delete(PREFIX + "s:" + digest, PREFIX + "j:" + digest))

    async def delete_patron(self, patron_key: str) -> int:
        index = PREFIX + "p:" + patron_key
        members = await self._call(self._redis.smembers(index))
        if not members:
            return 0
        ended = await self._call(self._redis.delete(*(PREFIX + "s:" + m for m in members)))
        await self._call(self._redis.delete(*(PREFIX + "j:" + m for m in members), index))
        return int(ended)

    async def add_ticket(self, ticket_id: str, ticket: Ticket, ttl: float) -> None:
        await self._call(self._redis.set(PREFIX + "t:" + _digest(ticket_id), ticket.to_json(), ex=max(1, int(ttl))))

    async def take_ticket(self, ticket_id: str) -> Ticket | None:
        raw = await self._call(self._redis.getdel(PREFIX + "t:" + _digest(ticket_id)))
        return None if raw is None else Ticket.from_json(raw)

    def purge(self, now: float | None = None) -> int:
        # Every key carries a TTL: Redis forgets expired sessions and tickets by itself.
        return 0

    async def count(self) -> int:
        total = 0
        async for _ in self._redis.scan_iter(match=PREFIX + "s:*", count=1000):
            total += 1
        return total

    async def close(self) -> None:
        await self._redis.aclose()


def _cookie_field(vendor_id: str, key: tuple[str, str, str]) -> str:
    return _SEP.join(("c", vendor_id, *key))


def _load_jars(session: Session, fields: dict[str, str]) -> None:
    """Fill ``session``'s jars and visited vendors from the fields of its jar hash."""
    found: dict[str, list[Cookie]] = {}
    for name, value in fields.items():
        parts = name.split(_SEP)
        if parts[0] == "v" and len(parts) == 2:
            session.visited.add(parts[1])
        elif parts[0] == "c" and len(parts) == 5:
            cookie = Cookie.from_json(value)
            if cookie is not None:
                found.setdefault(parts[1], []).append(cookie)
    for vendor_id, cookies in found.items():
        session.jars[vendor_id] = Jar(cookies)
