"""What several instances of the proxy share besides sessions: signing keys and security memory.

With sessions in Redis, the same Redis holds the assertion signing keys (one JWKS for every
instance, ``keys rotate`` reaching all of them) and shares the security memory's epoch keys and
increments (``records/shared_security.py``). With the memory store there is one instance and
nothing to share: the key file and the in-process memory serve as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from aiohttp import web

from proxy.assertion import KeyRing, KeySource, RedisKeyRing
from proxy.config import Config
from proxy.records.security import SecurityMemory

log = logging.getLogger("libproxy")


@dataclass
class Shared:
    keys: KeySource
    closers: list[object]
    refresh_every: float  # seconds between looks for rotated keys
    counters: object | None = None  # RedisSharedCounters when shared

    async def watch_keys(self) -> None:
        """Pick up ``libproxy keys rotate`` without a restart."""
        while True:
            await asyncio.sleep(self.refresh_every)
            if await self.keys.refresh():
                log.info("assertion keys reloaded: %d keys", len(self.keys.keys))

    @property
    def ready(self) -> bool:
        """Whether the shared security keys were fetched (always true with nothing to share)."""
        return bool(getattr(self.counters, "ready", True))

    async def close(self) -> None:
        for part in reversed(self.closers):
            with contextlib.suppress(Exception):
                close = getattr(part, "aclose", None) or part.close  # type: ignore[attr-defined]
                await close()


# Kept here rather than in context.py: only the lifecycle, reload and the staff checks use it.
SHARED = web.AppKey("libproxy.shared", Shared)


async def open_shared(config: Config, file_keys: KeyRing, memory: SecurityMemory) -> Shared:
    """Open what this configuration shares; raises ConfigError when the key set is unusable."""
    if config.sessions.store != "redis" or config.sessions.redis_url is None:
        return Shared(keys=file_keys, closers=[], refresh_every=10.0)
    from redis import asyncio as aioredis

    from proxy.records.shared_security import RedisSharedCounters

    redis = aioredis.Redis.from_url(config.sessions.redis_url, decode_responses=True,
                                    socket_timeout=config.sessions.redis_timeout,
                                    socket_connect_timeout=config.sessions.redis_timeout, max_connections=8)
    shared = Shared(keys=file_keys, closers=[redis], refresh_every=2.0)
    if config.assertion.key_store == "redis":
        from redis.exceptions import RedisError

        from proxy.errors import ConfigError
        from proxy.sessions.redis import describe_failure

        ring = RedisKeyRing(redis, config.assertion.algorithm, seed_file=config.assertion.key_file)
        try:
            await ring.open()
        except (RedisError, OSError) as exc:
            await redis.aclose()
            # Fails closed: signing with a key of its own would give this instance another JWKS.
            cause = describe_failure(exc, config.sessions.redis_timeout, 8, config.sessions.redis_timeout)
            raise ConfigError([f"[assertion] key_store = \"redis\": the signing keys cannot be read from Redis "
                               f"at start ({cause}); start Redis first"]) from None
        shared.keys = ring
    counters = RedisSharedCounters(redis, memory)
    await counters.start()
    shared.counters = counters
    shared.closers.append(counters)
    return shared
