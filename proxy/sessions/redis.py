"""Sessions in Redis, for several proxy instances behind one load balancer.

Keys hold a hash of the session id, never the id itself, so a copy of the Redis data does not
hand out working sessions. Every key carries a TTL (idle timeout, capped by the remaining
absolute lifetime), so Redis purges abandoned sessions by itself.

    libproxy:j:<sha256(session id)>   hash: the session as JSON (field "s": groups, keyed-hash
                                      key, times at sign-in), the time last seen (field "t"),
                                      one field per vendor cookie ("c", vendor, name, domain,
                                      path) and per vendor opened ("v", vendor)
    libproxy:p:<patron key>           set of that patron's session hashes ("sign out everywhere")
    libproxy:t:<sha256(ticket)>       one-time sign-on tickets
    libproxy:live                     sorted set: session hash -> when it ends (counted, never
                                      scanned: ZCOUNT is logarithmic, SCAN over every key is not)

Each vendor cookie is its own field of the jar hash, written with HSET/HDEL: two responses
arriving at once for one patron (on one instance or two) each add their cookie, and neither
overwrites the other's, which a read-change-write of the whole session would. One hash per
session makes reading it, on every request, a single HGETALL: with redis-py a command costs
about 0.1 ms of CPU and a pipeline of two about twice that. Of the cookies read, only those of
the vendor a request is for are parsed (``_StoredJars``); recording activity (``touch``)
writes the "t" field and the expiries, never the record.

Connections come from a bounded pool that *waits* (up to ``pool_wait`` seconds) for a free
connection instead of failing at once: under a burst of requests patrons queue for a few
milliseconds instead of seeing "temporarily unavailable". A real failure (Redis down, a full pool
for longer than the wait, a timeout) raises ``StoreUnavailable`` naming the cause, and is logged
once per ten seconds, not once per request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from typing import Any

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.errors import StoreUnavailable
from proxy.membership import Membership
from proxy.ratelog import RateLimitedLog
from proxy.sessions.base import Lifetimes, Session, Ticket, new_session_id
from proxy.sessions.jar import Cookie, Jar

PREFIX = "libproxy:"
_SEP = "\t"  # vendor ids, cookie names and domains never contain a tab
# Activity is written back at most this often: a page load makes dozens of requests.
TOUCH_EVERY = 10.0
LIVE = PREFIX + "live"
_RECORD = "s"  # the jar hash's field holding the session itself (cookie fields start "c\t", "v\t")
_SEEN = "t"  # the jar hash's field holding when the session was last seen (written by touch)

log = logging.getLogger("libproxy.sessions")


def describe_failure(exc: BaseException, timeout: float, pool_size: int, pool_wait: float) -> str:
    """What went wrong, in words IT can act on (never an address: the log filter would blank it)."""
    if isinstance(exc, RedisConnectionError) and "No connection available" in str(exc):
        return f"all {pool_size} pooled connections busy for {pool_wait:g} s (raise [sessions] redis_pool?)"
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return f"no answer within {timeout:g} s (timeout)"
    if isinstance(exc, RedisConnectionError | ConnectionError | OSError):
        return "cannot connect (refused, reset or unreachable)"
    return f"Redis error {type(exc).__name__}"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class RedisSessionStore:
    def __init__(self, url: str, idle: float, lifetime: float, clock: Callable[[], float] = time.time,
                 timeout: float = 2.0, pool_size: int = 64, pool_wait: float = 2.0) -> None:
        # A pool that waits for a free connection (bounded in size and in time): redis-py's
        # default pool raises at once when its connections are all in use.
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=pool_size, timeout=pool_wait, socket_timeout=timeout,
            socket_connect_timeout=timeout, decode_responses=True,
            # One quick retry on a fresh connection: after Redis restarts, every pooled connection
            # is dead, and the first use of each finds out; more retries only delay the verdict.
            retry=Retry(NoBackoff(), 1), retry_on_error=[RedisConnectionError],
        )
        self._redis: aioredis.Redis = aioredis.Redis(connection_pool=self._pool)
        self.lifetimes = Lifetimes(idle, lifetime)
        self._clock = clock
        self._timeout = timeout
        self.pool_size = pool_size
        self._pool_wait = pool_wait
        self._log = RateLimitedLog(log, 10.0)
        self.failures = 0  # failed calls since start (for metrics)
        self.last_failure = ""  # the last cause, for the readiness check

    def _ttl(self, session: Session, now: float) -> int:
        return max(1, int(self.lifetimes.ends_at(session.created, now) - now))

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except (RedisError, OSError) as exc:
            cause = describe_failure(exc, self._timeout, self.pool_size, self._pool_wait)
            self.failures += 1
            self.last_failure = cause
            self._log.error("session store (Redis) unavailable: %s", cause)
            raise StoreUnavailable(cause) from None

    async def _write(self, session: Session, now: float) -> None:
        ttl = self._ttl(session, now)
        digest = _digest(session.id)
        async with self._redis.pipeline(transaction=True) as pipe:
            # SECURITY: the store holds a hash of the id, never the id.
            record = {"membership": session.membership.to_dict(), "created": session.created,
                      "last_seen": session.last_seen}
            pipe.hset(PREFIX + "j:" + digest, _RECORD, json.dumps(record))
            pipe.expire(PREFIX + "j:" + digest, ttl)
            pipe.zadd(LIVE, {digest: now + ttl})
            pipe.expire(LIVE, int(self.lifetimes.lifetime))
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
        fields = await self._call(self._redis.hgetall(PREFIX + "j:" + _digest(session_id)))
        raw = fields.get(_RECORD)
        if raw is None:
            return None  # unknown, ended, or only a jar written after a sign-out
        try:
            data = json.loads(raw)
            # The record's own "last_seen" is the sign-in time (or, from an older release, its
            # last full write); "t" is the latest activity.
            seen = fields.get(_SEEN)
            session = Session(
                id=session_id,  # stored hashed; the caller holds the real id
                membership=Membership.from_dict(data["membership"]),
                created=float(data["created"]),
                last_seen=max(float(data["last_seen"]), float(seen) if seen is not None else 0.0),
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

    async def mark_visited(self, session: Session, vendor_id: str) -> bool:
        session.visited.add(vendor_id)
        key = PREFIX + "j:" + _digest(session.id)
        async with self._redis.pipeline(transaction=True) as pipe:
            # HSETNX: of two first responses at once (two instances, or two copies of the
            # session read before either wrote), only one sets the field, and only it counts.
            pipe.hsetnx(key, "v" + _SEP + vendor_id, "1")
            pipe.expire(key, self._ttl(session, self._clock()))
            created, _ = await self._call(pipe.execute())
        return bool(created)

    async def touch(self, session: Session) -> None:
        now = self._clock()
        if now - session.last_seen < TOUCH_EVERY:
            return
        session.last_seen = now
        ttl = self._ttl(session, now)
        digest = _digest(session.id)
        key = PREFIX + "j:" + digest
        # Only what activity changes: the time last seen and the expiries. The record, the
        # patron index (it outlives every session in it) and the live index's own expiry stay.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, _SEEN, str(now))
            pipe.expire(key, ttl)
            # XX: a session ended meanwhile (signed out on another instance) is not counted again.
            pipe.zadd(LIVE, {digest: now + ttl}, xx=True)
            await self._call(pipe.execute())

    async def delete(self, session_id: str) -> None:
        digest = _digest(session_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(PREFIX + "j:" + digest)
            pipe.zrem(LIVE, digest)
            await self._call(pipe.execute())

    async def delete_patron(self, patron_key: str) -> int:
        index = PREFIX + "p:" + patron_key
        members = await self._call(self._redis.smembers(index))
        if not members:
            return 0
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(*(PREFIX + "j:" + m for m in members))
            pipe.delete(index)
            pipe.zrem(LIVE, *members)
            ended, _, _ = await self._call(pipe.execute())
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
        """Live sessions, from the expiry index: entries past their end are trimmed first, so
        the cost is logarithmic in the sessions plus the few that ended since the last count."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(LIVE, "-inf", self._clock())
            pipe.zcard(LIVE)
            _, total = await self._call(pipe.execute())
        return int(total)

    async def close(self) -> None:
        await self._redis.aclose()
        await self._pool.disconnect()


def _cookie_field(vendor_id: str, key: tuple[str, str, str]) -> str:
    return _SEP.join(("c", vendor_id, *key))


def _load_jars(session: Session, fields: dict[str, str]) -> None:
    """Fill ``session``'s visited vendors from the fields of its jar hash, and give it the
    vendors' cookies unparsed: each vendor's are parsed when its jar is first asked for."""
    raw: dict[str, list[str]] = {}
    for name, value in fields.items():
        if name.startswith("c" + _SEP):
            parts = name.split(_SEP, 2)
            if len(parts) == 3:
                raw.setdefault(parts[1], []).append(value)
        elif name.startswith("v" + _SEP):
            session.visited.add(name[2:])
    session.jars = _StoredJars(raw)


class _StoredJars(MutableMapping[str, Jar]):
    """A session's vendor jars as read from Redis. A request is for one vendor: parsing every
    other vendor's cookies on every request was most of the cost of reading a session."""

    __slots__ = ("_jars", "_raw")

    def __init__(self, raw: dict[str, list[str]]) -> None:
        self._raw = raw  # vendor id -> its cookies as stored (JSON), not parsed yet
        self._jars: dict[str, Jar] = {}

    def __getitem__(self, vendor_id: str) -> Jar:
        jar = self._jars.get(vendor_id)
        if jar is None:
            stored = self._raw.pop(vendor_id)  # KeyError: no cookies of that vendor
            # A damaged cookie is skipped, as it always was.
            jar = self._jars[vendor_id] = Jar(c for c in map(Cookie.from_json, stored) if c is not None)
        return jar

    def __setitem__(self, vendor_id: str, jar: Jar) -> None:
        self._raw.pop(vendor_id, None)
        self._jars[vendor_id] = jar

    def __delitem__(self, vendor_id: str) -> None:
        if self._raw.pop(vendor_id, None) is None:
            del self._jars[vendor_id]
        else:
            self._jars.pop(vendor_id, None)

    def __contains__(self, vendor_id: object) -> bool:
        return vendor_id in self._jars or vendor_id in self._raw

    def __iter__(self) -> Iterator[str]:
        return iter([*self._jars, *self._raw])

    def __len__(self) -> int:
        return len(self._jars) + len(self._raw)
