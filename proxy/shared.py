"""What several instances of the proxy share besides sessions: signing keys and security memory.

With sessions in Redis, the same Redis holds the assertion signing keys (one JWKS for every
instance, ``keys rotate`` reaching all of them) and shares the security memory's epoch keys and
increments (``records/shared_security.py``). With the memory store there is one instance and
nothing to share: the key file and the in-process memory serve as before.

The security memory's epoch keys are derived from the keyed-hash secret (``load_secret``) and a
salt kept in Redis, so every instance must be given the same secret (``[proxy] secret``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
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


def load_secret(config: Config) -> bytes:
    """The keyed-hash secret: from the configuration, or a random one kept in state_dir (made
    here on first use, readable by the proxy's user only)."""
    if config.proxy.secret:
        return config.proxy.secret.encode("utf-8")
    path = config.proxy.state_dir / "secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return path.read_text(encoding="utf-8").strip().encode("utf-8")


async def open_shared(config: Config, file_keys: KeyRing, memory: SecurityMemory,
                      secret: bytes | None = None) -> Shared:
    """Open what this configuration shares; raises ConfigError when the key set is unusable.

    ``secret`` is the keyed-hash secret (``load_secret``), read here when not given: the shared
    security memory derives its epoch keys from it.
    """
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
    if secret is None:
        secret = await asyncio.to_thread(load_secret, config)
    counters = RedisSharedCounters(redis, memory, secret)
    await counters.start()
    shared.counters = counters
    shared.closers.append(counters)
    return shared
